package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/webhook"
)

// kubeconfig points at an API server nobody dials: serve is replaced.
const kubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`

// captureServe replaces serve for the test and returns the configuration
// it was called with, if it was.
func captureServe(t *testing.T) **webhook.Config {
	t.Helper()
	var got *webhook.Config
	orig := serve
	serve = func(cfg webhook.Config) error {
		got = &cfg
		return nil
	}
	t.Cleanup(func() { serve = orig })
	return &got
}

func TestServeSelfManagedFlags(t *testing.T) {
	got := captureServe(t)
	kc := writeFile(t, "kubeconfig", kubeconfig)
	// The flags as the Helm chart renders them for certs.mode=selfManaged.
	r := runCLI(t, "", "serve", "--kubeconfig", kc,
		"--webhook-cert-path", t.TempDir()+"/not-mounted-yet",
		"--cert-mode=self-managed",
		"--cert-secret-name=ha-injector-tls",
		"--cert-secret-namespace=ha-injector",
		"--webhook-configuration-name=ha-injector",
		"--cert-dns-name=ha-injector.ha-injector.svc",
		"--cert-dns-name=ha-injector.ha-injector.svc.cluster.local",
		"--cert-ca-duration=43800h",
		"--cert-duration=720h",
		"--cert-renew-before=240h",
		"--cert-check-interval=1h",
	)
	require.Equal(t, 0, r.code, r.stderr)
	require.NotNil(t, *got)
	cfg := **got
	assert.Equal(t, webhook.CertModeSelfManaged, cfg.CertMode)
	assert.Equal(t, certs.SelfManaged{
		Secret:               types.NamespacedName{Namespace: "ha-injector", Name: "ha-injector-tls"},
		WebhookConfiguration: "ha-injector",
		DNSNames:             []string{"ha-injector.ha-injector.svc", "ha-injector.ha-injector.svc.cluster.local"},
		CADuration:           43800 * time.Hour,
		Duration:             720 * time.Hour,
		RenewBefore:          240 * time.Hour,
		CheckInterval:        time.Hour,
	}, cfg.SelfManaged)
}

func TestServeCertFlagDefaults(t *testing.T) {
	got := captureServe(t)
	kc := writeFile(t, "kubeconfig", kubeconfig)
	r := runCLI(t, "", "serve", "--kubeconfig", kc, "--cert-mode=self-managed",
		"--cert-secret-name=s", "--cert-secret-namespace=ns", "--webhook-configuration-name=w", "--cert-dns-name=a.ns.svc,b.ns.svc")
	require.Equal(t, 0, r.code, r.stderr)
	cfg := **got
	assert.Equal(t, []string{"a.ns.svc", "b.ns.svc"}, cfg.SelfManaged.DNSNames, "a comma list works too")
	assert.Equal(t, 87600*time.Hour, cfg.SelfManaged.CADuration)
	assert.Equal(t, 8760*time.Hour, cfg.SelfManaged.Duration)
	assert.Equal(t, 2160*time.Hour, cfg.SelfManaged.RenewBefore)
	assert.Equal(t, 12*time.Hour, cfg.SelfManaged.CheckInterval)

	r = runCLI(t, "", "serve", "--help")
	assert.Equal(t, 0, r.code)
	for _, flag := range []string{"--cert-mode string", "--cert-secret-name", "--cert-secret-namespace", "--webhook-configuration-name",
		"--cert-dns-name", "--cert-ca-duration", "--cert-duration", "--cert-renew-before", "--cert-check-interval", `(default "file")`} {
		assert.Contains(t, r.stdout, flag)
	}
}

func TestServeCertModeErrors(t *testing.T) {
	got := captureServe(t)
	kc := writeFile(t, "kubeconfig", kubeconfig)
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"self-managed without its flags", []string{"--cert-mode=self-managed"},
			[]string{"needs --cert-secret-name", "needs --cert-secret-namespace", "needs --webhook-configuration-name", "at least one --cert-dns-name"}},
		{"an unknown mode", []string{"--cert-mode=cert-manager"}, []string{`--cert-mode must be file or self-managed, not "cert-manager"`}},
		{"self-managed flags in file mode", []string{"--cert-secret-name=s", "--webhook-cert-path", t.TempDir()},
			[]string{"only used with --cert-mode=self-managed"}},
		{"renewal margin longer than the certificate", []string{"--cert-mode=self-managed", "--cert-secret-name=s", "--cert-secret-namespace=ns",
			"--webhook-configuration-name=w", "--cert-dns-name=w.ns.svc", "--cert-duration=24h", "--cert-renew-before=48h"},
			[]string{"--cert-renew-before (48h0m0s) must be shorter than --cert-duration (24h0m0s)"}},
		{"a malformed duration", []string{"--cert-duration=a year"}, []string{`invalid argument "a year" for "--cert-duration"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, "", append([]string{"serve", "--kubeconfig", kc}, tc.args...)...)
			assert.Equal(t, 2, r.code, "a usage error: %s", r.stderr)
			for _, want := range tc.want {
				assert.Contains(t, r.stderr, want)
			}
			assert.Nil(t, *got, "nothing is started")
		})
	}
}

func TestServeSysctlImageAndPodSecurityFlags(t *testing.T) {
	got := captureServe(t)
	kc := writeFile(t, "kubeconfig", kubeconfig)
	r := runCLI(t, "", "serve", "--kubeconfig", kc, "--cert-mode=self-managed",
		"--cert-secret-name=s", "--cert-secret-namespace=n", "--webhook-configuration-name=w", "--cert-dns-name=w.n.svc")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "ghcr.io/ha-injector/ha-injector:"+version, (*got).SysctlImage, "ha-injector's own image at this version")
	assert.Equal(t, webhook.PodSecurityAuto, (*got).PodSecurityDefaultLevel)
	assert.Equal(t, "latest", (*got).PodSecurityDefaultVersion)

	r = runCLI(t, "", "serve", "--kubeconfig", kc, "--cert-mode=self-managed",
		"--cert-secret-name=s", "--cert-secret-namespace=n", "--webhook-configuration-name=w", "--cert-dns-name=w.n.svc",
		"--sysctl-image=mirror.example/ha-injector@sha256:"+strings.Repeat("ab", 32),
		"--pod-security-default-level=baseline", "--pod-security-default-version=v1.30")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "mirror.example/ha-injector@sha256:"+strings.Repeat("ab", 32), (*got).SysctlImage)
	assert.Equal(t, "baseline", (*got).PodSecurityDefaultLevel)
	assert.Equal(t, "v1.30", (*got).PodSecurityDefaultVersion)

	for _, bad := range [][]string{
		{"--pod-security-default-level=strict"},
		{"--pod-security-default-version=1.30"},
		{"--sysctl-image="},
	} {
		*got = nil
		r = runCLI(t, "", append([]string{"serve", "--kubeconfig", kc, "--cert-mode=self-managed",
			"--cert-secret-name=s", "--cert-secret-namespace=n", "--webhook-configuration-name=w", "--cert-dns-name=w.n.svc"}, bad...)...)
		assert.Equal(t, 2, r.code, "%v: %s", bad, r.stderr)
		assert.Contains(t, r.stderr, strings.SplitN(bad[0], "=", 2)[0])
		assert.Nil(t, *got)
	}
}
