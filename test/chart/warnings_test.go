package chart

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

// policyMessages are the warnings without the prefix the API server puts before a
// ValidatingAdmissionPolicy's message ("Validation failed for ValidatingAdmissionPolicy
// 'NAME' with binding 'NAME': "); nil when there were none.
func policyMessages(warnings []string) []string {
	var out []string
	for _, text := range warnings {
		if i := strings.Index(text, "': "); strings.HasPrefix(text, "Validation failed for ValidatingAdmissionPolicy") && i > 0 {
			text = text[i+3:]
		}
		out = append(out, text)
	}
	return out
}

// TestChartWarnsAboutHAPolicies installs the chart's ValidatingAdmissionPolicy for
// HAPolicies in a real kube-apiserver and applies policies to it: the warnings kubectl
// would print are, word for word, the ones HAPolicy.Warnings gives preview and doctor for
// the policy as the API server stored it (CRD defaults applied), on create and on update.
func TestChartWarnsAboutHAPolicies(t *testing.T) {
	cfg := rest.CopyConfig(testenv.Start(t))
	got := &controlplane.Warnings{}
	cfg.WarningHandler = got
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	require.NoError(t, err)
	ctx := context.Background()

	r, err := render(t, ``)
	require.NoError(t, err)
	name := release + "-hapolicy-warnings"
	policy := typed[admissionregistrationv1.ValidatingAdmissionPolicy](t, r.Get("ValidatingAdmissionPolicy", name))
	binding := typed[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, r.Get("ValidatingAdmissionPolicyBinding", name))
	assert.Equal(t, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Warn}, binding.Spec.ValidationActions, "advice: nothing is denied")
	for _, obj := range []client.Object{policy, binding} {
		require.NoError(t, c.Create(ctx, obj))
		t.Cleanup(func() { _ = c.Delete(context.Background(), obj) })
	}

	hapolicy := func(name string, tolerations v1alpha1.TolerationsSpec) *v1alpha1.HAPolicy {
		return &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.HAPolicySpec{Tolerations: tolerations}}
	}
	// The policies take effect a moment after they are created: wait (bounded) until a
	// policy that must be warned about is.
	probe := hapolicy("probe", v1alpha1.TolerationsSpec{NotReadySeconds: ptr[int64](0)})
	deadline := time.Now().Add(30 * time.Second)
	for {
		require.NoError(t, c.Create(ctx, probe.DeepCopy(), client.DryRunAll))
		if len(got.Take()) > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the chart's ValidatingAdmissionPolicy never warned")
		time.Sleep(200 * time.Millisecond)
	}

	// expected are Go's warnings for the policy the API server stored.
	expected := func(stored *v1alpha1.HAPolicy) []string {
		p := stored.DeepCopy()
		p.Default()
		return p.Warnings()
	}
	for _, tc := range []struct {
		name        string
		tolerations v1alpha1.TolerationsSpec
		warned      bool
	}{
		{name: "no tolerations field: the defaults"},
		{name: "a not-ready toleration of 30 s", tolerations: v1alpha1.TolerationsSpec{NotReadySeconds: ptr[int64](30)}},
		{name: "a not-ready toleration of 29 s", tolerations: v1alpha1.TolerationsSpec{NotReadySeconds: ptr[int64](29)}, warned: true},
		{name: "a not-ready toleration of 0 s", tolerations: v1alpha1.TolerationsSpec{NotReadySeconds: ptr[int64](0)}, warned: true},
		{name: "an unreachable toleration of 0 s", tolerations: v1alpha1.TolerationsSpec{UnreachableSeconds: ptr[int64](0)}, warned: true},
		{name: "an unreachable toleration of 1 s", tolerations: v1alpha1.TolerationsSpec{UnreachableSeconds: ptr[int64](1)}},
		{name: "both", tolerations: v1alpha1.TolerationsSpec{NotReadySeconds: ptr[int64](5), UnreachableSeconds: ptr[int64](0)}, warned: true},
		{name: "tolerations not injected", tolerations: v1alpha1.TolerationsSpec{Enabled: ptr(false), NotReadySeconds: ptr[int64](0), UnreachableSeconds: ptr[int64](0)}},
		{name: "tolerations injected, said so", tolerations: v1alpha1.TolerationsSpec{Enabled: ptr(true), NotReadySeconds: ptr[int64](10)}, warned: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := hapolicy("warnings-case", tc.tolerations)
			require.NoError(t, c.Create(ctx, p, client.DryRunAll))
			assert.Equal(t, expected(p), policyMessages(got.Take()))
			assert.Equal(t, tc.warned, len(expected(p)) > 0, "the case tests what its name says")
		})
	}

	t.Run("an update that makes a policy unwise", func(t *testing.T) {
		p := hapolicy("warnings-update", v1alpha1.TolerationsSpec{})
		require.NoError(t, c.Create(ctx, p))
		t.Cleanup(func() { _ = c.Delete(context.Background(), p) })
		assert.Empty(t, policyMessages(got.Take()))
		p.Spec.Tolerations.NotReadySeconds = ptr[int64](15)
		require.NoError(t, c.Update(ctx, p))
		want := expected(p)
		require.Len(t, want, 1)
		assert.Equal(t, want, policyMessages(got.Take()))
	})
}
