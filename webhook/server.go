package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Scheme knows the built-in types and the HAPolicy API.
var Scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(v1alpha1.AddToScheme(Scheme))
}

// cacheSyncCheckTimeout bounds how long one readiness probe waits for the caches.
const cacheSyncCheckTimeout = time.Second

// Run validates cfg and serves the webhook until ctx is cancelled; then it
// stops accepting connections, lets in-flight requests finish (within
// cfg.GracefulShutdownTimeout) and returns.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	if cfg.AdmissionMode == AdmissionModeNative {
		return runNative(ctx, cfg)
	}
	if cfg.PodSecurityDefaultLevel == PodSecurityAuto {
		level, err := facts.DetectPodSecurityDefault(cfg.RestConfig)
		if err != nil {
			return fmt.Errorf("--pod-security-default-level=auto: %w (set the level explicitly)", err)
		}
		ctrl.Log.WithName("pod-security").Info("cluster Pod Security default detected", "level", level)
		cfg.PodSecurityDefaultLevel = level
	}
	d := &drain{}
	mgr, err := newManager(cfg, d)
	if err != nil {
		return err
	}
	if cfg.CertMode == CertModeSelfManaged {
		if err := certs.CheckSecret(ctx, mgr.GetAPIReader(), cfg.SelfManaged.Secret); err != nil {
			return fmt.Errorf("--cert-secret-name, --cert-secret-namespace: %w", err)
		}
	}
	runCtx, stop := d.delayed(ctx, cfg.ShutdownDelay, ctrl.Log.WithName("shutdown"))
	defer stop()
	return mgr.Start(runCtx)
}

// newManager builds the controller-runtime manager: the webhook server with
// both handlers (wrapped by d, which Run drives on shutdown), the informers it
// reads from, the probes and the metrics, and in self-managed mode the
// certificate rotator.
func newManager(cfg Config, d *drain) (manager.Manager, error) {
	timeout := cfg.GracefulShutdownTimeout
	server := crwebhook.NewServer(crwebhook.Options{
		Host:     cfg.WebhookHost,
		Port:     cfg.WebhookPort,
		CertDir:  cfg.CertPath,
		CertName: cfg.CertName,
		KeyName:  cfg.KeyName,
		TLSOpts:  cfg.TLSOptions(),
	})
	mgr, err := ctrl.NewManager(cfg.RestConfig, ctrl.Options{
		Scheme:                  Scheme,
		HealthProbeBindAddress:  cfg.HealthProbeBindAddress,
		Metrics:                 metricsOptions(cfg),
		PprofBindAddress:        cfg.PprofBindAddress,
		GracefulShutdownTimeout: &timeout,
		WebhookServer:           server,
		Cache:                   cacheOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}

	// Start the informers with the manager rather than on the first request,
	// so that readiness can wait for them.
	for _, obj := range watched() {
		if _, err := mgr.GetCache().GetInformer(context.Background(), obj); err != nil {
			return nil, fmt.Errorf("watching %T: %w", obj, err)
		}
	}

	switch cfg.CertMode {
	case CertModeSelfManaged:
		ready, err := certs.AddRotator(mgr, cfg.SelfManaged, certs.Mount{Dir: cfg.CertPath, CertName: cfg.CertName, KeyName: cfg.KeyName})
		if err != nil {
			return nil, err
		}
		// The server loads its files when it starts and fails if they are
		// missing, so it joins the manager only once the rotator reports them.
		if err := mgr.Add(&serveWhenReady{mgr: mgr, server: server, ready: ready}); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("certificates", certificatesReady(ready, cfg)); err != nil {
			return nil, err
		}
	default:
		// mgr.GetWebhookServer adds the server to the manager, which starts it
		// with everything else; the files are there (Validate loaded them).
		mgr.GetWebhookServer()
	}
	replicaSets := newReplicaSets()
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return replicaSets.run(ctx, cfg.RestConfig) })); err != nil {
		return nil, err
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		returnListMemory(ctx, mgr.GetCache(), replicaSets)
		return nil
	})); err != nil {
		return nil, err
	}
	registerHandlers(mgr, server, d, cfg, replicaSets)
	if err := mgr.AddReadyzCheck("shutdown", d.readyz); err != nil {
		return nil, err
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	// The server itself, not mgr.GetWebhookServer(), which would add it to
	// the manager before its certificate exists in self-managed mode. The
	// check fails until the server has started and accepts a TLS connection.
	if err := mgr.AddReadyzCheck("webhook", server.StartedChecker()); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("caches", cachesSynced(mgr.GetCache(), replicaSets)); err != nil {
		return nil, err
	}
	return mgr, nil
}

