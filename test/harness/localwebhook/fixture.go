package localwebhook

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/webhook"
)

// DefaultProbeNamespace is where Serve waits for the webhook when Options name none.
const DefaultProbeNamespace = "probe"

// Options say how Serve runs serve and what it installs. The zero value serves with a
// new test CA from a temporary folder and installs the chart's defaults, waiting in a
// namespace "probe" opted in to the default policy.
type Options struct {
	// Values are chart values, merged at the top level into ProvidedValues'
	// provided-certificate settings (a map from ProvidedValues gives the same).
	Values map[string]any
	// Adjust, if not nil, changes serve's configuration before it runs, as its flags
	// would (e.g. PodSecurityDefaultLevel); what it sets wins over Serve's choices.
	Adjust func(*webhook.Config)
	// CA signs the serving certificate (e.g. a cluster's own CA); nil: a new CA named
	// CAName.
	CA *certs.CA
	// CAName names the new CA (default "ha-injector-test-ca").
	CAName string
	// Dir receives tls.crt and tls.key and is left in place; empty: a new temporary
	// folder, which Stop removes.
	Dir string
	// LogFile, if set, is created and receives controller-runtime's log of this
	// process (serve's) at info level until Stop.
	LogFile string
	// ProbeNamespace is the opted-in namespace in which Serve waits until the API
	// server calls serve (default DefaultProbeNamespace). Serve creates it with
	// ProbeLabels unless it exists; Stop leaves it, as a test API server has no
	// namespace controller to finish its deletion.
	ProbeNamespace string
	// ProbeLabels label a probe namespace that Serve creates (default: opted in to
	// the default policy).
	ProbeLabels map[string]string
	// ServeOnly serves without installing anything (no webhook configuration, no
	// policies, no probe), for tests of serve's own endpoints.
	ServeOnly bool
	// Native runs serve in native mode (admission.mode=native): no certificate and no
	// webhook configuration; the chart's MutatingAdmissionPolicy and its companion
	// ValidatingAdmissionPolicy are installed before serve starts (it checks them),
	// and serve binds each HAPolicy to them. Not with ServeOnly.
	Native bool
}

// Fixture is serve running in this process on a test certificate, with the chart's
// webhook configuration and HAPolicies pointed at it, until Stop.
type Fixture struct {
	// Server is serve; Restart replaces it.
	Server *Server
	// CA signed the serving certificate: its PEM is the webhook configuration's
	// caBundle, and a certificate it issues into Dir is served without a restart.
	CA *certs.CA
	// Dir holds tls.crt and tls.key.
	Dir string

	restCfg   *rest.Config
	opts      Options
	client    client.Client
	installed []client.Object
	tempDir   bool
	log       *os.File
}

// Serve writes a serving certificate for 127.0.0.1, starts serve with it on free ports
// (no metrics, no shutdown delay: there is no Service to drain from), installs what the chart renders with opts.Values (see Install), creates
// the probe namespace if needed and waits (bounded: 30 s) until the API server calls
// serve; with opts.Native, until the API server injects pods there itself. On an error,
// what it had done is undone.
func Serve(ctx context.Context, restCfg *rest.Config, opts Options) (_ *Fixture, err error) {
	f := &Fixture{restCfg: restCfg, opts: opts, Dir: opts.Dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Stop())
		}
	}()
	if f.Dir == "" {
		if f.Dir, err = os.MkdirTemp("", "ha-injector-webhook-"); err != nil {
			return nil, err
		}
		f.tempDir = true
	}
	if opts.LogFile != "" {
		if f.log, err = logTo(opts.LogFile); err != nil {
			return nil, err
		}
	}
	if opts.Native {
		if err := f.serveNative(ctx); err != nil {
			return nil, err
		}
	} else if err := f.serveWebhook(ctx); err != nil {
		return nil, err
	}
	if opts.ServeOnly {
		return f, nil
	}
	labels := opts.ProbeLabels
	if labels == nil {
		labels = map[string]string{policies.PolicyLabel: "default"}
	}
	probe := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.probeNamespace(), Labels: labels}}
	if err := f.client.Create(ctx, probe); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("probe namespace %s: %w", probe.Name, err)
	}
	if err := WaitEffective(ctx, f.client, probe.Name, time.Minute); err != nil {
		return nil, err
	}
	return f, nil
}

// ServeT is Serve for a test: an error fails t, and when t ends the fixture stops,
// after the end of LogFile is logged if t failed.
func ServeT(t testing.TB, restCfg *rest.Config, opts Options) *Fixture {
	t.Helper()
	f, err := Serve(context.Background(), restCfg, opts)
	if err != nil {
		t.Fatalf("serving the webhook: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() && opts.LogFile != "" {
			t.Logf("last lines of %s:\n%s", opts.LogFile, proc.Tail(opts.LogFile, 30))
		}
		if err := f.Stop(); err != nil {
			t.Errorf("stopping the webhook: %v", err)
		}
	})
	return f
}

