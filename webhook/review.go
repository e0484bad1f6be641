package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// maxObjectBytes is the largest object the API server accepts in a request
// body (the --max-request-body-bytes default of k8s.io/apiserver, 3 MiB).
const maxObjectBytes = 3 << 20

// MaxRequestBytes bounds an AdmissionReview body to what the API server can
// send: a Deployment UPDATE carries the object and the old object, each up to
// maxObjectBytes, and an envelope of a few KiB (the user's name, groups and
// extra). A larger body is answered 413 without being read.
const MaxRequestBytes = 2*maxObjectBytes + 64<<10

// reviewHandler serves AdmissionReviews for one admission.Handler.
//
// controller-runtime's admission.Webhook answers a malformed request with
// HTTP 200 and an error inside the review; the API server then reports a
// confusing webhook failure. reviewHandler instead answers with a real HTTP
// status (400, 413, 405) and an AdmissionReview whose status explains what
// is wrong, and passes well-formed requests to admission.Webhook.Handle,
// which completes the response (UID, patch type) and recovers panics.
//
// Requests take one of a bounded number of slots, and bodies over
// LargeRequestBytes share the large-request budget: one that finds no room in
// time is admitted unchanged with a warning (shed).
type reviewHandler struct {
	webhook *admission.Webhook
	kind    string
	limits  *limits
}

var _ http.Handler = &reviewHandler{}

// newReviewHandler serves h for kind (the label of its metrics), within
// limits, shared with the other handler (nil: none).
func newReviewHandler(h admission.Handler, kind string, limits *limits) *reviewHandler {
	return &reviewHandler{webhook: &admission.Webhook{Handler: h}, kind: kind, limits: limits}
}

func (rh *reviewHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.ContentLength <= MaxRequestBytes {
		release, why, ok := rh.limits.acquire(r.Context(), r.ContentLength, admissionWait(r))
		if !ok {
			rh.shed(w, r, why)
			return
		}
		defer release()
	}
	review, status, err := readReview(w, r)
	if err != nil {
		rh.fail(w, status, err)
		return
	}
	resp := rh.webhook.Handle(r.Context(), admission.Request{AdmissionRequest: *review.Request})
	writeReview(w, http.StatusOK, admissionv1.AdmissionReview{Response: &resp.AdmissionResponse})
}

// fail answers a request that is not a well-formed AdmissionReview.
func (rh *reviewHandler) fail(w http.ResponseWriter, status int, err error) {
	if status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	writeReview(w, status, admissionv1.AdmissionReview{
		Response: &admissionv1.AdmissionResponse{
			Allowed: false,
			Result:  admission.Errored(int32(status), err).Result,
		},
	})
}

// readReview reads and checks the request; on error it returns the HTTP status to answer with.
func readReview(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, int, error) {
	if r.Method != http.MethodPost {
		return nil, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed: the API server POSTs AdmissionReviews", r.Method)
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: want application/json", r.Header.Get("Content-Type"))
	}
	if r.ContentLength > MaxRequestBytes {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body of %d bytes, larger than %d", r.ContentLength, MaxRequestBytes)
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, MaxRequestBytes), r.ContentLength)
	if err != nil {
		if _, tooLarge := err.(*http.MaxBytesError); tooLarge {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body larger than %d bytes", MaxRequestBytes)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("reading the request body: %w", err)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("the body is not an AdmissionReview: %w", err)
	}
	if gvk := review.GroupVersionKind(); gvk != admissionv1.SchemeGroupVersion.WithKind("AdmissionReview") {
		return nil, http.StatusBadRequest, fmt.Errorf("want apiVersion admission.k8s.io/v1 kind AdmissionReview, got apiVersion %q kind %q", review.APIVersion, review.Kind)
	}
	if review.Request == nil {
		return nil, http.StatusBadRequest, fmt.Errorf("the AdmissionReview has no request")
	}
	if review.Request.UID == "" {
		return nil, http.StatusBadRequest, fmt.Errorf("the AdmissionReview request has no uid")
	}
	return &review, 0, nil
}

// readBody reads the whole body into one buffer of the announced length (the
// API server sends Content-Length; readReview has refused one over
// MaxRequestBytes), instead of growing one: for a large object, io.ReadAll's
// intermediate buffers cost more than the body itself.
func readBody(r io.Reader, length int64) ([]byte, error) {
	if length <= 0 {
		return io.ReadAll(r)
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	// A body longer than announced is an error, as net/http reports it.
	if n, err := r.Read(make([]byte, 1)); n > 0 || (err != nil && err != io.EOF) {
		if err == nil {
			err = errors.New("body longer than its Content-Length")
		}
		return nil, err
	}
	return body, nil
}

func writeReview(w http.ResponseWriter, status int, review admissionv1.AdmissionReview) {
	review.SetGroupVersionKind(admissionv1.SchemeGroupVersion.WithKind("AdmissionReview"))
	// An AdmissionReview always encodes.
	body, _ := json.Marshal(review)
	w.Header().Set("Content-Type", "application/json")
	// With its length, an answer with a patch (over net/http's 2 KiB
	// buffer) goes out whole instead of chunked.
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	// A write error means the client is gone.
	_, _ = w.Write(body)
}
