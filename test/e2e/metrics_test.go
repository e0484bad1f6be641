package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

// TestMetricsNeedATokenAllowedToReadThem runs serve with the chart's default metrics
// (HTTPS, authenticated and authorized by the API server) as the chart's ServiceAccount,
// with only the RBAC the chart renders, and scrapes /metrics as Prometheus would: without
// a token it is 401, with the token of a ServiceAccount that has no role it is 403, and
// once the chart's metrics-reader ClusterRole is bound to that ServiceAccount it is 200.
func TestMetricsNeedATokenAllowedToReadThem(t *testing.T) {
	restCfg := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := kubernetes.NewForConfig(restCfg)
	require.NoError(t, err)
	c, err := client.New(restCfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	root, err := testenv.RepoRoot()
	require.NoError(t, err)

	// A release of its own, so its cluster-scoped names do not meet another test's.
	ns := fmt.Sprintf("metrics-%d", namespaces.Add(1))
	chart, err := chartrender.Load(root)
	require.NoError(t, err)
	r, err := chartrender.Render(chart, localwebhook.ProvidedValues(nil), chartrender.Options{ReleaseName: ns, Namespace: ns})
	require.NoError(t, err)
	require.NoError(t, createNamespace(ctx, c, ns, nil))
	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding"} {
		for _, o := range r.Find(kind) {
			require.NoError(t, c.Create(ctx, o), "%s %s", kind, o.GetName())
			if kind != "ServiceAccount" {
				t.Cleanup(func() { _ = c.Delete(context.Background(), o) })
			}
		}
	}
	fullname := ns + "-ha-injector"
	reader := r.Get("ClusterRole", fullname+"-metrics-reader")
	require.NotNil(t, reader, "the chart renders the metrics-reader ClusterRole")
	serviceAccounts := r.Find("ServiceAccount")
	require.Len(t, serviceAccounts, 1)

	// serve authenticates as its ServiceAccount, so its TokenReviews and
	// SubjectAccessReviews are allowed by the chart's RBAC or not at all.
	serveCfg := rest.AnonymousClientConfig(restCfg)
	serveCfg.BearerToken = token(ctx, t, admin, ns, serviceAccounts[0].GetName())
	ports, err := proc.FreePorts(1)
	require.NoError(t, err)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	srv := localwebhook.ServeT(t, serveCfg, localwebhook.Options{CAName: "ha-injector-metrics-ca", ServeOnly: true, Adjust: func(cfg *webhook.Config) {
		cfg.MetricsBindAddress = metricsAddr
		cfg.TLSMinVersion = "1.3"
	}})

	// One admission, so that ha-injector's own counters have a sample to show.
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(srv.CA.PEM))
	review, err := os.ReadFile(filepath.Join(root, "webhook", "testdata", "pod-create.json"))
	require.NoError(t, err)
	webhookClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := webhookClient.Post(srv.Server.URL()+webhook.PodPath, "application/json", strings.NewReader(string(review)))
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// The metrics certificate is self-signed by controller-runtime: Prometheus, like this
	// client, encrypts without verifying it (the ServiceMonitor's insecureSkipVerify).
	scraper := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the self-signed metrics certificate, as Prometheus scrapes it
		ForceAttemptHTTP2: true,
	}}
	scrape := func(token string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+metricsAddr+"/metrics", nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := scraper.Do(req)
		require.NoError(t, err, "metrics over HTTPS")
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Equal(t, "HTTP/1.1", resp.Proto, "HTTP/2 is off unless --enable-http2, as on the webhook server")
		assert.Equal(t, uint16(tls.VersionTLS13), resp.TLS.Version)
		return resp.StatusCode, string(body)
	}

	// Readiness is about admissions: the metrics server may still be making its certificate.
	require.NoError(t, waitListening(metricsAddr, 10*time.Second))
	_, err = tls.Dial("tcp", metricsAddr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}) //nolint:gosec // only the version is tested
	assert.Error(t, err, "--tls-min-version 1.3 holds for the metrics server too")
	plain, err := http.Get("http://" + metricsAddr + "/metrics")
	if err == nil {
		_, _ = io.Copy(io.Discard, plain.Body)
		plain.Body.Close()
		assert.Equal(t, http.StatusBadRequest, plain.StatusCode, "plain HTTP gets no metrics")
	}

	code, body := scrape("")
	assert.Equal(t, http.StatusUnauthorized, code, body)

	const prometheus = "prometheus"
	require.NoError(t, c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: prometheus}}))
	code, body = scrape(token(ctx, t, admin, ns, prometheus))
	assert.Equal(t, http.StatusForbidden, code, body)

	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-prometheus-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.GetName()},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: prometheus}},
	}
	require.NoError(t, c.Create(ctx, binding))
	t.Cleanup(func() { _ = c.Delete(context.Background(), binding) })
	waitAllowed(ctx, t, admin, "system:serviceaccount:"+ns+":"+prometheus)
	// serve keeps a denial for 10 s, keyed on the token (and the verb and path): a new
	// token is asked at once (Prometheus's own gets through within those 10 s).
	code, body = scrape(token(ctx, t, admin, ns, prometheus))
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "ha_injector_admissions_total{")
}

// token asks the API server (TokenRequest) for a token of a ServiceAccount.
func token(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) string {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, tr.Status.Token)
	return tr.Status.Token
}

// waitListening waits (bounded by timeout) until addr accepts TCP connections.
func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections within %s: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAllowed waits (bounded: 10 s) until the API server's RBAC lets user get /metrics.
func waitAllowed(ctx context.Context, t *testing.T, cs kubernetes.Interface, user string) {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:                  user,
		Groups:                []string{"system:serviceaccounts", "system:authenticated"},
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
	}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		require.NoError(t, err)
		if got.Status.Allowed {
			return
		}
		require.True(t, time.Now().Before(deadline), "%s may not get /metrics within 10s: %s", user, got.Status.Reason)
		time.Sleep(100 * time.Millisecond)
	}
}
