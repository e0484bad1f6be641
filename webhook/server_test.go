package webhook

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Stop()
	os.Exit(code)
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeCert(t *testing.T, dir string) certs.KeyPair {
	t.Helper()
	kp, err := certs.SelfSigned([]string{"127.0.0.1", "localhost"}, time.Hour)
	require.NoError(t, err)
	require.NoError(t, kp.WriteFiles(dir, "tls.crt", "tls.key"))
	return kp
}

func serialOf(t *testing.T, kp certs.KeyPair) string {
	t.Helper()
	block, _ := pem.Decode(kp.Cert)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert.SerialNumber.String()
}

// servedSerial connects to the webhook and returns the serial number of the certificate it serves.
func servedSerial(addr string) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// eventually polls cond every 100ms for at most timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func seedCluster(t *testing.T, cfg *rest.Config) {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	require.NoError(t, err)
	ctx := context.Background()
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{policies.PolicyLabel: "default"}}},
		&v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
	} {
		err := c.Create(ctx, obj)
		if err != nil && !strings.Contains(err.Error(), "already exists") {
			require.NoError(t, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir)
	good := DefaultConfig()
	good.CertPath = dir
	good.RestConfig = &rest.Config{Host: "https://127.0.0.1:6443"}
	require.NoError(t, good.Validate())

	cases := map[string]struct {
		change func(*Config)
		want   string
	}{
		"port out of range":      {func(c *Config) { c.WebhookPort = 70000 }, "--webhook-port must be between 1 and 65535"},
		"unknown TLS version":    {func(c *Config) { c.TLSMinVersion = "1.1" }, `--tls-min-version must be 1.2 or 1.3, not "1.1"`},
		"bad probe address":      {func(c *Config) { c.HealthProbeBindAddress = "8081" }, "--health-probe-bind-address"},
		"missing certificate":    {func(c *Config) { c.CertName = "nope.crt" }, "nope.crt"},
		"no API server":          {func(c *Config) { c.RestConfig = nil }, "no connection to the API server is configured (--kubeconfig"},
		"no shutdown time":       {func(c *Config) { c.GracefulShutdownTimeout = 0 }, "--graceful-shutdown-timeout must be positive, not 0s"},
		"metrics can be 0 (off)": {func(c *Config) { c.MetricsBindAddress = "0" }, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := good
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	assert.ErrorContains(t, Run(context.Background(), Config{}), "invalid configuration")
}

// TestRunAgainstARealAPIServer starts `serve` against a real kube-apiserver
// and checks, in order: readiness, a mutation over TLS, plain-HTTP metrics
// (--metrics-secure=false; the secure ones are tested in test/e2e), a rotated
// certificate served without a restart, HTTP/2 off and TLS 1.2 as the floor,
// and a graceful shutdown that finishes a request in flight.
func TestRunAgainstARealAPIServer(t *testing.T) {
	restCfg := testenv.Start(t)
	seedCluster(t, restCfg)

	dir := t.TempDir()
	first := writeCert(t, dir)
	cfg := DefaultConfig()
	cfg.RestConfig = restCfg
	cfg.CertPath = dir
	cfg.WebhookHost = "127.0.0.1"
	cfg.WebhookPort = freePort(t)
	cfg.HealthProbeBindAddress = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.MetricsBindAddress = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.MetricsSecure = false
	cfg.GracefulShutdownTimeout = 10 * time.Second
	cfg.ShutdownDelay = 2 * time.Second
	webhookAddr := net.JoinHostPort(cfg.WebhookHost, strconv.Itoa(cfg.WebhookPort))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()

	eventually(t, 30*time.Second, "/readyz", func() error {
		resp, err := http.Get("http://" + cfg.HealthProbeBindAddress + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
		}
		return nil
	})

	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(first.Cert))
	httpClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	body, err := os.ReadFile("testdata/pod-create.json")
	require.NoError(t, err)
	resp, err := httpClient.Post("https://"+webhookAddr+PodPath, "application/json", strings.NewReader(string(body)))
	require.NoError(t, err)
	reviewBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(reviewBody))
	assert.Contains(t, string(reviewBody), `"patchType":"JSONPatch"`)
	assert.Equal(t, "HTTP/1.1", resp.Proto, "HTTP/2 is off unless --enable-http2")
	assert.Equal(t, uint16(tls.VersionTLS13), resp.TLS.Version)

	_, err = tls.Dial("tcp", webhookAddr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	assert.Error(t, err, "TLS 1.2 is refused by default (--tls-min-version 1.3)")

	metrics, err := http.Get("http://" + cfg.MetricsBindAddress + "/metrics")
	require.NoError(t, err)
	text, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	assert.Contains(t, string(text), `ha_injector_admissions_total{kind="Pod",outcome="mutated",policy="default"}`)
	assert.Contains(t, string(text), `controller_runtime_webhook_latency_seconds_bucket{webhook="/mutate-v1-pod"`)
	assert.Contains(t, string(text), `ha_injector_injections_total{feature="sysctls",kind="Pod"}`)

	// Rotate the certificate: the new one is served without a restart.
	serial, err := servedSerial(webhookAddr)
	require.NoError(t, err)
	require.Equal(t, serialOf(t, first), serial)
	second := writeCert(t, dir)
	eventually(t, 20*time.Second, "the rotated certificate is served", func() error {
		got, err := servedSerial(webhookAddr)
		if err != nil {
			return err
		}
		if got != serialOf(t, second) {
			return fmt.Errorf("still serving serial %s", got)
		}
		return nil
	})

	// SIGTERM first drains: for ShutdownDelay the server still answers, but
	// readiness fails (the Service drops the pod) and every answer closes its
	// connection (the API server's keep-alive connections move elsewhere
	// cleanly). Then it stops accepting, and a request in flight is finished:
	// send the headers and half the body, stop the server, send the rest.
	conn, err := tls.Dial("tcp", webhookAddr, &tls.Config{InsecureSkipVerify: true})
	require.NoError(t, err)
	defer conn.Close()
	half := len(body) / 2
	_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", PodPath, webhookAddr, len(body), body[:half])
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // let the server start reading the request
	cancel()
	time.Sleep(200 * time.Millisecond)
	ready, err := http.Get("http://" + cfg.HealthProbeBindAddress + "/readyz?verbose")
	require.NoError(t, err)
	readyText, _ := io.ReadAll(ready.Body)
	ready.Body.Close()
	assert.GreaterOrEqual(t, ready.StatusCode, http.StatusBadRequest, "not ready while draining")
	assert.Contains(t, string(readyText), "shutdown")
	resp, err = httpClient.Post("https://"+webhookAddr+PodPath, "application/json", strings.NewReader(string(body)))
	require.NoError(t, err, "still answering while draining")
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.True(t, resp.Close, "the answer closes its connection")
	eventually(t, 10*time.Second, "no new connections once the delay is over", func() error {
		c, err := net.DialTimeout("tcp", webhookAddr, time.Second)
		if err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		return nil
	})
	_, err = conn.Write(body[half:])
	require.NoError(t, err)
	inFlight, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	inFlightBody, _ := io.ReadAll(inFlight.Body)
	assert.Equal(t, http.StatusOK, inFlight.StatusCode, string(inFlightBody))
	assert.Contains(t, string(inFlightBody), `"allowed":true`)

	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the context was cancelled")
	}
}
