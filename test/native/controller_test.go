package native_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

// TestServeNative runs serve in native mode against a real API server with the
// admission policies installed: it binds each HAPolicy and counts the zones
// into its status; pods are injected by the API server, an edited policy
// reaches the next pod, and with serve stopped pods are still injected.
func TestServeNative(t *testing.T) {
	cfg := testenv.Start(t)
	c, err := client.New(cfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	ctx := context.Background()

	o := native.Options{Name: "serve-native", Settings: policies.NativeSettings{SysctlImage: "registry.example/ha-injector:v2"}}
	require.NoError(t, c.Create(ctx, native.MutatingPolicy(o)))
	require.NoError(t, c.Create(ctx, native.ValidatingPolicy(o)))
	for i, zone := range []string{"a", "b", "b"} {
		require.NoError(t, c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("serve-native-%d", i),
			Labels: map[string]string{corev1.LabelHostname: fmt.Sprintf("serve-native-%d", i), corev1.LabelTopologyZone: zone}}}))
	}
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "served"}}
	require.NoError(t, c.Create(ctx, policy))
	require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "served", Labels: map[string]string{policies.PolicyLabel: "served"}}}))

	ports, err := proc.FreePorts(1)
	require.NoError(t, err)
	scfg := webhook.DefaultConfig()
	scfg.RestConfig = cfg
	scfg.AdmissionMode = webhook.AdmissionModeNative
	scfg.NativePolicyName = o.Name
	scfg.HealthProbeBindAddress = fmt.Sprintf("127.0.0.1:%d", ports[0])
	scfg.MetricsBindAddress = "0"
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- webhook.Run(runCtx, scfg) }()
	stopped := false
	stopServe := func() {
		if !stopped {
			stopped = true
			stop()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("serve did not stop")
			}
		}
	}
	defer stopServe()

	// The bindings, owned by the policy, and the facts.
	var m admissionregistrationv1.MutatingAdmissionPolicyBinding
	require.Eventually(t, func() bool {
		return c.Get(ctx, client.ObjectKey{Name: native.BindingName(o, "served")}, &m) == nil
	}, 30*time.Second, 100*time.Millisecond, "serve binds the policy")
	assert.Equal(t, o.Name, m.Spec.PolicyName)
	assert.Equal(t, "served", m.Spec.ParamRef.Name)
	require.Len(t, m.OwnerReferences, 1)
	assert.Equal(t, "served", m.OwnerReferences[0].Name)
	var v admissionregistrationv1.ValidatingAdmissionPolicyBinding
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: native.BindingName(o, "served")}, &v))
	assert.Equal(t, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Warn, admissionregistrationv1.Audit}, v.Spec.ValidationActions)
	require.Eventually(t, func() bool {
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(policy), policy))
		return policy.Status.TopologyDomains[corev1.LabelTopologyZone] == 2
	}, 30*time.Second, 100*time.Millisecond, "serve counts the zones into the status")
	assert.Equal(t, int32(3), policy.Status.TopologyDomains[corev1.LabelHostname])

	// A node relabelled into a third zone is counted.
	var node corev1.Node
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "serve-native-2"}, &node))
	node.Labels[corev1.LabelTopologyZone] = "c"
	require.NoError(t, c.Update(ctx, &node))
	require.Eventually(t, func() bool {
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(policy), policy))
		return policy.Status.TopologyDomains[corev1.LabelTopologyZone] == 3
	}, 30*time.Second, 100*time.Millisecond)

	// A binding changed by someone else is put back.
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: native.BindingName(o, "served")}, &m))
	m.Spec.MatchResources.NamespaceSelector = &metav1.LabelSelector{}
	require.NoError(t, c.Update(ctx, &m))
	require.Eventually(t, func() bool {
		require.NoError(t, c.Get(ctx, client.ObjectKey{Name: native.BindingName(o, "served")}, &m))
		return m.Spec.MatchResources.NamespaceSelector.MatchLabels[policies.PolicyLabel] == "served"
	}, 30*time.Second, 100*time.Millisecond)

	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "served", Name: name, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}}
	}
	unreachable := func(p *corev1.Pod) *int64 {
		for _, tol := range p.Spec.Tolerations {
			if tol.Key == policies.UnreachableTaint {
				return tol.TolerationSeconds
			}
		}
		return nil
	}
	p := pod("first")
	require.Eventually(t, func() bool {
		p = pod("first")
		require.NoError(t, c.Create(ctx, p, client.DryRunAll))
		return p.Annotations[policies.StatusAnnotation] != ""
	}, 30*time.Second, 100*time.Millisecond, "the API server injects the pod")
	assert.Equal(t, ptr.To[int64](30), unreachable(p))

	// An edited policy reaches the next pod, serve or no serve.
	stopServe()
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(policy), policy))
	policy.Spec.Tolerations.UnreachableSeconds = ptr.To[int64](20)
	require.NoError(t, c.Update(ctx, policy))
	require.Eventually(t, func() bool {
		p = pod("second")
		require.NoError(t, c.Create(ctx, p, client.DryRunAll))
		return ptr.Deref(unreachable(p), 0) == 20
	}, 30*time.Second, 100*time.Millisecond, "with serve stopped, the edited policy reaches the next pod")
}
