package main

import (
	goflag "flag"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ha-injector/ha-injector/webhook"
)

// serveFlags are the command line of `ha-injector serve`, bound into a webhook.Config.
type serveFlags struct {
	cfg        webhook.Config
	kubeconfig string
	zap        zap.Options
}

func newServeCommand() *cobra.Command {
	f := &serveFlags{cfg: webhook.DefaultConfig()}
	f.cfg.SysctlImage = defaultSysctlImage()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the mutating admission webhook",
		Long: `serve runs the ha-injector admission webhook: an HTTPS server that mutates Pods
(/mutate-v1-pod) and Deployments (/mutate-apps-v1-deployment) in namespaces
labelled ha-injector.io/policy=<HAPolicy name>, with health probes and
Prometheus metrics (HTTPS, for callers allowed to get /metrics: see
--metrics-secure). It stops gracefully on SIGTERM.

The serving certificate comes from --cert-mode:
  file          the files in --webhook-cert-path (a mounted Secret written by
                cert-manager or by you), reloaded when they change.
  self-managed  ha-injector keeps a CA and a serving certificate in the Secret
                --cert-secret-name (which must exist, and be mounted in
                --webhook-cert-path), writes the CA into every webhook of
                --webhook-configuration-name and renews the certificate
                --cert-renew-before its expiry. Every replica runs the rotator;
                they coordinate through the Secret. The pod becomes ready once
                the kubelet has copied the filled Secret into the mount.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			ctrl.SetLogger(webhook.DeferValues(zap.New(zap.UseFlagOptions(&f.zap))))
			return serve(cfg)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&f.cfg.WebhookPort, "webhook-port", f.cfg.WebhookPort, "port the webhook server listens on")
	fs.StringVar(&f.cfg.WebhookHost, "webhook-host", f.cfg.WebhookHost, "address the webhook server listens on (default: all)")
	fs.StringVar(&f.cfg.CertPath, "webhook-cert-path", f.cfg.CertPath, "folder with the serving certificate and key (reloaded when they change)")
	fs.StringVar(&f.cfg.CertName, "webhook-cert-name", f.cfg.CertName, "serving certificate file name in --webhook-cert-path")
	fs.StringVar(&f.cfg.KeyName, "webhook-cert-key", f.cfg.KeyName, "serving key file name in --webhook-cert-path")
	fs.StringVar(&f.cfg.CertMode, "cert-mode", f.cfg.CertMode, "where the serving certificate comes from: file (--webhook-cert-path, e.g. from cert-manager) or self-managed (a CA and certificate ha-injector keeps in --cert-secret-name)")
	sm := &f.cfg.SelfManaged
	fs.StringVar(&sm.Secret.Name, "cert-secret-name", sm.Secret.Name, "self-managed: existing Secret that holds the CA and the serving certificate, mounted in --webhook-cert-path")
	fs.StringVar(&sm.Secret.Namespace, "cert-secret-namespace", sm.Secret.Namespace, "self-managed: namespace of --cert-secret-name")
	fs.StringVar(&sm.WebhookConfiguration, "webhook-configuration-name", sm.WebhookConfiguration, "self-managed: MutatingWebhookConfiguration whose webhooks get the CA as caBundle")
	fs.StringSliceVar(&sm.DNSNames, "cert-dns-name", sm.DNSNames, "self-managed: DNS name of the serving certificate; repeat for more, the first is the main one (e.g. ha-injector.ha-injector.svc)")
	fs.DurationVar(&sm.CADuration, "cert-ca-duration", sm.CADuration, "self-managed: lifetime of the CA")
	fs.DurationVar(&sm.Duration, "cert-duration", sm.Duration, "self-managed: lifetime of the serving certificate")
	fs.DurationVar(&sm.RenewBefore, "cert-renew-before", sm.RenewBefore, "self-managed: renew a certificate (the CA too) this long before it expires")
	fs.DurationVar(&sm.CheckInterval, "cert-check-interval", sm.CheckInterval, "self-managed: how often to check whether a certificate needs renewing")
	fs.StringVar(&f.cfg.HealthProbeBindAddress, "health-probe-bind-address", f.cfg.HealthProbeBindAddress, "address of /healthz and /readyz (0 disables)")
	fs.StringVar(&f.cfg.MetricsBindAddress, "metrics-bind-address", f.cfg.MetricsBindAddress, "address of the Prometheus /metrics endpoint (0 disables)")
	fs.BoolVar(&f.cfg.MetricsSecure, "metrics-secure", f.cfg.MetricsSecure, "serve /metrics over HTTPS (self-signed certificate) only to callers whose bearer token the API server authenticates and allows to get /metrics (the chart's metrics-reader ClusterRole); needs create on tokenreviews and subjectaccessreviews. false: plain HTTP, to anyone")
	fs.StringVar(&f.cfg.PprofBindAddress, "pprof-bind-address", f.cfg.PprofBindAddress, "address of Go's /debug/pprof profiles (0 disables); keep it on localhost")
	fs.BoolVar(&f.cfg.EnableHTTP2, "enable-http2", f.cfg.EnableHTTP2, "allow HTTP/2 on the webhook server and the secure metrics server (off: HTTP/2 stream-reset advisories)")
	fs.StringVar(&f.cfg.TLSMinVersion, "tls-min-version", f.cfg.TLSMinVersion, "minimum TLS version of the webhook server and the secure metrics server: 1.2 or 1.3")
	fs.DurationVar(&f.cfg.ShutdownDelay, "shutdown-delay", f.cfg.ShutdownDelay, "after SIGTERM, keep serving this long with readiness failing and connections closed after each answer, so the Service and the API server move to other replicas")
	fs.DurationVar(&f.cfg.GracefulShutdownTimeout, "graceful-shutdown-timeout", f.cfg.GracefulShutdownTimeout, "then, how long in-flight requests may take to finish")
	fs.StringVar(&f.cfg.SysctlImage, "sysctl-image", f.cfg.SysctlImage, "image of the injected ha-sysctl init container for policies that name none: ha-injector's own image (it runs /ha-sysctl), pullable from every opted-in namespace")
	fs.StringSliceVar(&f.cfg.AllowedSysctlImages, "allowed-sysctl-images", f.cfg.AllowedSysctlImages, "images an HAPolicy may name in spec.sysctls.image for the privileged ha-sysctl init container; an image without a tag or digest allows all of its tags and digests (default: --sysctl-image alone). A policy naming another image gets no init container, with a warning")
	fs.StringVar(&f.cfg.AdmissionMode, "admission-mode", f.cfg.AdmissionMode, "webhook: serve is the API server's mutating webhook; native: the API server applies the policies itself (the chart's MutatingAdmissionPolicy) and serve, with no webhook server, keeps one binding per HAPolicy and the topology domains in each HAPolicy's status")
	fs.StringVar(&f.cfg.NativePolicyName, "native-policy-name", f.cfg.NativePolicyName, "native mode: the name of the chart's MutatingAdmissionPolicy and ValidatingAdmissionPolicy that each HAPolicy is bound to")
	fs.IntVar(&f.cfg.MaxConcurrentAdmissions, "max-concurrent-admissions", f.cfg.MaxConcurrentAdmissions, "admissions handled at once; a request beyond it waits up to half the API server's timeout for a slot, then is admitted unchanged with a warning (0: no bound)")
	fs.Var(&bytesValue{&f.cfg.LargeRequestBudget}, "large-request-budget", "bytes of request bodies over 1Mi handled at once, as a quantity (16Mi); a large request that finds no room within half the API server's timeout is admitted unchanged with a warning (0: no bound)")
	addPodSecurityFlags(fs, &f.cfg.PodSecurityDefaultLevel, &f.cfg.PodSecurityDefaultVersion, true)
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, or $KUBECONFIG, or ~/.kube/config)")
	zapFlags := goflag.NewFlagSet("zap", goflag.ContinueOnError)
	f.zap.BindFlags(zapFlags)
	fs.AddGoFlagSet(zapFlags)
	return cmd
}

// defaultSysctlImage is ha-injector's own image at this binary's version.
func defaultSysctlImage() string { return webhook.ImageRepository + ":" + version }

// addPodSecurityFlags binds --pod-security-default-level and
// --pod-security-default-version; auto is offered only where a cluster can be asked.
func addPodSecurityFlags(fs *pflag.FlagSet, level, version *string, auto bool) {
	levels := "privileged, baseline or restricted"
	if auto {
		levels = "auto (privileged, or restricted on OpenShift), " + levels
	}
	fs.StringVar(level, "pod-security-default-level", *level, "Pod Security level the API server enforces on namespaces without a pod-security.kubernetes.io/enforce label (its AdmissionConfiguration default): "+levels+"; no privileged init container is injected unless the effective level is privileged")
	fs.StringVar(version, "pod-security-default-version", *version, "Pod Security version of that default: latest or v1.N")
}

// serve runs the webhook with a validated configuration. A variable so that
// a test can see the configuration the flags produce without starting a
// server (and without the signal handler, which a process may set up once).
var serve = func(cfg webhook.Config) error {
	// Cancelled on SIGTERM or SIGINT; a second signal exits at once.
	return webhook.Run(ctrl.SetupSignalHandler(), cfg)
}

// config completes the Config with the connection to the API server.
func (f *serveFlags) config() (webhook.Config, error) {
	cfg := f.cfg
	var err error
	if f.kubeconfig != "" {
		cfg.RestConfig, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	} else {
		cfg.RestConfig, err = ctrl.GetConfig()
	}
	if err != nil {
		return cfg, usageError{err}
	}
	cfg.RestConfig = rest.CopyConfig(cfg.RestConfig)
	cfg.RestConfig.UserAgent = "ha-injector/" + version
	if cfg.RestConfig.QPS == 0 {
		// No client-side rate limit, as ctrl.GetConfig sets in the cluster: the
		// API server's Priority and Fairness protects it. client-go's default of
		// 5 requests a second would queue the ReplicaSet reads of a burst of
		// Deployment rollbacks past the webhook's timeout.
		cfg.RestConfig.QPS = -1
	}
	return cfg, nil
}

// bytesValue is a flag holding a byte count written as a Kubernetes quantity
// (13Mi, 12582912), as the chart's values write memory.
type bytesValue struct{ n *int64 }

func (b *bytesValue) String() string {
	if b.n == nil {
		return "0"
	}
	return resource.NewQuantity(*b.n, resource.BinarySI).String()
}

func (b *bytesValue) Set(s string) error {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return fmt.Errorf("%q is not a quantity of bytes such as 16Mi", s)
	}
	*b.n = q.Value()
	return nil
}

func (b *bytesValue) Type() string { return "quantity" }
