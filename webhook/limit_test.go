package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// gatedHandler admits everything once its gate opens, and counts the
// requests that reached it.
type gatedHandler struct {
	entered chan types.UID
	gate    chan struct{}
}

func (g *gatedHandler) Handle(_ context.Context, req admission.Request) admission.Response {
	g.entered <- req.UID
	<-g.gate
	return admission.Allowed("handled")
}

// reviewOfSize is a Pod CREATE AdmissionReview of about size bytes, the bulk
// in one environment variable after the request's uid, as the API server
// orders its fields.
func reviewOfSize(uid string, size int) string {
	return fmt.Sprintf(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":%q,`+
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},`+
		`"namespace":"team-a","operation":"CREATE","userInfo":{"username":"alice"},`+
		`"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"big"},"spec":{"containers":[{"name":"app","image":"nginx","env":[{"name":"BIG","value":%q}]}]}}}}`,
		uid, strings.Repeat("x", size))
}

func TestLargeRequestsShareABudgetAndTheRestAreAdmittedUnchanged(t *testing.T) {
	g := &gatedHandler{entered: make(chan types.UID, 8), gate: make(chan struct{})}
	// Room for one request of 2 MiB.
	h := newReviewHandler(g, "Pod", &limits{large: newLargeRequests(3 << 20)})
	shed := largeRequestsShedTotal.WithLabelValues("Pod")
	before := testutil.ToFloat64(shed)

	answers := make(chan *httptest.ResponseRecorder, 1)
	go func() { answers <- serve(h, newRequest(http.MethodPost, reviewOfSize("first", 2<<20))) }()
	require.Equal(t, types.UID("first"), <-g.entered, "the first large request is handled")

	// A second large one finds no room within half its timeout: it is
	// answered at once, allowed, unchanged, with its own UID and a warning,
	// and never reaches the handler.
	req := newRequest(http.MethodPost, reviewOfSize("second", 2<<20))
	req.URL.RawQuery = "timeout=200ms"
	start := time.Now()
	rec := serve(h, req)
	waited := time.Since(start)
	assert.GreaterOrEqual(t, waited, 100*time.Millisecond, "it waited for room")
	assert.Less(t, waited, 2*time.Second, "half the API server's timeout, not the default wait")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	resp := decodeResponse(t, rec)
	assert.Equal(t, types.UID("second"), resp.UID)
	assert.True(t, resp.Allowed)
	assert.Empty(t, resp.Patch)
	require.Len(t, resp.Warnings, 1)
	assert.Contains(t, resp.Warnings[0], "ha-injector: a large request (2.0 MiB) found 3.0 MiB of large requests")
	assert.Contains(t, resp.Warnings[0], "admitted unchanged")
	assert.Equal(t, before+1, testutil.ToFloat64(shed))

	// A small request needs no room.
	small := make(chan *httptest.ResponseRecorder, 1)
	go func() { small <- serve(h, newRequest(http.MethodPost, reviewOfSize("small", 1000))) }()
	require.Equal(t, types.UID("small"), <-g.entered)

	close(g.gate)
	for _, c := range []chan *httptest.ResponseRecorder{answers, small} {
		rec := <-c
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		assert.Equal(t, "handled", decodeResponse(t, rec).Result.Message)
	}

	// With the first one answered, its room is free again.
	rec = serve(h, newRequest(http.MethodPost, reviewOfSize("third", 2<<20)))
	require.Equal(t, types.UID("third"), <-g.entered)
	assert.Equal(t, "handled", decodeResponse(t, rec).Result.Message)
	assert.Equal(t, before+1, testutil.ToFloat64(shed))
}

