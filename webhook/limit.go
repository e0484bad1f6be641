package webhook

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/sync/semaphore"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/types"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

const (
	// LargeRequestBytes: a request body over this size is handled only while
	// the large-request budget has room for it.
	LargeRequestBytes = 1 << 20
	// DefaultLargeRequestBudget is serve's --large-request-budget (and the
	// chart's webhook.largeRequestBudget): two of the largest AdmissionReviews
	// (MaxRequestBytes) at once, with room to spare. Handling one costs about
	// three times its body in heap, so the budget, the informers' cache and
	// the Go runtime fit the chart's 128Mi memory limit.
	DefaultLargeRequestBudget = 16 << 20
	// defaultLargeRequestWait is how long a large request waits for room
	// when the API server's request names no timeout.
	defaultLargeRequestWait = 2 * time.Second
)

// largeRequests bounds the bytes of large request bodies being handled at
// once. A burst of 3 MiB objects (any tenant can send them, and a Deployment
// UPDATE carries two) would otherwise grow the heap past the container's
// memory limit and take every replica down at the same moment.
type largeRequests struct {
	sem    *semaphore.Weighted
	budget int64
}

// newLargeRequests returns nil, no limit, for a budget of 0.
func newLargeRequests(budget int64) *largeRequests {
	if budget <= 0 {
		return nil
	}
	return &largeRequests{sem: semaphore.NewWeighted(budget), budget: budget}
}

// acquire waits up to wait for room for a body of length bytes (unknown, -1:
// the most a request may send) and returns the release, or false when there
// was no room in time. Small bodies need no room.
func (l *largeRequests) acquire(ctx context.Context, length int64, wait time.Duration) (release func(), ok bool) {
	if l == nil || (length >= 0 && length <= LargeRequestBytes) {
		return func() {}, true
	}
	n := int64(MaxRequestBytes)
	if length >= 0 && length < n {
		n = length
	}
	n = min(n, l.budget) // the largest request fits alone
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := l.sem.Acquire(ctx, n); err != nil {
		return nil, false
	}
	return func() { l.sem.Release(n) }, true
}

// largeRequestWait is half the time the API server gives the webhook (the
// timeout parameter it adds to the URL), so that a request which waited is
// still answered in time.
func largeRequestWait(r *http.Request) time.Duration {
	if d, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && d > 0 {
		return d / 2
	}
	return defaultLargeRequestWait
}

// shed answers a large request that found no room: allowed, unchanged, with a
// warning, without decoding the objects. Only the request's UID is read,
// token by token, and the rest of the body is drained so that the connection
// can be reused.
func (rh *reviewHandler) shed(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, MaxRequestBytes)
	uid, err := reviewUID(body)
	if _, drainErr := io.Copy(io.Discard, body); drainErr != nil {
		if _, tooLarge := drainErr.(*http.MaxBytesError); tooLarge {
			rh.fail(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body larger than %d bytes", MaxRequestBytes))
			return
		}
		err = cmp.Or(err, drainErr)
	}
	if err != nil {
		rh.fail(w, http.StatusBadRequest, fmt.Errorf("decoding the AdmissionReview: %w", err))
		return
	}
	largeRequestsShedTotal.WithLabelValues(rh.kind).Inc()
	size := "of unknown size"
	if r.ContentLength >= 0 {
		size = mebibytes(r.ContentLength)
	}
	logf.Log.WithName("large-requests").Info("admitted unchanged, without the injection: the large-request budget had no room in time",
		"kind", rh.kind, "uid", uid, "size", size, "budget", mebibytes(rh.large.budget))
	writeReview(w, http.StatusOK, admissionv1.AdmissionReview{Response: &admissionv1.AdmissionResponse{
		UID:     uid,
		Allowed: true,
		Warnings: []string{fmt.Sprintf("ha-injector: a large request (%s) found %s of large requests already in progress; admitted unchanged, without the injection",
			size, mebibytes(rh.large.budget))},
	}})
}

func mebibytes(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// reviewUID reads request.uid from an AdmissionReview without decoding the
// rest: the API server writes it first in request, and the objects after it.
func reviewUID(r io.Reader) (types.UID, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return "", err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return "", err
		}
		if key != "request" {
			if err := skipValue(dec); err != nil {
				return "", err
			}
			continue
		}
		if err := expectDelim(dec, '{'); err != nil {
			return "", fmt.Errorf("request: %w", err)
		}
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return "", err
			}
			if key == "uid" {
				var uid types.UID
				if err := dec.Decode(&uid); err != nil {
					return "", fmt.Errorf("request.uid: %w", err)
				}
				if uid == "" {
					break
				}
				return uid, nil
			}
			if err := skipValue(dec); err != nil {
				return "", err
			}
		}
		return "", errors.New("the AdmissionReview has no request.uid")
	}
	return "", errors.New("the AdmissionReview has no request")
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("want %q, found %v", want, t)
	}
	return nil
}

// skipValue reads one value token by token: a large object is never held
// whole, only its largest string at a time.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}
