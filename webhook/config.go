package webhook

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Paths the webhook serves, as the chart's MutatingWebhookConfiguration names them.
const (
	PodPath        = "/mutate-v1-pod"
	DeploymentPath = "/mutate-apps-v1-deployment"
)

// Where the serving certificate comes from (--cert-mode).
const (
	// CertModeFile serves the certificate files found in CertPath, reloaded
	// when they change: a Secret written by cert-manager or by the user and
	// mounted there.
	CertModeFile = "file"
	// CertModeSelfManaged keeps a CA and the serving certificate in a Secret,
	// writes the CA into the webhook configuration and renews before expiry
	// (see certs.SelfManaged). The Secret is still mounted in CertPath and
	// served from there; the files appear only once it has been filled.
	CertModeSelfManaged = "self-managed"
)

// Config is the validated configuration of `ha-injector serve`.
type Config struct {
	// WebhookHost is the address the webhook server listens on ("" = all).
	WebhookHost string
	// WebhookPort is the webhook server's port.
	WebhookPort int
	// CertPath is the folder holding the serving certificate and key (the
	// mounted Secret); CertName and KeyName are their file names. The files
	// are watched and reloaded when they change.
	CertPath, CertName, KeyName string
	// CertMode is CertModeFile or CertModeSelfManaged.
	CertMode string
	// SelfManaged configures CertModeSelfManaged; in CertModeFile it must be
	// left unset, so a forgotten --cert-mode is reported rather than ignored.
	SelfManaged certs.SelfManaged
	// HealthProbeBindAddress serves /healthz and /readyz ("0" disables).
	HealthProbeBindAddress string
	// MetricsBindAddress serves Prometheus metrics on /metrics ("0" disables).
	MetricsBindAddress string
	// MetricsSecure serves the metrics over HTTPS, only to callers the API server
	// authenticates (TokenReview) and authorizes to get /metrics
	// (SubjectAccessReview); false serves them over plain HTTP to anyone who can
	// reach the port.
	MetricsSecure bool
	// ShutdownDelay is how long the webhook keeps serving after SIGTERM, with
	// readiness failing and every answer closing its connection, before it
	// stops accepting: time for the Service to drop the pod and for the API
	// server's keep-alive connections to move to other replicas.
	ShutdownDelay time.Duration
	// PprofBindAddress serves Go's /debug/pprof profiles ("0" disables, the
	// default): for profiling the admission path under real load.
	PprofBindAddress string
	// EnableHTTP2 allows HTTP/2 on the webhook server and the secure metrics
	// server; off by default because of the HTTP/2 stream-reset advisories
	// (CVE-2023-44487, CVE-2023-39325).
	EnableHTTP2 bool
	// TLSMinVersion is "1.2" or "1.3", for the webhook server and the secure
	// metrics server.
	TLSMinVersion string
	// GracefulShutdownTimeout bounds how long in-flight requests may take to
	// finish after SIGTERM.
	GracefulShutdownTimeout time.Duration
	// RestConfig reaches the API server.
	RestConfig *rest.Config
	// SysctlImage is the image of the injected ha-sysctl init container for
	// the policies that name none: ha-injector's own image, which holds
	// /ha-sysctl. It must be pullable from every opted-in namespace.
	SysctlImage string
	// AllowedSysctlImages are the images an HAPolicy may name for the
	// ha-sysctl init container (an entry without a tag or digest allows its
	// whole repository); empty means SysctlImage alone. Writing an HAPolicy
	// would otherwise be running any image, privileged, in every pod of every
	// opted-in namespace.
	AllowedSysctlImages []string
	// PodSecurityDefaultLevel is the Pod Security level the API server
	// enforces on namespaces without a pod-security.kubernetes.io/enforce
	// label: privileged, baseline, restricted, or auto (privileged, unless the
	// cluster serves the security.openshift.io API group: restricted).
	PodSecurityDefaultLevel string
	// PodSecurityDefaultVersion is the version of that default: latest or v1.N.
	PodSecurityDefaultVersion string
	// MaxConcurrentAdmissions bounds the admissions handled at once; a
	// request beyond it waits up to half the API server's timeout for a slot,
	// then is admitted unchanged with a warning. 0 removes the bound.
	MaxConcurrentAdmissions int
	// AdmissionMode is webhook (serve is the API server's webhook) or native
	// (the API server applies the policies itself; serve keeps their
	// bindings and the facts they read).
	AdmissionMode string
	// NativePolicyName is, in native mode, the name of the chart's
	// MutatingAdmissionPolicy and ValidatingAdmissionPolicy that serve binds
	// each HAPolicy to.
	NativePolicyName string
	// LargeRequestBudget bounds the bytes of request bodies over
	// LargeRequestBytes handled at once; a large request that finds no room
	// within half the API server's timeout is admitted unchanged with a
	// warning. 0 removes the bound.
	LargeRequestBudget int64
}