// serveWebhook writes the serving certificate, starts serve and installs the chart's
// webhook configuration, pointed at it, and HAPolicies (unless ServeOnly).
func (f *Fixture) serveWebhook(ctx context.Context) (err error) {
	if f.CA, err = servingCert(f.Dir, f.opts.CA, f.opts.CAName); err != nil {
		return err
	}
	if f.Server, err = start(f.restCfg, f.Dir, f.opts.Adjust); err != nil {
		return err
	}
	if f.opts.ServeOnly {
		return nil
	}
	root, err := f.connect()
	if err != nil {
		return err
	}
	f.installed, err = install(ctx, f.client, root, ProvidedValues(f.opts.Values), f.Server.URL(), f.CA.PEM, true)
	return err
}

// serveNative installs the chart's admission policies and HAPolicies, rendered with
// admission.mode=native, then starts serve in native mode for them.
func (f *Fixture) serveNative(ctx context.Context) (err error) {
	if f.opts.ServeOnly {
		return errors.New("localwebhook: Native serves the chart's admission policies: not with ServeOnly")
	}
	root, err := f.connect()
	if err != nil {
		return err
	}
	values := map[string]any{}
	for k, v := range f.opts.Values {
		values[k] = v
	}
	values["admission"] = map[string]any{"mode": "native"}
	var name string
	f.installed, name, err = installNative(ctx, f.client, root, values)
	if err != nil {
		return err
	}
	f.Server, err = start(f.restCfg, f.Dir, f.nativeAdjust(name))
	return err
}

// nativeAdjust runs serve in native mode for the admission policies named name, after
// the options' Adjust.
func (f *Fixture) nativeAdjust(name string) func(*webhook.Config) {
	return func(cfg *webhook.Config) {
		if f.opts.Adjust != nil {
			f.opts.Adjust(cfg)
		}
		cfg.AdmissionMode = webhook.AdmissionModeNative
		cfg.NativePolicyName = name
	}
}

// connect sets up the fixture's own client, quiet (the probes' warnings are not the
// test's), and returns the repository root.
func (f *Fixture) connect() (string, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", err
	}
	clientCfg := rest.CopyConfig(f.restCfg)
	clientCfg.WarningHandler = rest.NoWarnings{}
	f.client, err = client.New(clientCfg, client.Options{})
	return root, err
}

// deleteBindings deletes the bindings serve wrote in native mode, which the garbage
// collector of a cluster would delete with their HAPolicies (a test API server has none).
func (f *Fixture) deleteBindings() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, obj := range []client.Object{&admissionregistrationv1.MutatingAdmissionPolicyBinding{}, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}} {
		err := f.client.DeleteAllOf(ctx, obj, client.HasLabels{native.ManagedByLabel})
		errs = append(errs, client.IgnoreNotFound(err))
	}
	return errors.Join(errs...)
}

func (f *Fixture) probeNamespace() string {
	if f.opts.ProbeNamespace != "" {
		return f.opts.ProbeNamespace
	}
	return DefaultProbeNamespace
}

// Restart stops serve (if it still runs) and starts it again with the same options and
// certificate on the same port, where the installed webhook configuration points, then
// waits (bounded: 30 s) until the API server calls it. Not in native mode.
func (f *Fixture) Restart(ctx context.Context) error {
	if f.opts.Native {
		// controller-runtime refuses a second controller of the same name in a process.
		return errors.New("localwebhook: Restart serves once more in this process, which native mode's controller does not allow")
	}
	if err := f.Server.Stop(); err != nil {
		return err
	}
	port := f.Server.Config.WebhookPort
	adjust := func(cfg *webhook.Config) {
		if f.opts.Adjust != nil {
			f.opts.Adjust(cfg)
		}
		cfg.WebhookPort = port
	}
	s, err := start(f.restCfg, f.Dir, adjust)
	if err != nil {
		return err
	}
	f.Server = s
	if f.opts.ServeOnly {
		return nil
	}
	return WaitEffective(ctx, f.client, f.probeNamespace(), time.Minute)
}

// Stop deletes what Serve installed, so that the API server no longer calls serve,
// then stops serve, closes LogFile and removes the temporary folder. A second Stop
// does nothing more.
func (f *Fixture) Stop() error {
	var errs []error
	if len(f.installed) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := len(f.installed) - 1; i >= 0; i-- {
			o := f.installed[i]
			if err := f.client.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
				errs = append(errs, fmt.Errorf("deleting %s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err))
			}
		}
		f.installed = nil
	}
	if f.Server != nil {
		errs = append(errs, f.Server.Stop())
		if f.opts.Native {
			errs = append(errs, f.deleteBindings())
		}
	}
	if f.log != nil {
		errs = append(errs, closeLog(f.log))
		f.log = nil
	}
	if f.tempDir {
		errs = append(errs, os.RemoveAll(f.Dir))
		f.tempDir = false
	}
	return errors.Join(errs...)
}
