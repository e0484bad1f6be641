package webhook

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// How long a scraper's answer is kept: a token the API server authenticated and
// allowed for a minute (controller-runtime's filter keeps an authentication for one
// minute too), a refusal for 10 s, so that a ClusterRoleBinding added for Prometheus
// takes effect quickly. An error of the API server is not kept.
const (
	// metricsReviewTimeout bounds each call to the API server (controller-runtime's
	// filter gives its reviews 10 s too): a hung API server does not hold a scrape.
	metricsReviewTimeout = 10 * time.Second
	metricsAllowedTTL    = time.Minute
	metricsDeniedTTL     = 10 * time.Second
	// metricsCacheSize bounds the kept answers: scrapers are few, tokens rotate hourly.
	metricsCacheSize = 256
)

// metricsAuthFilter is the metrics server's FilterProvider when --metrics-secure is
// on: every request needs a bearer token that the API server authenticates (a
// TokenReview) and allows to use the request's verb on its path (a SubjectAccessReview
// of a non-resource URL: get /metrics), or it is answered 401 or 403. That is what
// controller-runtime's filters.WithAuthenticationAndAuthorization does; it is written
// here on the two API calls because that filter links k8s.io/apiserver's
// authentication stack (CEL, gRPC, OpenTelemetry) into the binary: 41 MB more binary
// and 19 MiB more resident memory at start, 15% of the chart's memory limit, for
// two requests a scrape interval.
func metricsAuthFilter(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	c, err := client.New(cfg, client.Options{HTTPClient: httpClient, Scheme: Scheme})
	if err != nil {
		return nil, fmt.Errorf("the metrics server's client for TokenReviews and SubjectAccessReviews: %w", err)
	}
	a := &metricsAuth{reviewer: c, now: time.Now, timeout: metricsReviewTimeout, kept: map[[sha256.Size]byte]metricsAnswer{}}
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return a.wrap(log, next), nil
	}, nil
}

// wrap answers a request that check does not let through, and serves the others with next.
func (a *metricsAuth) wrap(log logr.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, msg := a.check(r)
		if code != http.StatusOK {
			if code == http.StatusInternalServerError {
				// The API server's error is for the log, not for an unauthenticated caller.
				log.Error(errors.New(msg), "checking a metrics request with the API server")
				msg = http.StatusText(code)
			}
			http.Error(w, msg, code)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// reviewer creates TokenReviews and SubjectAccessReviews (a client.Client).
type reviewer interface {
	Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error
}

type metricsAuth struct {
	reviewer reviewer
	now      func() time.Time
	timeout  time.Duration // of each review

	mu   sync.Mutex
	kept map[[sha256.Size]byte]metricsAnswer
}

type metricsAnswer struct {
	code    int
	msg     string
	expires time.Time
}

// check answers 200 (go on), 401, 403, or 500 (the API server could not say).
func (a *metricsAuth) check(r *http.Request) (int, string) {
	token, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		return http.StatusUnauthorized, "Unauthorized: a bearer token is required"
	}
	verb := strings.ToLower(r.Method)
	key := sha256.Sum256(fmt.Appendf(nil, "%d:%s%d:%s%s", len(verb), verb, len(r.URL.Path), r.URL.Path, token))
	if ans, ok := a.keptAnswer(key); ok {
		return ans.code, ans.msg
	}
	code, msg := a.review(r.Context(), token, verb, r.URL.Path)
	switch code {
	case http.StatusOK:
		a.keep(key, metricsAnswer{code: code, msg: msg, expires: a.now().Add(metricsAllowedTTL)})
	case http.StatusUnauthorized, http.StatusForbidden:
		a.keep(key, metricsAnswer{code: code, msg: msg, expires: a.now().Add(metricsDeniedTTL)})
	}
	return code, msg
}

// review asks the API server who the token is and whether they may use verb on path.
func (a *metricsAuth) review(ctx context.Context, token, verb, path string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}
	if err := a.reviewer.Create(ctx, tr); err != nil {
		return http.StatusInternalServerError, "authenticating the token: " + err.Error()
	}
	if !tr.Status.Authenticated {
		return http.StatusUnauthorized, "Unauthorized: the API server does not authenticate the token"
	}
	user := tr.Status.User
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
	}}
	if err := a.reviewer.Create(ctx, sar); err != nil {
		return http.StatusInternalServerError, "authorizing the request: " + err.Error()
	}
	if !sar.Status.Allowed || sar.Status.Denied {
		return http.StatusForbidden, fmt.Sprintf("Forbidden: user %q may not %s %s", user.Username, verb, path)
	}
	return http.StatusOK, ""
}

func (a *metricsAuth) keptAnswer(key [sha256.Size]byte) (metricsAnswer, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ans, ok := a.kept[key]
	if !ok || !a.now().Before(ans.expires) {
		return metricsAnswer{}, false
	}
	return ans, true
}

func (a *metricsAuth) keep(key [sha256.Size]byte, ans metricsAnswer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Full (scrapers are few: this is someone trying tokens): make room by
	// dropping what expired, then the refusals, so that the scrapers' answers
	// stay; everything only if all of it is allowed answers.
	if len(a.kept) >= metricsCacheSize {
		now := a.now()
		for k, v := range a.kept {
			if !now.Before(v.expires) {
				delete(a.kept, k)
			}
		}
	}
	if len(a.kept) >= metricsCacheSize {
		for k, v := range a.kept {
			if v.code != http.StatusOK {
				delete(a.kept, k)
			}
		}
	}
	if len(a.kept) >= metricsCacheSize {
		clear(a.kept)
	}
	a.kept[key] = ans
}

// bearerToken reads the token of "Bearer <token>" as the API server reads it
// (k8s.io/apiserver's bearertoken authenticator): the scheme in any case, the
// token up to the next space.
func bearerToken(header string) (string, bool) {
	parts := strings.SplitN(strings.TrimSpace(header), " ", 3)
	if len(parts) < 2 || !strings.EqualFold(parts[0], "bearer") || parts[1] == "" {
		return "", false
	}
	return parts[1], true
}