// metricsOptions configures the metrics server. Secure (the default), as Kubebuilder
// scaffolds it: HTTPS, and every request's bearer token checked with the API server, a
// TokenReview for who it is and a SubjectAccessReview for whether it may get /metrics
// (the chart's metrics-reader ClusterRole), both kept briefly (metricsAuthFilter).
// The TLS settings are the webhook server's (minimum version, HTTP/2 off).
//
// The certificate is the self-signed one controller-runtime generates at start when no
// files are found in its default CertDir (os.TempDir()/k8s-metrics-server/serving-certs),
// as kube-controller-manager does for its metrics. It encrypts the token and the metrics;
// the scraper does not verify it (the chart's ServiceMonitor skips verification). The
// webhook's certificate is not reused: in self-managed mode its files appear only after
// the metrics server has started (which then keeps a self-signed one for good), and a
// scraper could only verify it with a CA taken from the webhook's TLS Secret, which also
// holds the private key.
func metricsOptions(cfg Config) metricsserver.Options {
	if !cfg.MetricsSecure {
		return metricsserver.Options{BindAddress: cfg.MetricsBindAddress}
	}
	return metricsserver.Options{
		BindAddress:    cfg.MetricsBindAddress,
		SecureServing:  true,
		FilterProvider: metricsAuthFilter,
		TLSOpts:        cfg.TLSOptions(),
	}
}

// registerHandlers serves both mutators on server.
func registerHandlers(mgr manager.Manager, server crwebhook.Server, d *drain, cfg Config, replicaSets *replicaSets) {
	limits := &limits{large: newLargeRequests(cfg.LargeRequestBudget), slots: newSlots(cfg.MaxConcurrentAdmissions)}
	for path, kind := range map[string]policies.Kind{PodPath: policies.KindPod, DeploymentPath: policies.KindDeployment} {
		server.Register(path, d.closeWhileDraining(newReviewHandler(&Mutator{
			Kind:                kind,
			Cache:               mgr.GetClient(),
			APIReader:           mgr.GetAPIReader(),
			SysctlImage:         cfg.SysctlImage,
			AllowedSysctlImages: cfg.AllowedSysctlImages,
			PodSecurity:         policies.PodSecurityDefault{Level: cfg.PodSecurityDefaultLevel, Version: cfg.PodSecurityDefaultVersion},
			ReplicaSets:         replicaSets,
		}, string(kind), limits)))
	}
}

// serveWhenReady adds the webhook server to the manager once ready is
// closed, the way Gatekeeper registers its webhooks after cert-controller's
// IsReady. It uses mgr.Add rather than mgr.GetWebhookServer: both add the
// server (the manager starts it at once when already running), but
// GetWebhookServer panics if the manager is shutting down at that moment,
// while Add returns an error. Nothing else may call mgr.GetWebhookServer in
// this mode, or the server would be added, and started, twice.
type serveWhenReady struct {
	mgr    manager.Manager
	server crwebhook.Server
	ready  <-chan struct{}
}

var _ manager.LeaderElectionRunnable = &serveWhenReady{}

// Start waits for the certificate, then adds the server and returns.
func (s *serveWhenReady) Start(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-s.ready:
	}
	if err := s.mgr.Add(s.server); err != nil {
		if ctx.Err() != nil {
			return nil // shutting down: nothing left to serve
		}
		return fmt.Errorf("starting the webhook server: %w", err)
	}
	return nil
}

// NeedLeaderElection is false: every replica serves.
func (*serveWhenReady) NeedLeaderElection() bool { return false }

// certificatesReady names what readiness waits for in self-managed mode, so
// /readyz?verbose says which step is missing rather than only that the
// server has not started.
func certificatesReady(ready <-chan struct{}, cfg Config) healthz.Checker {
	return func(*http.Request) error {
		select {
		case <-ready:
			return nil
		default:
			return fmt.Errorf("waiting for the self-managed certificate: Secret %s filled, its CA written into MutatingWebhookConfiguration %s, %s mounted in %s",
				cfg.SelfManaged.Secret, cfg.SelfManaged.WebhookConfiguration, cfg.CertName, cfg.CertPath)
		}
	}
}

// returnListMemory waits for the informers and the ReplicaSets index to hold
// their initial lists, then gives the memory those lists were decoded into
// back to the operating system at once: in a large cluster it is several
// times what the caches keep, and the Go runtime would otherwise hold it
// until its background scavenger returns it, slowly.
func returnListMemory(ctx context.Context, c cache.Cache, replicaSets *replicaSets) {
	if !c.WaitForCacheSync(ctx) {
		return
	}
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return replicaSets.hasSynced(), nil
	}); err != nil {
		return
	}
	debug.FreeOSMemory()
}

// cachesSynced is ready once every informer and the ReplicaSets index have
// synced.
func cachesSynced(c cache.Cache, replicaSets *replicaSets) healthz.Checker {
	return func(*http.Request) error {
		ctx, cancel := context.WithTimeout(context.Background(), cacheSyncCheckTimeout)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return errors.New("caches have not synced yet")
		}
		if !replicaSets.hasSynced() {
			return errors.New("the ReplicaSets have not been listed yet")
		}
		return nil
	}
}
