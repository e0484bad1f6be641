package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
)

// mainDNSName is the first --cert-dns-name, the Service name the API server
// dials in a cluster. The tests also ask for "localhost": the API server here
// reaches the webhook by URL, and verifies the certificate for that host.
const mainDNSName = "ha-injector.ha-injector.svc"

var selfManagedSeq atomic.Int32

// selfManagedSetup is what the chart creates for the self-managed mode, in
// names of the test's own: an empty Opaque Secret in a namespace of its own,
// and a MutatingWebhookConfiguration with both webhooks, pointed by URL at
// port on localhost and limited to namespaces labelled for this test (so
// other tests sharing the API server are never sent to it).
type selfManagedSetup struct {
	admin         client.Client
	secret        types.NamespacedName
	webhookConfig string
	// appNamespace is opted in to the default policy and selected by the
	// webhook configuration.
	appNamespace string
}

func newSelfManagedSetup(t *testing.T, restCfg *rest.Config, port int) selfManagedSetup {
	t.Helper()
	seedCluster(t, restCfg)
	admin, err := client.New(restCfg, client.Options{Scheme: Scheme})
	require.NoError(t, err)
	ctx := context.Background()
	n := selfManagedSeq.Add(1)
	s := selfManagedSetup{
		admin: admin,
		// Named as the chart names them for a release called ha-injector-sm-<n>.
		secret:        types.NamespacedName{Namespace: fmt.Sprintf("ha-injector-sm-%d", n), Name: fmt.Sprintf("ha-injector-sm-%d-tls", n)},
		webhookConfig: fmt.Sprintf("ha-injector-sm-%d", n),
		appNamespace:  fmt.Sprintf("app-sm-%d", n),
	}
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{"ha-injector-test": s.webhookConfig}}
	hook := func(name, path string, rule admissionregistrationv1.RuleWithOperations) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name:                    name,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(fmt.Sprintf("https://localhost:%d%s", port, path))},
			Rules:                   []admissionregistrationv1.RuleWithOperations{rule},
			NamespaceSelector:       selector,
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail), // a TLS failure must show, not be ignored
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](5),
		}
	}
	rule := func(group, version, resource string, ops ...admissionregistrationv1.OperationType) admissionregistrationv1.RuleWithOperations {
		return admissionregistrationv1.RuleWithOperations{
			Operations: ops,
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{version}, Resources: []string{resource}},
		}
	}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.secret.Namespace}},
		// Opaque: an empty kubernetes.io/tls Secret is rejected by the API server.
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s.secret.Name, Namespace: s.secret.Namespace}, Type: corev1.SecretTypeOpaque},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.appNamespace, Labels: map[string]string{
			policies.PolicyLabel: "default",
			"ha-injector-test":   s.webhookConfig,
		}}},
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: s.webhookConfig},
			Webhooks: []admissionregistrationv1.MutatingWebhook{
				hook("pods.ha-injector.io", PodPath, rule("", "v1", "pods", admissionregistrationv1.Create)),
				hook("deployments.ha-injector.io", DeploymentPath, rule("apps", "v1", "deployments", admissionregistrationv1.Create, admissionregistrationv1.Update)),
			},
		},
	}
	for _, obj := range objs {
		require.NoError(t, admin.Create(ctx, obj))
	}
	t.Cleanup(func() {
		// The configuration selects only this test's namespace, but leaving it
		// behind would still send the API server to a closed port.
		_ = admin.Delete(context.Background(), objs[3])
	})
	return s
}

// selfManagedConfig is `serve --cert-mode=self-managed` for the setup, with
// the webhook on port and an empty certificate folder: the Secret volume
// before the kubelet has copied anything into it.
func selfManagedConfig(t *testing.T, restCfg *rest.Config, s selfManagedSetup, port int) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.RestConfig = restCfg
	cfg.CertMode = CertModeSelfManaged
	cfg.CertPath = t.TempDir()
	cfg.WebhookHost = "127.0.0.1"
	cfg.WebhookPort = port
	cfg.HealthProbeBindAddress = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.MetricsBindAddress = "0"
	cfg.GracefulShutdownTimeout = 5 * time.Second
	cfg.ShutdownDelay = 0 // nothing to drain for in a test
	cfg.SelfManaged.Secret = s.secret
	cfg.SelfManaged.WebhookConfiguration = s.webhookConfig
	cfg.SelfManaged.DNSNames = []string{mainDNSName, "localhost"}
	return cfg
}

