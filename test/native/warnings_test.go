package native_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

// TestNativeWarnings: the companion ValidatingAdmissionPolicy tells the person
// who creates a pod what the webhook's warnings tell, and says nothing to a
// controller or of a pod that got everything.
func TestNativeWarnings(t *testing.T) {
	cfg := rest.CopyConfig(testenv.Start(t))
	w := &controlplane.Warnings{}
	cfg.WarningHandler = w
	c, err := client.New(cfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	ctx := context.Background()
	o := native.Options{Name: "warnings", Settings: policies.NativeSettings{SysctlImage: "registry.example/ha-injector:v2"}}
	require.NoError(t, c.Create(ctx, native.MutatingPolicy(o)))
	require.NoError(t, c.Create(ctx, native.ValidatingPolicy(o)))

	setup := func(name string, spec v1alpha1.HAPolicySpec, labels map[string]string, invalid bool) {
		p := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
		if invalid {
			require.NoError(t, testenv.CreateUnchecked(ctx, c, p))
		} else {
			require.NoError(t, c.Create(ctx, p))
		}
		m, v := native.Bindings(o, name)
		require.NoError(t, c.Create(ctx, m))
		require.NoError(t, c.Create(ctx, v))
		all := map[string]string{policies.PolicyLabel: name}
		for k, v := range labels {
			all[k] = v
		}
		require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: all}}))
	}
	setup("w-default", v1alpha1.HAPolicySpec{}, nil, false)
	setup("w-audit", v1alpha1.HAPolicySpec{Mode: v1alpha1.ModeAudit}, nil, false)
	setup("w-baseline", v1alpha1.HAPolicySpec{}, map[string]string{policies.PodSecurityEnforceLabel: "baseline"}, false)
	setup("w-image", v1alpha1.HAPolicySpec{Sysctls: v1alpha1.SysctlsSpec{Image: "evil.example/root:1"}}, nil, false)
	setup("w-required", v1alpha1.HAPolicySpec{AntiAffinity: v1alpha1.AntiAffinitySpec{Type: v1alpha1.AntiAffinityRequired}}, nil, false)
	setup("w-invalid", v1alpha1.HAPolicySpec{Sysctls: v1alpha1.SysctlsSpec{Values: map[string]v1alpha1.SysctlValue{"kernel.core_pattern": "core"}}}, nil, true)

	create := func(ns string, owned bool) []string {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}}
		if owned {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-1", UID: "1b6f1f4e-1111-4c2a-9d55-00000000abcd", Controller: ptr.To(true)}}
		}
		w.Take()
		require.NoError(t, c.Create(ctx, p, client.DryRunAll))
		return w.Take()
	}
	// Each namespace's binding takes effect asynchronously.
	eventually := func(ns, want string) []string {
		var got []string
		require.Eventually(t, func() bool {
			got = create(ns, false)
			return strings.Contains(strings.Join(got, "\n"), want)
		}, 30*time.Second, 100*time.Millisecond, "%s: want a warning with %q, got %q", ns, want, got)
		return got
	}

	eventually("w-audit", "ha-injector: HAPolicy w-audit is in Audit mode: would apply antiAffinity, zoneSpread, tolerations, sysctls")
	eventually("w-baseline", `ha-injector: sysctls: skipped: namespace enforces Pod Security "baseline", which rejects privileged containers and unsafe sysctls: dropped net.ipv4.tcp_retries2=9`)
	eventually("w-image", `ha-injector: sysctls: skipped: no ha-sysctl init container from evil.example/root:1: HAPolicy "w-image" names it and this installation does not allow it (--allowed-sysctl-images); not set: net.ipv4.tcp_retries2=9`)
	eventually("w-required", "ha-injector: antiAffinity: note: Required made Preferred")
	eventually("w-invalid", "ha-injector: HAPolicy w-invalid is invalid: spec.sysctls.values")

	// Nothing to say: the default policy applied whole; and nothing to a controller.
	require.Eventually(t, func() bool {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "w-default", Name: "p", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}}
		require.NoError(t, c.Create(ctx, p, client.DryRunAll))
		return p.Annotations[policies.StatusAnnotation] != ""
	}, 30*time.Second, 100*time.Millisecond)
	assert.Empty(t, create("w-default", false))
	assert.Empty(t, create("w-baseline", true), "a controller's pod gets no warning")
}

// TestDefaultTolerationSecondsRunsFirst holds the fact native mode's toleration
// cap is built on: the API server's DefaultTolerationSeconds plugin has added
// its 300 s tolerations when a MutatingAdmissionPolicy sees the pod, so they
// are shortened in place, never added beside. A policy of the test's own
// writes down the tolerations it sees.
func TestDefaultTolerationSecondsRunsFirst(t *testing.T) {
	c, err := client.New(testenv.Start(t), client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	ctx := context.Background()
	seen := &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "seen-tolerations"},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}},
			}}},
			Mutations: []admissionregistrationv1.Mutation{{PatchType: admissionregistrationv1.PatchTypeJSONPatch, JSONPatch: &admissionregistrationv1.JSONPatch{
				Expression: `[JSONPatch{op: "add", path: "/metadata/annotations", value: {"seen": object.spec.?tolerations.orValue([]).map(t, t.key + "=" + string(t.tolerationSeconds)).join(",")}}]`,
			}}},
			FailurePolicy:      ptr.To(admissionregistrationv1.Fail),
			ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
		},
	}
	require.NoError(t, c.Create(ctx, seen))
	require.NoError(t, c.Create(ctx, &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "seen-tolerations"},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{PolicyName: "seen-tolerations",
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"seen": "tolerations"}}}},
	}))
	require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "seen-tolerations", Labels: map[string]string{"seen": "tolerations"}}}))
	var p *corev1.Pod
	require.Eventually(t, func() bool {
		p = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "seen-tolerations", Name: "p"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}}
		require.NoError(t, c.Create(ctx, p, client.DryRunAll))
		return p.Annotations["seen"] != ""
	}, 30*time.Second, 100*time.Millisecond)
	assert.Equal(t, policies.NotReadyTaint+"=300,"+policies.UnreachableTaint+"=300", p.Annotations["seen"])
}
