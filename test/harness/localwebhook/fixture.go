package localwebhook

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/certs"
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
// serve. On an error, what it had done is undone.
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
	if f.CA, err = servingCert(f.Dir, opts.CA, opts.CAName); err != nil {
		return nil, err
	}
	if opts.LogFile != "" {
		if f.log, err = logTo(opts.LogFile); err != nil {
			return nil, err
		}
	}
	if f.Server, err = start(restCfg, f.Dir, opts.Adjust); err != nil {
		return nil, err
	}
	if opts.ServeOnly {
		return f, nil
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	// Its own client, quiet: the probes' warnings are not the test's.
	clientCfg := rest.CopyConfig(restCfg)
	clientCfg.WarningHandler = rest.NoWarnings{}
	if f.client, err = client.New(clientCfg, client.Options{}); err != nil {
		return nil, err
	}
	f.installed, err = install(ctx, f.client, root, ProvidedValues(opts.Values), f.Server.URL(), f.CA.PEM, true)
	if err != nil {
		return nil, err
	}
	labels := opts.ProbeLabels
	if labels == nil {
		labels = map[string]string{policies.PolicyLabel: "default"}
	}
	probe := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.probeNamespace(), Labels: labels}}
	if err := f.client.Create(ctx, probe); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("probe namespace %s: %w", probe.Name, err)
	}
	if err := WaitEffective(ctx, f.client, probe.Name, 30*time.Second); err != nil {
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

func (f *Fixture) probeNamespace() string {
	if f.opts.ProbeNamespace != "" {
		return f.opts.ProbeNamespace
	}
	return DefaultProbeNamespace
}

// Restart stops serve (if it still runs) and starts it again with the same options and
// certificate on the same port, where the installed webhook configuration points, then
// waits (bounded: 30 s) until the API server calls it.
func (f *Fixture) Restart(ctx context.Context) error {
	if err := f.Server.Stop(); err != nil {
		return err
	}
	port := f.Server.Config.WebhookPort
	s, err := start(f.restCfg, f.Dir, func(cfg *webhook.Config) {
		if f.opts.Adjust != nil {
			f.opts.Adjust(cfg)
		}
		cfg.WebhookPort = port
	})
	if err != nil {
		return err
	}
	f.Server = s
	if f.opts.ServeOnly {
		return nil
	}
	return WaitEffective(ctx, f.client, f.probeNamespace(), 30*time.Second)
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