// replica is one `serve` running in the test process.
type replica struct {
	cfg  Config
	done chan struct{}
	err  error
}

func (r *replica) addr() string {
	return net.JoinHostPort(r.cfg.WebhookHost, strconv.Itoa(r.cfg.WebhookPort))
}

func (r *replica) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// startReplica runs Run(cfg) until the test ends, then stops it and checks
// it returned without error within a bound.
func startReplica(t *testing.T, cfg Config) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{cfg: cfg, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = Run(ctx, cfg)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
			assert.NoError(t, r.err, "Run")
		case <-time.After(20 * time.Second):
			t.Error("Run did not return within 20s of the context being cancelled")
		}
	})
	return r
}

// playKubelet does the kubelet's part for a Secret volume: it copies the
// Secret's data into dir whenever it changes. cert-controller does not write
// certificate files: it fills the Secret and then only waits for
// dir/tls.crt to appear, relying on the kubelet to refresh the mounted
// volume (within its sync period, about a minute). There is no kubelet
// here, so this polls the Secret every 100ms instead. Files are replaced by
// rename, as the kubelet swaps the volume's ..data link, so a reader never
// sees half a file.
func playKubelet(t *testing.T, c client.Reader, key types.NamespacedName, dir string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var last []byte
		for ctx.Err() == nil {
			var secret corev1.Secret
			if err := c.Get(ctx, key, &secret); err == nil {
				d := secret.Data
				if len(d["tls.crt"]) > 0 && !bytes.Equal(d["tls.crt"], last) {
					kp := certs.KeyPair{Cert: d["tls.crt"], Key: d["tls.key"]}
					ca := certs.KeyPair{Cert: d[certs.CACertKey], Key: d[certs.CAKeyKey]}
					if ca.WriteFiles(dir, certs.CACertKey, certs.CAKeyKey) == nil && kp.WriteFiles(dir, "tls.crt", "tls.key") == nil {
						last = d["tls.crt"]
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
}

// readyz returns the verbose readiness report of a replica.
func readyz(cfg Config) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + cfg.HealthProbeBindAddress + "/readyz?verbose")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func waitReady(t *testing.T, r *replica, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "/readyz of the replica on port "+strconv.Itoa(r.cfg.WebhookPort), func() error {
		if !r.running() {
			return fmt.Errorf("Run returned: %v", r.err)
		}
		code, body, err := readyz(r.cfg)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("HTTP %d: %s", code, body)
		}
		return nil
	})
}

// servedCert connects to addr the way the API server does: trusting only
// caBundle and checking the certificate for dnsName. It returns the
// certificate served; an error if it does not verify.
func servedCert(addr string, caBundle []byte, dnsName string) (*x509.Certificate, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle) {
		return nil, fmt.Errorf("caBundle holds no PEM certificate: %q", caBundle)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: dnsName})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func parsePEM(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	require.NotNil(t, block, "PEM: %q", data)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

func getSecret(t *testing.T, s selfManagedSetup) *corev1.Secret {
	t.Helper()
	var secret corev1.Secret
	require.NoError(t, s.admin.Get(context.Background(), s.secret, &secret))
	return &secret
}

// caBundles returns the caBundle of every webhook of the configuration.
func caBundles(s selfManagedSetup) ([][]byte, error) {
	var wc admissionregistrationv1.MutatingWebhookConfiguration
	if err := s.admin.Get(context.Background(), types.NamespacedName{Name: s.webhookConfig}, &wc); err != nil {
		return nil, err
	}
	var out [][]byte
	for _, h := range wc.Webhooks {
		out = append(out, h.ClientConfig.CABundle)
	}
	return out, nil
}

// waitFilled waits until the rotator has filled the Secret and written its
// CA into every webhook, and returns the Secret.
func waitFilled(t *testing.T, s selfManagedSetup) *corev1.Secret {
	t.Helper()
	var secret *corev1.Secret
	eventually(t, 20*time.Second, "the Secret is filled and its CA written into both webhooks", func() error {
		secret = getSecret(t, s)
		for _, k := range []string{certs.CACertKey, certs.CAKeyKey, "tls.crt", "tls.key"} {
			if len(secret.Data[k]) == 0 {
				return fmt.Errorf("the Secret has no %s yet", k)
			}
		}
		bundles, err := caBundles(s)
		if err != nil {
			return err
		}
		for i, b := range bundles {
			if !bytes.Equal(b, secret.Data[certs.CACertKey]) {
				return fmt.Errorf("webhook %d: caBundle is not the Secret's ca.crt", i)
			}
		}
		return nil
	})
	return secret
}

// postReview sends an AdmissionReview to the replica, trusting only
// caBundle, and checks the Pod is patched.
func postReview(t *testing.T, r *replica, caBundle []byte) {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caBundle))
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: mainDNSName}}}
	body, err := os.ReadFile("testdata/pod-create.json")
	require.NoError(t, err)
	resp, err := hc.Post("https://"+r.addr()+PodPath, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	review, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(review))
	assert.Contains(t, string(review), `"patchType":"JSONPatch"`)
}