func TestLargeRequestWaitsForRoom(t *testing.T) {
	g := &gatedHandler{entered: make(chan types.UID, 8), gate: make(chan struct{})}
	h := newReviewHandler(g, "Pod", &limits{large: newLargeRequests(3 << 20)})
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- serve(h, newRequest(http.MethodPost, reviewOfSize("first", 2<<20))) }()
	require.Equal(t, types.UID("first"), <-g.entered)

	// The second waits (default: up to 2s) and is handled once the first is done.
	second := make(chan *httptest.ResponseRecorder, 1)
	go func() { second <- serve(h, newRequest(http.MethodPost, reviewOfSize("second", 2<<20))) }()
	select {
	case uid := <-g.entered:
		t.Fatalf("%s reached the handler while the budget was full", uid)
	case <-time.After(300 * time.Millisecond):
	}
	close(g.gate)
	assert.Equal(t, types.UID("second"), <-g.entered)
	for _, c := range []chan *httptest.ResponseRecorder{first, second} {
		assert.Equal(t, "handled", decodeResponse(t, <-c).Result.Message)
	}
}

func TestShedRequestsAreStillChecked(t *testing.T) {
	g := &gatedHandler{entered: make(chan types.UID, 1), gate: make(chan struct{})}
	h := newReviewHandler(g, "Pod", &limits{large: newLargeRequests(3 << 20)})
	done := make(chan struct{})
	go func() { serve(h, newRequest(http.MethodPost, reviewOfSize("first", 2<<20))); close(done) }()
	<-g.entered
	defer func() { close(g.gate); <-done }()

	for name, tc := range map[string]struct {
		body    string
		code    int
		message string
	}{
		"no uid":   {`{"request":{"object":{"big":"` + strings.Repeat("x", 2<<20) + `"}}}`, http.StatusBadRequest, "no request.uid"},
		"not JSON": {strings.Repeat("x", 2<<20), http.StatusBadRequest, "decoding the AdmissionReview"},
	} {
		t.Run(name, func(t *testing.T) {
			req := newRequest(http.MethodPost, tc.body)
			req.URL.RawQuery = "timeout=20ms"
			rec := serve(h, req)
			assert.Equal(t, tc.code, rec.Code)
			resp := decodeResponse(t, rec)
			assert.False(t, resp.Allowed)
			assert.Contains(t, resp.Result.Message, tc.message)
		})
	}
}

func TestReviewUID(t *testing.T) {
	for name, tc := range map[string]struct {
		body, uid, err string
	}{
		"first in request":    {`{"apiVersion":"admission.k8s.io/v1","request":{"uid":"a1","object":{}}}`, "a1", ""},
		"after other fields":  {`{"kind":"AdmissionReview","request":{"object":{"a":[1,{"b":null}],"c":"d"},"oldObject":null,"uid":"b2"}}`, "b2", ""},
		"request after other": {`{"response":{"uid":"x"},"request":{"uid":"c3"}}`, "c3", ""},
		"no request":          {`{"apiVersion":"admission.k8s.io/v1"}`, "", "has no request"},
		"empty uid":           {`{"request":{"uid":""}}`, "", "no request.uid"},
		"uid not a string":    {`{"request":{"uid":7}}`, "", "request.uid"},
		"request not object":  {`{"request":[]}`, "", "request:"},
		"truncated":           {`{"request":{"object":{"a":`, "", "EOF"},
		"array":               {`[]`, "", "want"},
	} {
		t.Run(name, func(t *testing.T) {
			uid, err := reviewUID(strings.NewReader(tc.body))
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, types.UID(tc.uid), uid)
		})
	}
}

// TestMaxRequestBytesHoldsTheLargestUpdate: a Deployment UPDATE whose object
// and old object are each as large as the API server accepts fits.
func TestMaxRequestBytesHoldsTheLargestUpdate(t *testing.T) {
	obj := json.RawMessage(fmt.Sprintf(`{"metadata":{"annotations":{"a":%q}}}`, strings.Repeat("x", maxObjectBytes-37)))
	require.Equal(t, maxObjectBytes, len(obj))
	body, err := json.Marshal(map[string]any{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": map[string]any{
		"uid": "u", "operation": "UPDATE", "object": obj, "oldObject": obj,
		"userInfo": map[string]any{"username": "system:serviceaccount:argocd:argocd-application-controller", "groups": []string{"system:serviceaccounts", "system:serviceaccounts:argocd", "system:authenticated"}},
	}})
	require.NoError(t, err)
	assert.LessOrEqual(t, len(body), MaxRequestBytes)
	assert.Greater(t, len(body)+64<<10, MaxRequestBytes, "and not much more")
}

