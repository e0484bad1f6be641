package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

// runDemo runs `make demo`'s program to the point where it waits for Ctrl-C, runs the
// real kubectl with each of kubectlArgs and `ha-injector doctor` with the kubeconfig it
// printed, then stops it and checks it cleaned up. It returns the demo's output and each
// command's (doctor's under "doctor").
func runDemo(t *testing.T, native bool, kubectlArgs map[string][]string) (string, map[string]string) {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	require.NoError(t, err, "the demo test drives kubectl, as a user would")
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	var kubectlOut map[string]string
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, options{out: &out, native: native, ready: func(kubeconfig string) {
			kubectlOut = map[string]string{}
			for name, args := range kubectlArgs {
				cmd := exec.CommandContext(ctx, kubectl, args...)
				cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
				b, err := cmd.CombinedOutput()
				assert.NoError(t, err, "kubectl %v: %s", args, b)
				kubectlOut[name] = string(b)
			}
			// What the README says to run against it: the real command, exit status 0.
			cmd := exec.CommandContext(ctx, "go", "run", "./cmd/ha-injector", "doctor")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
			b, err := cmd.CombinedOutput()
			assert.NoError(t, err, "ha-injector doctor against the demo:\n%s", b)
			kubectlOut["doctor"] = string(b)
			cancel() // Ctrl-C
		}})
	}()
	select {
	case err := <-done:
		require.NoError(t, err, out.String())
	case <-time.After(4 * time.Minute):
		t.Fatal("the demo did not stop")
	}

	text := out.String()
	m := regexp.MustCompile(`(?m)^export KUBECONFIG=(\S+)$`).FindStringSubmatch(text)
	require.NotNil(t, m, "a line of its own with export KUBECONFIG=...:\n%s", text)
	assert.True(t, filepath.IsAbs(m[1]), "an absolute path")
	assert.NoFileExists(t, m[1], "cleaned up on exit")
	assert.Contains(t, text, "ha-injector.io/status:")
	assert.Contains(t, text, "podAntiAffinity:")
	assert.Contains(t, text, "name: ha-sysctl")
	assert.Contains(t, text, "tolerationSeconds: 60")
	assert.Contains(t, text, "dropped net.ipv4.tcp_retries2=9", "the restricted namespace's warning")
	assert.Regexp(t, `(?m)^ok    probe +in namespace demo \(policy default`, text, "doctor's decisive check")
	assert.Regexp(t, `(?m)^ok    probe +in namespace demo-restricted \(policy default, Pod Security restricted\)`, text)
	assert.NotRegexp(t, `(?m)^fail  `, text, "doctor finds nothing failed in the demo")
	assert.Contains(t, kubectlOut["doctor"], "ok    probe")
	return text, kubectlOut
}

// TestDemo runs `make demo` (webhook mode): the webhook mutates the web-server
// Deployment.
func TestDemo(t *testing.T) {
	_, kubectlOut := runDemo(t, false, map[string][]string{
		"init container": {"-n", "demo", "get", "deployment", "web-server", "-o", "jsonpath={.spec.template.spec.initContainers[*].name}"},
		"tolerations":    {"-n", "demo", "get", "deployment", "web-server", "-o", "jsonpath={.spec.template.spec.tolerations[*].tolerationSeconds}"},
		"policies":       {"get", "hapolicies", "-o", "name"},
	})
	assert.Equal(t, "ha-sysctl", kubectlOut["init container"])
	assert.Equal(t, "60 30", kubectlOut["tolerations"])
	assert.Equal(t, "hapolicy.ha-injector.io/default\n", kubectlOut["policies"])
}

// TestDemoNative runs `make demo MODE=native`: the API server injects a pod of the
// web-server template from the chart's MutatingAdmissionPolicy, bound by serve, and
// there is no webhook configuration.
func TestDemoNative(t *testing.T) {
	text, kubectlOut := runDemo(t, true, map[string][]string{
		"init container":   {"-n", "demo", "get", "pod", "web-server", "-o", "jsonpath={.spec.initContainers[*].name}"},
		"tolerations":      {"-n", "demo", "get", "pod", "web-server", "-o", "jsonpath={.spec.tolerations[*].tolerationSeconds}"},
		"bindings":         {"get", "mutatingadmissionpolicybindings", "-o", "name"},
		"webhook configs":  {"get", "mutatingwebhookconfigurations", "-o", "name"},
		"admission policy": {"get", "mutatingadmissionpolicies", "-o", "name"},
	})
	assert.Contains(t, text, "serve --admission-mode=native")
	assert.Contains(t, text, `"native":true`, "the record native mode writes")
	assert.Regexp(t, `(?m)^ok    admission-mode +native`, text)
	assert.Equal(t, "ha-sysctl", kubectlOut["init container"])
	assert.Equal(t, "60 30", kubectlOut["tolerations"])
	assert.Equal(t, "mutatingadmissionpolicybinding.admissionregistration.k8s.io/ha-injector-default\n", kubectlOut["bindings"])
	assert.Equal(t, "mutatingadmissionpolicy.admissionregistration.k8s.io/ha-injector\n", kubectlOut["admission policy"])
	assert.Empty(t, kubectlOut["webhook configs"])
}