// TestSelfManagedFillsTheSecretAndServes starts self-managed `serve` with an
// empty Secret and checks, in order: the Secret gets a CA and a serving
// certificate and the CA goes into both webhooks; the library writes no
// files and readiness waits for them; once the (simulated) kubelet has
// copied the Secret, the served certificate verifies against the caBundle
// for every DNS name, an AdmissionReview over TLS is answered, and the real
// API server, trusting only the caBundle, calls both webhooks.
func TestSelfManagedFillsTheSecretAndServes(t *testing.T) {
	t.Parallel()
	restCfg := testenv.Start(t)
	port := freePort(t)
	s := newSelfManagedSetup(t, restCfg, port)
	cfg := selfManagedConfig(t, restCfg, s, port)
	r := startReplica(t, cfg)

	secret := waitFilled(t, s)
	ca := parsePEM(t, secret.Data[certs.CACertKey])
	assert.True(t, ca.IsCA)
	assert.Equal(t, certs.CAName, ca.Subject.CommonName)
	assert.WithinDuration(t, time.Now().Add(cfg.SelfManaged.CADuration), ca.NotAfter, time.Minute)
	leaf := parsePEM(t, secret.Data["tls.crt"])
	assert.Equal(t, []string{mainDNSName, "localhost"}, leaf.DNSNames)
	assert.WithinDuration(t, time.Now().Add(cfg.SelfManaged.Duration), leaf.NotAfter, time.Minute)
	_, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
	assert.NoError(t, err, "the key matches the certificate")

	// cert-controller wrote the Secret, not the files, so nothing is served
	// and the replica is not ready.
	files, err := os.ReadDir(cfg.CertPath)
	require.NoError(t, err)
	assert.Empty(t, files, "cert-controller writes no files; the kubelet does")
	code, body, err := readyz(cfg)
	require.NoError(t, err)
	assert.NotEqual(t, http.StatusOK, code, body)
	assert.Contains(t, body, "[-]certificates failed")
	assert.Contains(t, body, "[-]webhook failed")
	_, err = net.DialTimeout("tcp", r.addr(), time.Second)
	assert.Error(t, err, "the webhook port is not open before the certificate is")

	playKubelet(t, s.admin, s.secret, cfg.CertPath)
	waitReady(t, r, 40*time.Second)

	caBundle := secret.Data[certs.CACertKey]
	for _, name := range []string{mainDNSName, "localhost"} {
		served, err := servedCert(r.addr(), caBundle, name)
		require.NoError(t, err, "the served certificate verifies against the caBundle for %s", name)
		assert.Equal(t, leaf.Raw, served.Raw, "the certificate served is the Secret's")
	}
	_, err = servedCert(r.addr(), caBundle, "other.example")
	assert.Error(t, err, "and only for its DNS names")
	postReview(t, r, caBundle)

	// The API server itself, trusting only the caBundle the rotator wrote,
	// calls both webhooks (server-side dry run: nothing is stored).
	ctx := context.Background()
	spec := corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.k8s.io/pause:3.10"}}}
	labels := map[string]string{"app": "web"}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: s.appNamespace, Labels: labels}, Spec: *spec.DeepCopy()}
	require.NoError(t, s.admin.Create(ctx, pod, client.DryRunAll))
	assert.Contains(t, pod.Annotations, policies.StatusAnnotation, "the Pod webhook was called over TLS")
	deploy := workloads.Deployment(s.appNamespace, "web", workloads.PodSpec(spec))
	require.NoError(t, s.admin.Create(ctx, deploy, client.DryRunAll))
	assert.Contains(t, deploy.Annotations, policies.StatusAnnotation, "the Deployment webhook was called over TLS")
}

