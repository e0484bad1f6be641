package webhook

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
)

// Paths the webhook serves, as the chart's MutatingWebhookConfiguration names them.
const (
	PodPath        = "/mutate-v1-pod"
	DeploymentPath = "/mutate-apps-v1-deployment"
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
	// HealthProbeBindAddress serves /healthz and /readyz ("0" disables).
	HealthProbeBindAddress string
	// MetricsBindAddress serves Prometheus metrics on /metrics ("0" disables).
	MetricsBindAddress string
	// EnableHTTP2 allows HTTP/2 on the webhook server; off by default because
	// of the HTTP/2 stream-reset advisories (CVE-2023-44487, CVE-2023-39325).
	EnableHTTP2 bool
	// TLSMinVersion is "1.2" or "1.3".
	TLSMinVersion string
	// GracefulShutdownTimeout bounds how long in-flight requests may take to
	// finish after SIGTERM.
	GracefulShutdownTimeout time.Duration
	// RestConfig reaches the API server.
	RestConfig *rest.Config
}

// DefaultConfig returns the defaults of the serve flags.
func DefaultConfig() Config {
	return Config{
		WebhookPort:             9443,
		CertPath:                "/tmp/k8s-webhook-server/serving-certs",
		CertName:                "tls.crt",
		KeyName:                 "tls.key",
		HealthProbeBindAddress:  ":8081",
		MetricsBindAddress:      ":8080",
		TLSMinVersion:           "1.2",
		GracefulShutdownTimeout: 30 * time.Second,
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
	for flag, addr := range map[string]string{"--health-probe-bind-address": c.HealthProbeBindAddress, "--metrics-bind-address": c.MetricsBindAddress} {
		if addr == "0" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", flag, addr, err))
		}
	}
	if c.GracefulShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("the graceful shutdown timeout must be positive"))
	}
	if c.RestConfig == nil {
		errs = append(errs, fmt.Errorf("no connection to the API server is configured"))
	}
	cert, key := filepath.Join(c.CertPath, c.CertName), filepath.Join(c.CertPath, c.KeyName)
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		errs = append(errs, fmt.Errorf("serving certificate %s and key %s (--webhook-cert-path, --webhook-cert-name, --webhook-cert-key): %w", cert, key, err))
	}
	return errors.Join(errs...)
}

// tlsOptions applies the minimum TLS version and, unless enabled, turns
// HTTP/2 off by offering only HTTP/1.1 in ALPN.
func (c Config) tlsOptions() []func(*tls.Config) {
	return []func(*tls.Config){func(t *tls.Config) {
		t.MinVersion = tlsVersions[c.TLSMinVersion]
		if !c.EnableHTTP2 {
			t.NextProtos = []string{"http/1.1"}
		}
	}}
}
