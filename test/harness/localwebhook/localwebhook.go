// Package localwebhook runs `ha-injector serve` (webhook.Run) in this process on
// 127.0.0.1 and makes a local API server call it the way the Helm chart makes a cluster
// call it: the chart's rendered MutatingWebhookConfiguration, pointed at the local URL,
// and its HAPolicies. Serve (ServeT in a test) does all of it on a test certificate and
// Fixture.Stop undoes it; the end-to-end tests, the demo and the failover measurement
// share it. The benchmarks, which run serve as a separate process, share Install and
// WaitEffective.
package localwebhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/webhook"
)

// Server is webhook.Run serving on 127.0.0.1 until Stop.
type Server struct {
	// Config is what it runs with.
	Config webhook.Config
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned, with err
	err    error
}

// start serves with the certificate in certDir (tls.crt, tls.key) on free ports, no
// metrics and no shutdown delay (there is no Service to drain from), the configuration
// passed through adjust (if not nil) before Run sees it, and returns once /readyz
// answers (bounded: 30 s), or the error Run stopped with.
func start(restCfg *rest.Config, certDir string, adjust func(*webhook.Config)) (*Server, error) {
	ports, err := proc.FreePorts(2)
	if err != nil {
		return nil, err
	}
	cfg := webhook.DefaultConfig()
	cfg.RestConfig = restCfg
	cfg.CertPath = certDir
	cfg.WebhookHost = "127.0.0.1"
	cfg.WebhookPort = ports[0]
	cfg.HealthProbeBindAddress = fmt.Sprintf("127.0.0.1:%d", ports[1])
	cfg.MetricsBindAddress = "0"
	cfg.ShutdownDelay = 0
	if adjust != nil {
		adjust(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Config: cfg, cancel: cancel, done: make(chan struct{})}
	go func() {
		s.err = webhook.Run(ctx, cfg)
		close(s.done)
	}()
	if err := s.waitReady(30 * time.Second); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// URL is the server's base URL.
func (s *Server) URL() string {
	return fmt.Sprintf("https://%s", net.JoinHostPort(s.Config.WebhookHost, fmt.Sprint(s.Config.WebhookPort)))
}

// Done is closed when Run has returned; Err then says why.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is Run's error once Done is closed: nil after a clean stop.
func (s *Server) Err() error { return s.err }

// Stop stops the server and waits (bounded: 30 s) for Run to return.
func (s *Server) Stop() error {
	s.cancel()
	select {
	case <-s.done:
		if s.err != nil && !errors.Is(s.err, context.Canceled) {
			return fmt.Errorf("ha-injector serve: %w", s.err)
		}
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("ha-injector serve did not stop within 30s")
	}
}

func (s *Server) waitReady(timeout time.Duration) error {
	running := func() error {
		select {
		case <-s.done:
			return fmt.Errorf("ha-injector serve stopped: %v", s.err)
		default:
			return nil
		}
	}
	return proc.WaitHTTP(context.Background(), nil, "http://"+s.Config.HealthProbeBindAddress+"/readyz", timeout, running)
}

// ProvidedValues are chart values for a local install: certificates in the provided
// mode (no cert-manager), whose placeholder CA Install replaces with the real one.
// extra is merged in at the top level.
func ProvidedValues(extra map[string]any) map[string]any {
	v := map[string]any{
		"certManager": map[string]any{"enabled": false},
		"certs":       map[string]any{"mode": "provided", "provided": map[string]any{"secretName": "local", "caBundle": "cGxhY2Vob2xkZXI="}},
	}
	for k, x := range extra {
		v[k] = x
	}
	return v
}

// Install renders the chart under root with values and creates what the API server
// needs of it: the MutatingWebhookConfiguration, pointed at url and trusting caBundle,
// and, withPolicies, the HAPolicies (the CRD must be installed).
func Install(ctx context.Context, c client.Client, root string, values map[string]any, url string, caBundle []byte, withPolicies bool) error {
	_, err := install(ctx, c, root, values, url, caBundle, withPolicies)
	return err
}

// install is Install returning what it created, even on an error.
func install(ctx context.Context, c client.Client, root string, values map[string]any, url string, caBundle []byte, withPolicies bool) ([]client.Object, error) {
	chart, err := chartrender.Load(root)
	if err != nil {
		return nil, err
	}
	r, err := chartrender.Render(chart, values, chartrender.Options{})
	if err != nil {
		return nil, err
	}
	hooks, err := r.LocalWebhookConfiguration(url, caBundle)
	if err != nil {
		return nil, err
	}
	objs := []client.Object{hooks}
	if withPolicies {
		for _, p := range r.Find("HAPolicy") {
			objs = append(objs, p)
		}
	}
	var created []client.Object
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			return created, fmt.Errorf("%s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
		created = append(created, o)
	}
	return created, nil
}

// installNative renders the chart under root with values (admission.mode=native) and
// creates its MutatingAdmissionPolicy, its ValidatingAdmissionPolicy and its HAPolicies;
// it returns what it created, even on an error, and the policies' name.
func installNative(ctx context.Context, c client.Client, root string, values map[string]any) ([]client.Object, string, error) {
	chart, err := chartrender.Load(root)
	if err != nil {
		return nil, "", err
	}
	r, err := chartrender.Render(chart, values, chartrender.Options{})
	if err != nil {
		return nil, "", err
	}
	policies := r.Find("MutatingAdmissionPolicy")
	if len(policies) != 1 {
		return nil, "", fmt.Errorf("the chart rendered %d MutatingAdmissionPolicies, not 1: is admission.mode native?", len(policies))
	}
	name := policies[0].GetName()
	objs := []client.Object{policies[0], r.Get("ValidatingAdmissionPolicy", name)}
	for _, p := range r.Find("HAPolicy") {
		objs = append(objs, p)
	}
	var created []client.Object
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			return created, name, fmt.Errorf("%s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
		created = append(created, o)
	}
	return created, name, nil
}

// WaitEffective waits (bounded by timeout) until the API server calls the webhook for a
// pod in namespace, which must be opted in, or in native mode injects it itself: it picks
// a new webhook configuration, admission policy or binding up asynchronously. Each try is a server-side dry run, so nothing is stored.
func WaitEffective(ctx context.Context, c client.Client, namespace string, timeout time.Duration) error {
	err := waitRecord(ctx, c, namespace, timeout, func(*policies.Record) bool { return true })
	if errors.Is(err, errNotYet) {
		return fmt.Errorf("the webhook configuration did not take effect within %s", timeout)
	}
	return err
}

// WaitNative is WaitEffective for native mode alone: the pod must come back with a
// record written by native mode's admission policy.
func WaitNative(ctx context.Context, c client.Client, namespace string, timeout time.Duration) error {
	err := waitRecord(ctx, c, namespace, timeout, func(r *policies.Record) bool { return r.Native })
	if errors.Is(err, errNotYet) {
		return fmt.Errorf("native mode's policy did not take effect in %s within %s", namespace, timeout)
	}
	return err
}

// errNotYet is waitRecord's error when timeout passed.
var errNotYet = errors.New("not yet")

// waitRecord dry-runs a small pod in namespace until it comes back with a record that
// ok accepts, or timeout passes (errNotYet).
func waitRecord(ctx context.Context, c client.Client, namespace string, timeout time.Duration, ok func(*policies.Record) bool) error {
	for i, deadline := 0, time.Now().Add(timeout); time.Now().Before(deadline); i++ {
		probe := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: fmt.Sprintf("probe-%d", i)},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
		}
		if err := c.Create(ctx, probe, client.DryRunAll); err != nil {
			return err
		}
		if r := policies.ReadRecord(probe.Annotations); r != nil && ok(r) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errNotYet
}

// InstallNative installs native mode for the one HAPolicy named policy (which must
// exist), as the chart and serve install it: the two admission policies compiled for o,
// then what serve's controller writes for that policy (its two bindings and, in its
// status, the topology domains), by the controller's own code. Only that policy is
// bound, so only the namespaces labelled with its name are served natively (serve would
// bind every HAPolicy). The returned function deletes what it installed (the HAPolicy
// stays).
func InstallNative(ctx context.Context, c client.Client, o native.Options, policy string) (uninstall func(context.Context) error, err error) {
	for _, obj := range []client.Object{native.MutatingPolicy(o), native.ValidatingPolicy(o)} {
		if err := c.Create(ctx, obj); err != nil {
			return nil, fmt.Errorf("native mode's %T: %w", obj, err)
		}
	}
	ctrl := &native.Controller{Client: c, Options: o}
	if _, err := ctrl.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Name: policy}}); err != nil {
		return nil, fmt.Errorf("binding HAPolicy %s as serve does in native mode: %w", policy, err)
	}
	var p v1alpha1.HAPolicy
	if err := c.Get(ctx, client.ObjectKey{Name: policy}, &p); err != nil {
		return nil, err
	}
	if p.Status.TopologyDomains == nil {
		return nil, fmt.Errorf("HAPolicy %s: no topology domains in its status after serve's reconcile", policy)
	}
	m, v := native.Bindings(o, policy)
	return func(ctx context.Context) error {
		var errs []error
		for _, obj := range []client.Object{m, v, native.MutatingPolicy(o), native.ValidatingPolicy(o)} {
			errs = append(errs, client.IgnoreNotFound(c.Delete(ctx, obj)))
		}
		return errors.Join(errs...)
	}, nil
}