// TestSelfManagedReplicasShareOneCA starts two replicas at once against one
// empty Secret. Both usually try to fill it (the logs show one update
// rejected as a conflict); the API server accepts only the first write, the
// second carrying a stale resourceVersion, so exactly one CA is ever stored,
// and both replicas serve the one certificate, which verifies against the
// caBundle.
func TestSelfManagedReplicasShareOneCA(t *testing.T) {
	t.Parallel()
	restCfg := testenv.Start(t)
	port := freePort(t)
	s := newSelfManagedSetup(t, restCfg, port)

	// Record every CA the Secret ever holds, from before the replicas start.
	wc, err := client.NewWithWatch(restCfg, client.Options{Scheme: Scheme})
	require.NoError(t, err)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	w, err := wc.Watch(watchCtx, &corev1.SecretList{}, client.InNamespace(s.secret.Namespace), client.MatchingFields{"metadata.name": s.secret.Name})
	require.NoError(t, err)
	var (
		mu      sync.Mutex
		cas     = map[string]bool{}
		writes  int
		watched = make(chan struct{})
	)
	go func() {
		defer close(watched)
		for ev := range w.ResultChan() {
			if secret, ok := ev.Object.(*corev1.Secret); ok && len(secret.Data[certs.CACertKey]) > 0 {
				mu.Lock()
				cas[string(secret.Data[certs.CACertKey])] = true
				writes++
				mu.Unlock()
			}
		}
	}()

	replicas := []*replica{
		startReplica(t, selfManagedConfig(t, restCfg, s, port)),
		startReplica(t, selfManagedConfig(t, restCfg, s, freePort(t))),
	}
	for _, r := range replicas {
		playKubelet(t, s.admin, s.secret, r.cfg.CertPath)
	}
	secret := waitFilled(t, s)
	for _, r := range replicas {
		waitReady(t, r, 40*time.Second)
	}

	caBundle := secret.Data[certs.CACertKey]
	leaf := parsePEM(t, secret.Data["tls.crt"])
	for _, r := range replicas {
		eventually(t, 10*time.Second, "replica on port "+strconv.Itoa(r.cfg.WebhookPort)+" serves the Secret's certificate", func() error {
			served, err := servedCert(r.addr(), caBundle, mainDNSName)
			if err != nil {
				return err
			}
			if !bytes.Equal(served.Raw, leaf.Raw) {
				return fmt.Errorf("serving a certificate that is not the Secret's (not after %s)", served.NotAfter)
			}
			return nil
		})
		postReview(t, r, caBundle)
	}
	bundles, err := caBundles(s)
	require.NoError(t, err)
	for _, b := range bundles {
		assert.Equal(t, caBundle, b)
	}

	stopWatch()
	<-watched
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, cas, 1, "one CA, ever: the second replica kept the first one's instead of replacing it (%d writes seen)", writes)
	assert.True(t, cas[string(caBundle)])
}

