package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fakeReviewer plays the API server: tokens maps a token to its user, allowed
// lists who may get /metrics.
type fakeReviewer struct {
	tokens  map[string]authenticationv1.UserInfo
	allowed map[string]bool
	err     error
	hang    bool // until the request's context ends
	calls   int
	sars    []authorizationv1.SubjectAccessReviewSpec
}

func (f *fakeReviewer) Create(ctx context.Context, obj client.Object, _ ...client.CreateOption) error {
	f.calls++
	if f.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	switch o := obj.(type) {
	case *authenticationv1.TokenReview:
		u, ok := f.tokens[o.Spec.Token]
		o.Status = authenticationv1.TokenReviewStatus{Authenticated: ok, User: u}
	case *authorizationv1.SubjectAccessReview:
		f.sars = append(f.sars, o.Spec)
		a := o.Spec.NonResourceAttributes
		o.Status.Allowed = a != nil && a.Verb == "get" && a.Path == "/metrics" && f.allowed[o.Spec.User]
	}
	return nil
}

func TestMetricsAuth(t *testing.T) {
	prometheus := authenticationv1.UserInfo{
		Username: "system:serviceaccount:monitoring:prometheus", UID: "u1",
		Groups: []string{"system:serviceaccounts"},
		Extra:  map[string]authenticationv1.ExtraValue{"authentication.kubernetes.io/credential-id": {"JTI=1"}},
	}
	f := &fakeReviewer{
		tokens:  map[string]authenticationv1.UserInfo{"good": prometheus, "other": {Username: "someone"}},
		allowed: map[string]bool{prometheus.Username: true},
	}
	now := time.Unix(1000, 0)
	a := &metricsAuth{reviewer: f, now: func() time.Time { return now }, timeout: time.Minute, kept: map[[32]byte]metricsAnswer{}}
	ask := func(method, path, header string) int {
		r := httptest.NewRequest(method, path, nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		code, _ := a.check(r)
		return code
	}

	for _, h := range []string{"", "Bearer", "Bearer ", "Basic Z29vZA==", "good", "Bearer  good"} {
		assert.Equal(t, http.StatusUnauthorized, ask("GET", "/metrics", h), "header %q", h)
	}
	assert.Zero(t, f.calls, "no token, no call to the API server")

	assert.Equal(t, http.StatusUnauthorized, ask("GET", "/metrics", "Bearer bad"))
	assert.Equal(t, http.StatusForbidden, ask("GET", "/metrics", "Bearer other"))
	assert.Equal(t, http.StatusOK, ask("GET", "/metrics", " bearer good "), "the scheme in any case")
	assert.Equal(t, http.StatusOK, ask("GET", "/metrics", "Bearer good more"), "the token ends at a space, as the API server reads it")
	require.NotEmpty(t, f.sars)
	last := f.sars[len(f.sars)-1]
	assert.Equal(t, prometheus.Username, last.User)
	assert.Equal(t, prometheus.UID, last.UID)
	assert.Equal(t, prometheus.Groups, last.Groups)
	assert.Equal(t, authorizationv1.ExtraValue{"JTI=1"}, last.Extra["authentication.kubernetes.io/credential-id"], "the user's extra goes to the SubjectAccessReview")
	assert.Equal(t, http.StatusForbidden, ask("POST", "/metrics", "Bearer good"), "the verb is the method's")
	assert.Equal(t, http.StatusForbidden, ask("GET", "/debug", "Bearer good"), "the path is the request's")

	// Answers are kept: an allowed one for a minute, a refusal for 10 s.
	calls := f.calls
	assert.Equal(t, http.StatusOK, ask("GET", "/metrics", "Bearer good"))
	assert.Equal(t, http.StatusForbidden, ask("GET", "/metrics", "Bearer other"))
	assert.Equal(t, calls, f.calls, "kept answers need no call")
	f.allowed["someone"] = true
	now = now.Add(metricsDeniedTTL)
	assert.Equal(t, http.StatusOK, ask("GET", "/metrics", "Bearer other"), "a refusal is asked again after 10 s")
	delete(f.allowed, prometheus.Username)
	now = now.Add(metricsAllowedTTL - metricsDeniedTTL - time.Second)
	assert.Equal(t, http.StatusOK, ask("GET", "/metrics", "Bearer good"), "still kept")
	now = now.Add(time.Second)
	assert.Equal(t, http.StatusForbidden, ask("GET", "/metrics", "Bearer good"), "asked again after a minute")

	// The API server cannot answer: 500, and nothing kept.
	f.err = errors.New("connection refused")
	assert.Equal(t, http.StatusInternalServerError, ask("GET", "/metrics", "Bearer new"))
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/metrics", nil)
	r.Header.Set("Authorization", "Bearer new")
	a.wrap(logr.Discard(), http.NotFoundHandler()).ServeHTTP(rec, r)
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.NotContains(t, rec.Body.String(), "connection refused", "the API server's error stays in the log")
	f.err = nil
	f.tokens["new"] = prometheus
	f.allowed[prometheus.Username] = true
	assert.Equal(t, http.StatusOK, ask("GET", "/metrics", "Bearer new"))

	// The kept answers are bounded, and tokens tried by the thousand do not push
	// out the scrapers' allowed answers.
	for i := range 3 * metricsCacheSize {
		ask("GET", "/metrics", fmt.Sprintf("Bearer unknown-%d", i))
		require.LessOrEqual(t, len(a.kept), metricsCacheSize)
	}
	calls = f.calls
	assert.Equal(t, http.StatusOK, ask("GET", "/metrics", "Bearer new"))
	assert.Equal(t, calls, f.calls, "the scraper's answer is still kept")
}

func TestMetricsAuthFilterAnswers(t *testing.T) {
	f := &fakeReviewer{tokens: map[string]authenticationv1.UserInfo{"good": {Username: "p"}}, allowed: map[string]bool{"p": true}}
	a := &metricsAuth{reviewer: f, now: time.Now, timeout: time.Minute, kept: map[[32]byte]metricsAnswer{}}
	served := 0
	h := a.wrap(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { served++ }))
	for _, c := range []struct {
		header string
		code   int
	}{{"", http.StatusUnauthorized}, {"Bearer good", http.StatusOK}} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/metrics", nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		h.ServeHTTP(rec, r)
		assert.Equal(t, c.code, rec.Code)
	}
	assert.Equal(t, 1, served, "only the allowed request reaches the metrics")
}

func TestMetricsAuthDoesNotWaitForAHungAPIServer(t *testing.T) {
	f := &fakeReviewer{hang: true}
	a := &metricsAuth{reviewer: f, now: time.Now, timeout: 50 * time.Millisecond, kept: map[[32]byte]metricsAnswer{}}
	r := httptest.NewRequest("GET", "/metrics", nil)
	r.Header.Set("Authorization", "Bearer t")
	done := make(chan int, 1)
	go func() { code, _ := a.check(r); done <- code }()
	select {
	case code := <-done:
		assert.Equal(t, http.StatusInternalServerError, code)
	case <-time.After(10 * time.Second):
		t.Fatal("the review did not time out")
	}
	assert.Empty(t, a.kept, "an error is not kept")
}