// servingCert writes a certificate for 127.0.0.1 into dir as tls.crt and tls.key, the
// files serve reads, signed by ca or else by a new CA named caName (default
// "ha-injector-test-ca"), and returns the CA, whose PEM is Install's caBundle. A new CA
// lasts a year and the certificate 90 days, as cert-manager's default Certificate does:
// longer than any run, and out of reach of doctor's 14-day expiry warning.
func servingCert(dir string, ca *certs.CA, caName string) (*certs.CA, error) {
	if ca == nil {
		if caName == "" {
			caName = "ha-injector-test-ca"
		}
		var err error
		if ca, err = certs.NewCA(caName, 365*24*time.Hour); err != nil {
			return nil, err
		}
	}
	kp, _, err := ca.Issue([]string{"127.0.0.1"}, 90*24*time.Hour)
	if err != nil {
		return nil, err
	}
	return ca, kp.WriteFiles(dir, "tls.crt", "tls.key")
}

// logs is where controller-runtime's log of this process goes once logTo set it up:
// ctrl.SetLogger takes effect only once in a process, so each later file replaces the
// writer, not the logger.
var logs = &logWriter{}

var setLogger sync.Once

type logWriter struct {
	mu   sync.Mutex
	file *os.File
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.file == nil {
		return len(p), nil
	}
	return w.file.Write(p)
}

// logTo sends controller-runtime's log (serve's, in this process) to a new file at
// path, at info level, until closeLog or the next logTo.
func logTo(path string) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	setLogger.Do(func() {
		ctrl.SetLogger(webhook.DeferValues(zap.New(zap.WriteTo(logs), zap.Level(zapcore.InfoLevel))))
	})
	logs.mu.Lock()
	logs.file = f
	logs.mu.Unlock()
	return f, nil
}

// closeLog stops the log going to f, if it still does, and closes f.
func closeLog(f *os.File) error {
	logs.mu.Lock()
	if logs.file == f {
		logs.file = nil
	}
	logs.mu.Unlock()
	return f.Close()
}
