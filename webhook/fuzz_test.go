package webhook

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/ha-injector/ha-injector/policies"
)

// FuzzReviewHandler feeds arbitrary bodies to the Pod and Deployment
// handlers. Whatever comes in, the answer must be a well-formed
// AdmissionReview with an expected HTTP status; a 200 must allow the object
// and carry a patch that applies to the request's object. The seeds are every
// AdmissionReview under testdata plus testdata/fuzz/FuzzReviewHandler.
func FuzzReviewHandler(f *testing.F) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body, false)
		f.Add(body, true)
	}
	handlers := newTestHandlers(f)

	f.Fuzz(func(t *testing.T, body []byte, deployment bool) {
		h := handlers[policies.KindPod]
		if deployment {
			h = handlers[policies.KindDeployment]
		}
		rec := post(h, body)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		default:
			t.Fatalf("unexpected HTTP status %d", rec.Code)
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
			t.Fatalf("the response is not JSON: %v\n%s", err, rec.Body.String())
		}
		if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" || review.Response == nil {
			t.Fatalf("the response is not an AdmissionReview: %s", rec.Body.String())
		}
		if rec.Code != http.StatusOK {
			if review.Response.Allowed || review.Response.Result == nil || review.Response.Result.Message == "" {
				t.Fatalf("an error response must refuse and explain: %s", rec.Body.String())
			}
			return
		}
		if !review.Response.Allowed {
			t.Fatalf("ha-injector denied a request: %s", rec.Body.String())
		}
		var request admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &request); err != nil {
			t.Fatalf("a 200 for a body that is not an AdmissionReview: %v", err)
		}
		if review.Response.UID != request.Request.UID {
			t.Fatalf("response uid %q for request uid %q", review.Response.UID, request.Request.UID)
		}
		if len(review.Response.Patch) == 0 {
			return
		}
		patch, err := jsonpatch.DecodePatch(review.Response.Patch)
		if err != nil {
			t.Fatalf("the patch does not decode: %v", err)
		}
		if _, err := patch.Apply(request.Request.Object.Raw); err != nil {
			t.Fatalf("the patch does not apply to the request's object: %v", err)
		}
	})
}