// TestAdmissionsBeyondTheBoundWaitThenAreAdmittedUnchanged: with every slot
// taken, a request of any size waits up to half its timeout, then is allowed
// unchanged with a warning and counted; a slot freed in time lets it in.
func TestAdmissionsBeyondTheBoundWaitThenAreAdmittedUnchanged(t *testing.T) {
	g := &gatedHandler{entered: make(chan types.UID, 8), gate: make(chan struct{})}
	h := newReviewHandler(g, "Pod", &limits{slots: newSlots(2), large: newLargeRequests(16 << 20)})
	shed := concurrentRequestsShedTotal.WithLabelValues("Pod")
	before := testutil.ToFloat64(shed)

	held := make(chan *httptest.ResponseRecorder, 2)
	for _, uid := range []string{"first", "second"} {
		go func() { held <- serve(h, newRequest(http.MethodPost, reviewOfSize(uid, 1000))) }()
		<-g.entered
	}

	req := newRequest(http.MethodPost, reviewOfSize("third", 1000))
	req.URL.RawQuery = "timeout=200ms"
	start := time.Now()
	rec := serve(h, req)
	waited := time.Since(start)
	assert.GreaterOrEqual(t, waited, 100*time.Millisecond, "it waited for a slot")
	assert.Less(t, waited, 2*time.Second, "half the API server's timeout, not the default wait")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	resp := decodeResponse(t, rec)
	assert.Equal(t, types.UID("third"), resp.UID)
	assert.True(t, resp.Allowed)
	assert.Empty(t, resp.Patch)
	assert.Equal(t, []string{"ha-injector: too many admissions in progress (--max-concurrent-admissions); admitted unchanged, without the injection"}, resp.Warnings)
	assert.Equal(t, before+1, testutil.ToFloat64(shed))

	// One that waits while a slot comes free is handled.
	fourth := make(chan *httptest.ResponseRecorder, 1)
	go func() { fourth <- serve(h, newRequest(http.MethodPost, reviewOfSize("fourth", 1000))) }()
	select {
	case uid := <-g.entered:
		t.Fatalf("%s reached the handler while every slot was taken", uid)
	case <-time.After(100 * time.Millisecond):
	}
	close(g.gate)
	assert.Equal(t, types.UID("fourth"), <-g.entered)
	for range 2 {
		assert.Equal(t, "handled", decodeResponse(t, <-held).Result.Message)
	}
	assert.Equal(t, "handled", decodeResponse(t, <-fourth).Result.Message)
	assert.Equal(t, before+1, testutil.ToFloat64(shed))
}

// TestALargeRequestHoldsItsSlotOnlyWhileHandled: a large request that found a
// slot but no room in the budget gives the slot back.
func TestALargeRequestHoldsItsSlotOnlyWhileHandled(t *testing.T) {
	g := &gatedHandler{entered: make(chan types.UID, 8), gate: make(chan struct{})}
	h := newReviewHandler(g, "Pod", &limits{slots: newSlots(2), large: newLargeRequests(3 << 20)})
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- serve(h, newRequest(http.MethodPost, reviewOfSize("first", 2<<20))) }()
	<-g.entered

	req := newRequest(http.MethodPost, reviewOfSize("large", 2<<20))
	req.URL.RawQuery = "timeout=100ms"
	assert.Contains(t, decodeResponse(t, serve(h, req)).Warnings[0], "a large request")

	// Its slot is free again: a small request gets in at once.
	small := make(chan *httptest.ResponseRecorder, 1)
	go func() { small <- serve(h, newRequest(http.MethodPost, reviewOfSize("small", 1000))) }()
	select {
	case uid := <-g.entered:
		assert.Equal(t, types.UID("small"), uid)
	case <-time.After(time.Second):
		t.Fatal("the shed large request kept its slot")
	}
	close(g.gate)
	assert.Equal(t, "handled", decodeResponse(t, <-first).Result.Message)
	assert.Equal(t, "handled", decodeResponse(t, <-small).Result.Message)
}