// TestSelfManagedRenewsWithoutRestart makes every serving certificate due
// for renewal 2s after it is issued: it lives 30s and is renewed 28s before
// it ends, checked every 250ms. (Long lives, short margins: a certificate
// never expires while certwatcher, which polls every 10s should it miss a
// file event, has yet to load its successor.) The running replica must move
// on to a newer certificate, signed by the same CA, without a restart.
func TestSelfManagedRenewsWithoutRestart(t *testing.T) {
	t.Parallel()
	restCfg := testenv.Start(t)
	port := freePort(t)
	s := newSelfManagedSetup(t, restCfg, port)
	cfg := selfManagedConfig(t, restCfg, s, port)
	cfg.SelfManaged.CADuration = time.Hour
	cfg.SelfManaged.Duration = 30 * time.Second
	cfg.SelfManaged.RenewBefore = 28 * time.Second
	cfg.SelfManaged.CheckInterval = 250 * time.Millisecond
	require.NoError(t, cfg.Validate())
	r := startReplica(t, cfg)
	playKubelet(t, s.admin, s.secret, cfg.CertPath)

	caBundle := waitFilled(t, s).Data[certs.CACertKey]
	waitReady(t, r, 40*time.Second)
	first, err := servedCert(r.addr(), caBundle, mainDNSName)
	require.NoError(t, err)

	var renewed *x509.Certificate
	eventually(t, 15*time.Second, "a renewed certificate is served", func() error {
		served, err := servedCert(r.addr(), caBundle, mainDNSName)
		if err != nil {
			return err
		}
		if !served.NotAfter.After(first.NotAfter) {
			return fmt.Errorf("still serving the certificate that ends at %s", served.NotAfter)
		}
		renewed = served
		return nil
	})
	assert.True(t, r.running(), "the same Run serves the renewed certificate")
	assert.NotEqual(t, first.PublicKey, renewed.PublicKey, "a new key, not only new dates")
	postReview(t, r, caBundle)

	// Only the serving certificate was renewed: the CA, and so the caBundle,
	// stayed the same.
	assert.Equal(t, caBundle, getSecret(t, s).Data[certs.CACertKey])
	bundles, err := caBundles(s)
	require.NoError(t, err)
	for _, b := range bundles {
		assert.Equal(t, caBundle, b)
	}
}

// TestSelfManagedNeedsOnlyItsRBAC runs self-managed `serve` as the chart's ServiceAccount,
// with exactly the RBAC the Helm chart renders for certs.mode=selfManaged and nothing
// else, so a missing verb in the chart shows here rather than in a cluster.
func TestSelfManagedNeedsOnlyItsRBAC(t *testing.T) {
	t.Parallel()
	restCfg := testenv.Start(t)
	port := freePort(t)
	s := newSelfManagedSetup(t, restCfg, port)
	ctx := context.Background()

	// The chart's RBAC (and its policy on the webhook configuration), as its ServiceAccount.
	userCfg, _, _ := chartAsServiceAccount(t, restCfg, s)

	// The user is who we think: denied what the rules leave out.
	userClient, err := client.New(userCfg, client.Options{Scheme: Scheme})
	require.NoError(t, err)
	err = userClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: s.secret.Namespace}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "forbidden")

	cfg := selfManagedConfig(t, userCfg, s, port)
	r := startReplica(t, cfg)
	playKubelet(t, s.admin, s.secret, cfg.CertPath)
	secret := waitFilled(t, s)
	waitReady(t, r, 40*time.Second)
	_, err = servedCert(r.addr(), secret.Data[certs.CACertKey], mainDNSName)
	assert.NoError(t, err)
}