// ImageRepository is where ha-injector's image is published; serve's
// --sysctl-image defaults to it, tagged with the binary's version.
const ImageRepository = "ghcr.io/ha-injector/ha-injector"

// PodSecurityAuto asks Run to find the cluster's Pod Security default.
const PodSecurityAuto = "auto"

// DefaultConfig returns the defaults of the serve flags.
func DefaultConfig() Config {
	return Config{
		WebhookPort:               9443,
		LargeRequestBudget:        DefaultLargeRequestBudget,
		MaxConcurrentAdmissions:   DefaultMaxConcurrentAdmissions,
		CertPath:                  "/tmp/k8s-webhook-server/serving-certs",
		CertName:                  "tls.crt",
		KeyName:                   "tls.key",
		CertMode:                  CertModeFile,
		SelfManaged:               certs.DefaultSelfManaged(),
		HealthProbeBindAddress:    ":8081",
		MetricsBindAddress:        ":8080",
		MetricsSecure:             true,
		PprofBindAddress:          "0",
		SysctlImage:               ImageRepository + ":dev",
		PodSecurityDefaultLevel:   PodSecurityAuto,
		PodSecurityDefaultVersion: "latest",
		AdmissionMode:             AdmissionModeWebhook,
		ShutdownDelay:             5 * time.Second,
		TLSMinVersion:             "1.3",
		GracefulShutdownTimeout:   30 * time.Second,
	}
}

var tlsVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// Validate checks the configuration before anything starts, so a mistake is
// reported at once rather than as a crash loop.
func (c Config) Validate() error {
	var errs []error
	if c.WebhookPort < 1 || c.WebhookPort > 65535 {
		errs = append(errs, fmt.Errorf("--webhook-port must be between 1 and 65535, not %d", c.WebhookPort))
	}
	if _, ok := tlsVersions[c.TLSMinVersion]; !ok {
		errs = append(errs, fmt.Errorf("--tls-min-version must be 1.2 or 1.3, not %q", c.TLSMinVersion))
	}
	for flag, addr := range map[string]string{"--health-probe-bind-address": c.HealthProbeBindAddress, "--metrics-bind-address": c.MetricsBindAddress, "--pprof-bind-address": c.PprofBindAddress} {
		if addr == "0" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", flag, addr, err))
		}
	}
	if c.GracefulShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--graceful-shutdown-timeout must be positive, not %s", c.GracefulShutdownTimeout))
	}
	if c.ShutdownDelay < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-delay must not be negative, not %s", c.ShutdownDelay))
	}
	if c.LargeRequestBudget < 0 {
		errs = append(errs, fmt.Errorf("--large-request-budget must not be negative, not %d", c.LargeRequestBudget))
	}
	if c.MaxConcurrentAdmissions < 0 {
		errs = append(errs, fmt.Errorf("--max-concurrent-admissions must not be negative, not %d", c.MaxConcurrentAdmissions))
	}
	for _, image := range c.AllowedSysctlImages {
		if !v1alpha1.ValidImage(image) {
			errs = append(errs, fmt.Errorf("--allowed-sysctl-images: %q is not an image reference", image))
		}
	}
	if c.PodSecurityDefaultLevel != PodSecurityAuto && !policies.ValidPodSecurityLevel(c.PodSecurityDefaultLevel) {
		errs = append(errs, fmt.Errorf("--pod-security-default-level must be auto, privileged, baseline or restricted, not %q", c.PodSecurityDefaultLevel))
	}
	if !policies.ValidPodSecurityVersion(c.PodSecurityDefaultVersion) {
		errs = append(errs, fmt.Errorf("--pod-security-default-version must be latest or v1.N, not %q", c.PodSecurityDefaultVersion))
	}
	if c.SysctlImage == "" {
		errs = append(errs, fmt.Errorf("--sysctl-image must name the image of the ha-sysctl init container (ha-injector's own)"))
	} else if !v1alpha1.ValidImage(c.SysctlImage) {
		errs = append(errs, fmt.Errorf("--sysctl-image %q must not contain spaces", c.SysctlImage))
	}
	if c.RestConfig == nil {
		errs = append(errs, fmt.Errorf("no connection to the API server is configured (--kubeconfig, $KUBECONFIG, ~/.kube/config or the in-cluster config)"))
	}
	switch c.AdmissionMode {
	case AdmissionModeWebhook:
	case AdmissionModeNative:
		// No webhook server: no certificate to check.
		if c.NativePolicyName == "" {
			errs = append(errs, fmt.Errorf("--admission-mode=%s needs --native-policy-name (the chart's MutatingAdmissionPolicy)", AdmissionModeNative))
		}
		return errors.Join(errs...)
	default:
		errs = append(errs, fmt.Errorf("--admission-mode must be %s or %s, not %q", AdmissionModeWebhook, AdmissionModeNative, c.AdmissionMode))
	}
	switch c.CertMode {
	case CertModeFile:
		errs = append(errs, c.validateFileMode()...)
	case CertModeSelfManaged:
		errs = append(errs, c.validateSelfManaged()...)
	default:
		errs = append(errs, fmt.Errorf("--cert-mode must be %s or %s, not %q", CertModeFile, CertModeSelfManaged, c.CertMode))
	}
	return errors.Join(errs...)
}

