package localwebhook_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Stop()
	os.Exit(code)
}

// injected reports whether the API server had serve mutate a pod created (dry run)
// in ns.
func injected(t *testing.T, c client.Client, ns string, i int) bool {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pod-%d", i)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	require.NoError(t, c.Create(context.Background(), pod, client.DryRunAll))
	return pod.Annotations[policies.StatusAnnotation] != ""
}

// names lists the names of the objects in list.
func names(list client.ObjectList) []string {
	var out []string
	_ = meta.EachListItem(list, func(o runtime.Object) error {
		out = append(out, o.(client.Object).GetName())
		return nil
	})
	return out
}

// TestServeThenStopLeavesNothingCalled: Serve makes the API server call serve in its
// probe namespace; after Stop the webhook configuration and the HAPolicies are gone,
// pods are admitted without serve, the temporary folder is removed and the log closed;
// and a second fixture serves again in the same namespace, logging to its own file.
func TestServeThenStopLeavesNothingCalled(t *testing.T) {
	restCfg := rest.CopyConfig(testenv.Start(t))
	restCfg.WarningHandler = rest.NoWarnings{}
	c, err := client.New(restCfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	ctx := context.Background()
	logs := t.TempDir()

	f, err := localwebhook.Serve(ctx, restCfg, localwebhook.Options{
		LogFile: filepath.Join(logs, "first.log"),
		Values:  map[string]any{"policies": map[string]any{"audit": map[string]any{"mode": "Audit"}}},
	})
	require.NoError(t, err)
	assert.FileExists(t, filepath.Join(f.Dir, "tls.crt"))
	var hooks admissionregistrationv1.MutatingWebhookConfigurationList
	require.NoError(t, c.List(ctx, &hooks))
	require.Len(t, hooks.Items, 1)
	assert.Equal(t, f.CA.PEM, hooks.Items[0].Webhooks[0].ClientConfig.CABundle)
	var hapolicies v1alpha1.HAPolicyList
	require.NoError(t, c.List(ctx, &hapolicies))
	assert.Len(t, hapolicies.Items, 2, "the chart's default policy and the audit one")
	var probe corev1.Namespace
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: localwebhook.DefaultProbeNamespace}, &probe))
	assert.Equal(t, "default", probe.Labels[policies.PolicyLabel])
	assert.True(t, injected(t, c, localwebhook.DefaultProbeNamespace, 0))

	// Restart: serve again on the same port and certificate.
	port := f.Server.Config.WebhookPort
	require.NoError(t, f.Server.Stop())
	require.NoError(t, f.Restart(ctx))
	assert.Equal(t, port, f.Server.Config.WebhookPort)

	require.NoError(t, f.Stop())
	require.NoError(t, f.Stop(), "a second Stop does nothing more")
	require.NoError(t, c.List(ctx, &hooks))
	assert.Empty(t, names(&hooks), "webhook configurations left")
	require.NoError(t, c.List(ctx, &hapolicies))
	assert.Empty(t, names(&hapolicies), "HAPolicies left")
	assert.NoDirExists(t, f.Dir, "the temporary folder is removed")
	// The API server drops the deleted configuration asynchronously; until then a
	// call to the stopped serve fails, which failurePolicy Ignore lets through.
	admittedUnchanged := false
	for i, deadline := 1, time.Now().Add(30*time.Second); !admittedUnchanged && time.Now().Before(deadline); i++ {
		admittedUnchanged = !injected(t, c, localwebhook.DefaultProbeNamespace, i)
	}
	assert.True(t, admittedUnchanged, "pods are admitted without serve")
	first, err := os.ReadFile(filepath.Join(logs, "first.log"))
	require.NoError(t, err)
	assert.Contains(t, string(first), "Starting webhook server", "serve logged to the first file")

	// The probe namespace is left, and the next fixture uses it as it is.
	second := localwebhook.ServeT(t, restCfg, localwebhook.Options{
		LogFile:     filepath.Join(logs, "second.log"),
		ProbeLabels: map[string]string{"ignored": "yes"},
	})
	assert.True(t, injected(t, c, localwebhook.DefaultProbeNamespace, 1000))
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: localwebhook.DefaultProbeNamespace}, &probe))
	assert.NotContains(t, probe.Labels, "ignored")
	assert.NotEqual(t, f.Dir, second.Dir)
	secondLog, err := os.ReadFile(filepath.Join(logs, "second.log"))
	require.NoError(t, err)
	assert.Contains(t, string(secondLog), "Starting webhook server", "serve logged to the second file")
	after, err := os.ReadFile(filepath.Join(logs, "first.log"))
	require.NoError(t, err)
	assert.Equal(t, first, after, "nothing more went to the first file")
}

// TestServeNativeThenStop: with Native, Serve installs the chart's admission policies
// and no webhook configuration, serve binds the default policy, and the API server
// injects pods in the probe namespace itself; after Stop the policies, the HAPolicies
// and serve's bindings are gone and pods are admitted unchanged.
func TestServeNativeThenStop(t *testing.T) {
	restCfg := rest.CopyConfig(testenv.Start(t))
	restCfg.WarningHandler = rest.NoWarnings{}
	c, err := client.New(restCfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	ctx := context.Background()
	const ns = "native-probe"

	f, err := localwebhook.Serve(ctx, restCfg, localwebhook.Options{Native: true, ProbeNamespace: ns})
	require.NoError(t, err)
	assert.Equal(t, webhook.AdmissionModeNative, f.Server.Config.AdmissionMode)
	var hooks admissionregistrationv1.MutatingWebhookConfigurationList
	require.NoError(t, c.List(ctx, &hooks))
	assert.Empty(t, names(&hooks), "no webhook configuration")
	var policiesList admissionregistrationv1.MutatingAdmissionPolicyList
	require.NoError(t, c.List(ctx, &policiesList))
	assert.Equal(t, []string{f.Server.Config.NativePolicyName}, names(&policiesList))
	var bindings admissionregistrationv1.MutatingAdmissionPolicyBindingList
	require.NoError(t, c.List(ctx, &bindings))
	assert.Len(t, bindings.Items, 1, "serve bound the default policy")
	assert.True(t, injected(t, c, ns, 0))

	assert.ErrorContains(t, f.Restart(ctx), "native mode", "serve's native controller runs once per process")

	require.NoError(t, f.Stop())
	for _, list := range []client.ObjectList{&policiesList, &bindings, &admissionregistrationv1.ValidatingAdmissionPolicyList{}, &admissionregistrationv1.ValidatingAdmissionPolicyBindingList{}, &v1alpha1.HAPolicyList{}} {
		require.NoError(t, c.List(ctx, list))
		assert.Empty(t, names(list), "%T left", list)
	}
	admittedUnchanged := false
	for i, deadline := 1, time.Now().Add(30*time.Second); !admittedUnchanged && time.Now().Before(deadline); i++ {
		admittedUnchanged = !injected(t, c, ns, i)
	}
	assert.True(t, admittedUnchanged, "pods are admitted unchanged")
}
