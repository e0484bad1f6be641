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
	// defaultAdmissionWait is how long a request waits for room when the
	// API server's request names no timeout.
	defaultAdmissionWait = 2 * time.Second
)

// DefaultMaxConcurrentAdmissions is serve's --max-concurrent-admissions (and
// the chart's webhook.maxConcurrentAdmissions). A request under
// LargeRequestBytes, outside the large-request budget, costs up to about three
// times its body in heap while it is handled, so 1 MiB each at most: 12 of
// them, about 36 MiB, fit beside the informers' cache, the large-request
// budget and the Go runtime in the chart's 128Mi memory limit. A typical pod
// (a few KiB) is handled in well under a millisecond, so 12 at once is far
// more than two CPUs can serve: the bound costs no throughput.
const DefaultMaxConcurrentAdmissions = 12

// limits are the bounds that both handlers' requests share.
type limits struct {
	large *largeRequests
	slots *slots
}

// slots bounds how many admissions are handled at once, whatever their size.
type slots struct{ sem *semaphore.Weighted }

// newSlots returns nil, no bound, for n <= 0.
func newSlots(n int) *slots {
	if n <= 0 {
		return nil
	}
	return &slots{sem: semaphore.NewWeighted(int64(n))}
}

// acquire waits up to wait for a slot and returns its release, or false when
// none came free in time.
func (s *slots) acquire(ctx context.Context, wait time.Duration) (release func(), ok bool) {
	if s == nil {
		return func() {}, true
	}
	if s.sem.TryAcquire(1) {
		return func() { s.sem.Release(1) }, true
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := s.sem.Acquire(ctx, 1); err != nil {
		return nil, false
	}
	return func() { s.sem.Release(1) }, true
}

// acquire takes a slot and, for a large body, room in the budget, waiting
// for both together at most wait; ok is false with the reason when there
// was not room in time.
func (l *limits) acquire(ctx context.Context, length int64, wait time.Duration) (release func(), shed shedReason, ok bool) {
	if l == nil {
		return func() {}, "", true
	}
	deadline := time.Now().Add(wait)
	releaseSlot, ok := l.slots.acquire(ctx, wait)
	if !ok {
		return nil, shedBusy, false
	}
	releaseLarge, ok := l.large.acquire(ctx, length, time.Until(deadline))
	if !ok {
		releaseSlot()
		return nil, shedLarge, false
	}
	return func() { releaseLarge(); releaseSlot() }, "", true
}

// shedReason says which bound a request found no room in.
type shedReason string

const (
	shedBusy  shedReason = "busy"
	shedLarge shedReason = "large"
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

// admissionWait is half the time the API server gives the webhook (the
// timeout parameter it adds to the URL), so that a request which waited is
// still answered in time.
func admissionWait(r *http.Request) time.Duration {
	if d, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && d > 0 {
		return d / 2
	}
	return defaultAdmissionWait
}

// shed answers a request that found no room (a slot, or room in the
// large-request budget): allowed, unchanged, with a warning, without decoding
// the objects. Only the request's UID is read, token by token, and the rest
// of the body is drained so that the connection can be reused.
func (rh *reviewHandler) shed(w http.ResponseWriter, r *http.Request, why shedReason) {
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
	var warning string
	switch why {
	case shedLarge:
		largeRequestsShedTotal.WithLabelValues(rh.kind).Inc()
		size := "of unknown size"
		if r.ContentLength >= 0 {
			size = mebibytes(r.ContentLength)
		}
		logf.Log.WithName("large-requests").Info("admitted unchanged, without the injection: the large-request budget had no room in time",
			"kind", rh.kind, "uid", uid, "size", size, "budget", mebibytes(rh.limits.large.budget))
		warning = fmt.Sprintf("ha-injector: a large request (%s) found %s of large requests already in progress; admitted unchanged, without the injection",
			size, mebibytes(rh.limits.large.budget))
	default:
		concurrentRequestsShedTotal.WithLabelValues(rh.kind).Inc()
		logf.Log.WithName("concurrency").Info("admitted unchanged, without the injection: every admission slot stayed taken (--max-concurrent-admissions)",
			"kind", rh.kind, "uid", uid)
		warning = "ha-injector: too many admissions in progress (--max-concurrent-admissions); admitted unchanged, without the injection"
	}
	writeReview(w, http.StatusOK, admissionv1.AdmissionReview{Response: &admissionv1.AdmissionResponse{
		UID:      uid,
		Allowed:  true,
		Warnings: []string{warning},
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