// validateFileMode checks that the mounted certificate can be loaded now:
// the files are not written by ha-injector, so a missing one is a mistake
// in the deployment.
func (c Config) validateFileMode() []error {
	var errs []error
	sm := c.SelfManaged
	if sm.Secret.Name != "" || sm.Secret.Namespace != "" || sm.WebhookConfiguration != "" || len(sm.DNSNames) > 0 {
		errs = append(errs, fmt.Errorf("--cert-secret-name, --cert-secret-namespace, --webhook-configuration-name and --cert-dns-name are only used with --cert-mode=%s", CertModeSelfManaged))
	}
	cert, key := filepath.Join(c.CertPath, c.CertName), filepath.Join(c.CertPath, c.KeyName)
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		errs = append(errs, fmt.Errorf("serving certificate %s and key %s (--webhook-cert-path, --webhook-cert-name, --webhook-cert-key): %w", cert, key, err))
	}
	return errs
}

// validateSelfManaged checks the self-managed settings. The certificate
// files are not checked: they appear only after the rotator has filled the
// Secret and the kubelet has copied it into the mount.
func (c Config) validateSelfManaged() []error {
	var errs []error
	sm := c.SelfManaged
	required := []struct{ flag, value string }{
		{"--cert-secret-name", sm.Secret.Name},
		{"--cert-secret-namespace", sm.Secret.Namespace},
		{"--webhook-configuration-name", sm.WebhookConfiguration},
		{"--webhook-cert-path", c.CertPath},
	}
	for _, r := range required {
		if r.value == "" {
			errs = append(errs, fmt.Errorf("--cert-mode=%s needs %s", CertModeSelfManaged, r.flag))
		}
	}
	if len(sm.DNSNames) == 0 {
		errs = append(errs, fmt.Errorf("--cert-mode=%s needs at least one --cert-dns-name (the Service's name, e.g. ha-injector.ha-injector.svc)", CertModeSelfManaged))
	}
	for _, name := range sm.DNSNames {
		// cert-controller puts every name in the certificate's DNS names; an
		// IP address there never matches a connection to that address.
		if net.ParseIP(name) != nil {
			errs = append(errs, fmt.Errorf("--cert-dns-name %q is an IP address; only DNS names are supported", name))
		} else if problems := validation.IsDNS1123Subdomain(name); len(problems) > 0 {
			errs = append(errs, fmt.Errorf("--cert-dns-name %q: %v", name, problems))
		}
	}
	durations := []struct {
		flag  string
		value time.Duration
	}{
		{"--cert-ca-duration", sm.CADuration},
		{"--cert-duration", sm.Duration},
		{"--cert-renew-before", sm.RenewBefore},
		{"--cert-check-interval", sm.CheckInterval},
	}
	positive := true
	for _, d := range durations {
		if d.value <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, not %s", d.flag, d.value))
			positive = false
		}
	}
	if !positive {
		return errs
	}
	// A certificate that is always within its renewal margin would be
	// replaced on every check and on every Secret update, the rotator's own
	// included: an endless loop of writes.
	if sm.RenewBefore >= sm.Duration {
		errs = append(errs, fmt.Errorf("--cert-renew-before (%s) must be shorter than --cert-duration (%s)", sm.RenewBefore, sm.Duration))
	}
	if sm.Duration > sm.CADuration {
		errs = append(errs, fmt.Errorf("--cert-duration (%s) must not exceed --cert-ca-duration (%s): the serving certificate cannot outlive its CA", sm.Duration, sm.CADuration))
	}
	// Checked less often than the renewal margin, a certificate could expire
	// between two checks.
	if sm.CheckInterval >= sm.RenewBefore {
		errs = append(errs, fmt.Errorf("--cert-check-interval (%s) must be shorter than --cert-renew-before (%s), or a certificate can expire between two checks", sm.CheckInterval, sm.RenewBefore))
	}
	return errs
}

// TLSOptions are the TLS settings of the webhook server and of the secure metrics server:
// the minimum TLS version and, unless enabled, HTTP/2 off by offering only HTTP/1.1 in
// ALPN. The benchmarks' no-op server uses them too, so both are measured over the same TLS.
func (c Config) TLSOptions() []func(*tls.Config) {
	return []func(*tls.Config){func(t *tls.Config) {
		t.MinVersion = tlsVersions[c.TLSMinVersion]
		if !c.EnableHTTP2 {
			t.NextProtos = []string{"http/1.1"}
		}
	}}
}
