package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/webhook"
)

// TestServeAcceptsTheChartsArguments feeds the container arguments the Helm chart
// renders, for each certificate mode, to the real command line: every flag exists, the
// values parse and validate, and they land in the configuration as the chart means them.
// (Only --webhook-cert-path is pointed at a folder that exists here.)
func TestServeAcceptsTheChartsArguments(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	chart, err := chartrender.Load(root)
	require.NoError(t, err)
	kc := writeFile(t, "kubeconfig", kubeconfig)
	certDir := t.TempDir()
	kp, err := certs.SelfSigned([]string{"localhost"}, time.Hour)
	require.NoError(t, err)
	require.NoError(t, kp.WriteFiles(certDir, "tls.crt", "tls.key"))

	for name, values := range map[string]map[string]any{
		"certManager":   nil,
		"allowedImages": {"sysctlImage": map[string]any{"allowed": []any{"registry.example/busybox", "mirror.example/tools:1.2"}}},
		"selfManaged":   {"certManager": map[string]any{"enabled": false}, "certs": map[string]any{"mode": "selfManaged"}},
		"provided": {"certManager": map[string]any{"enabled": false}, "certs": map[string]any{"mode": "provided",
			"provided": map[string]any{"secretName": "mine", "caBundle": "dW51c2Vk"}}},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := chartrender.Render(chart, values, chartrender.Options{})
			require.NoError(t, err)
			dep := &appsv1.Deployment{}
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(r.Get("Deployment", "ha-injector").Object, dep))
			args := dep.Spec.Template.Spec.Containers[0].Args
			require.Equal(t, "serve", args[0])
			for i, a := range args {
				if strings.HasPrefix(a, "--webhook-cert-path=") {
					args[i] = "--webhook-cert-path=" + certDir
				}
			}
			got := captureServe(t)
			res := runCLI(t, "", append(args, "--kubeconfig", kc)...)
			require.Equal(t, 0, res.code, res.stderr)
			require.NotNil(t, *got)
			cfg := **got
			assert.Equal(t, 9443, cfg.WebhookPort)
			assert.Equal(t, ":8081", cfg.HealthProbeBindAddress)
			assert.Equal(t, ":8080", cfg.MetricsBindAddress)
			assert.True(t, cfg.MetricsSecure, "metrics over HTTPS, authenticated and authorized, by default")
			assert.Equal(t, "1.3", cfg.TLSMinVersion)
			assert.Equal(t, 10*time.Second, cfg.GracefulShutdownTimeout)
			assert.Equal(t, 5*time.Second, cfg.ShutdownDelay)
			assert.Equal(t, int64(webhook.DefaultLargeRequestBudget), cfg.LargeRequestBudget, "the chart's default is serve's")
			assert.Equal(t, webhook.DefaultMaxConcurrentAdmissions, cfg.MaxConcurrentAdmissions, "the chart's default is serve's")
			if name == "allowedImages" {
				assert.Equal(t, []string{"registry.example/busybox", "mirror.example/tools:1.2"}, cfg.AllowedSysctlImages)
			} else {
				assert.Empty(t, cfg.AllowedSysctlImages, "by default only --sysctl-image")
			}
			assert.Equal(t, float32(-1), cfg.RestConfig.QPS, "no client-side rate limit")
			assert.Greater(t, time.Duration(*dep.Spec.Template.Spec.TerminationGracePeriodSeconds)*time.Second, cfg.ShutdownDelay+cfg.GracefulShutdownTimeout,
				"the kubelet waits longer than serve takes to drain and stop")
			if name == "selfManaged" {
				assert.Equal(t, webhook.CertModeSelfManaged, cfg.CertMode)
				assert.Equal(t, "ha-injector-tls", cfg.SelfManaged.Secret.Name)
				assert.Equal(t, "ha-injector", cfg.SelfManaged.WebhookConfiguration)
				assert.Equal(t, 2160*time.Hour, cfg.SelfManaged.RenewBefore)
			} else {
				assert.Equal(t, webhook.CertModeFile, cfg.CertMode)
			}
		})
	}
}