func TestSelfManagedSecretMustExist(t *testing.T) {
	t.Parallel()
	restCfg := testenv.Start(t)
	cfg := selfManagedConfig(t, restCfg, selfManagedSetup{
		secret:        types.NamespacedName{Namespace: "default", Name: "no-such-secret"},
		webhookConfig: "no-such-configuration",
	}, freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Run(ctx, cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--cert-secret-name")
	assert.Contains(t, err.Error(), "secret default/no-such-secret does not exist")
}

func TestConfigValidateSelfManaged(t *testing.T) {
	good := DefaultConfig()
	good.RestConfig = &rest.Config{Host: "https://127.0.0.1:6443"}
	good.CertMode = CertModeSelfManaged
	good.CertPath = filepath.Join(t.TempDir(), "not-yet-mounted")
	good.SelfManaged.Secret = types.NamespacedName{Namespace: "ha-injector", Name: "ha-injector-tls"}
	good.SelfManaged.WebhookConfiguration = "ha-injector"
	good.SelfManaged.DNSNames = []string{"ha-injector.ha-injector.svc", "ha-injector.ha-injector.svc.cluster.local"}
	require.NoError(t, good.Validate(), "the certificate files need not exist yet")

	cases := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"an unknown mode", func(c *Config) { c.CertMode = "cert-manager" }, []string{`--cert-mode must be file or self-managed, not "cert-manager"`}},
		{"no Secret name", func(c *Config) { c.SelfManaged.Secret.Name = "" }, []string{"--cert-mode=self-managed needs --cert-secret-name"}},
		{"no Secret namespace", func(c *Config) { c.SelfManaged.Secret.Namespace = "" }, []string{"needs --cert-secret-namespace"}},
		{"no webhook configuration", func(c *Config) { c.SelfManaged.WebhookConfiguration = "" }, []string{"needs --webhook-configuration-name"}},
		{"no cert path", func(c *Config) { c.CertPath = "" }, []string{"needs --webhook-cert-path"}},
		{"no DNS name", func(c *Config) { c.SelfManaged.DNSNames = nil }, []string{"needs at least one --cert-dns-name"}},
		{"nothing at all names every flag", func(c *Config) { c.SelfManaged = certs.DefaultSelfManaged() },
			[]string{"--cert-secret-name", "--cert-secret-namespace", "--webhook-configuration-name", "--cert-dns-name"}},
		{"an IP address as DNS name", func(c *Config) { c.SelfManaged.DNSNames = []string{"10.0.0.1"} }, []string{`--cert-dns-name "10.0.0.1" is an IP address`}},
		{"a malformed DNS name", func(c *Config) { c.SelfManaged.DNSNames = []string{"Ha_Injector"} }, []string{`--cert-dns-name "Ha_Injector"`}},
		{"a zero duration", func(c *Config) { c.SelfManaged.Duration = 0 }, []string{"--cert-duration must be positive"}},
		{"a negative CA duration", func(c *Config) { c.SelfManaged.CADuration = -time.Hour }, []string{"--cert-ca-duration must be positive"}},
		{"a zero check interval", func(c *Config) { c.SelfManaged.CheckInterval = 0 }, []string{"--cert-check-interval must be positive"}},
		{"a zero renewal margin", func(c *Config) { c.SelfManaged.RenewBefore = 0 }, []string{"--cert-renew-before must be positive"}},
		{"renewal margin as long as the certificate", func(c *Config) { c.SelfManaged.RenewBefore = c.SelfManaged.Duration },
			[]string{"--cert-renew-before (8760h0m0s) must be shorter than --cert-duration (8760h0m0s)"}},
		{"a certificate outliving its CA", func(c *Config) { c.SelfManaged.Duration = c.SelfManaged.CADuration + time.Hour },
			[]string{"--cert-duration (87601h0m0s) must not exceed --cert-ca-duration (87600h0m0s)"}},
		{"checks rarer than the renewal margin", func(c *Config) { c.SelfManaged.CheckInterval = c.SelfManaged.RenewBefore },
			[]string{"--cert-check-interval (2160h0m0s) must be shorter than --cert-renew-before"}},
		{"file mode with self-managed flags", func(c *Config) { c.CertMode = CertModeFile },
			[]string{"are only used with --cert-mode=self-managed", "not-yet-mounted"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			c.SelfManaged.DNSNames = append([]string(nil), good.SelfManaged.DNSNames...)
			tc.change(&c)
			err := c.Validate()
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}
