package doctor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/doctor"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
)

// TestInvalidStoredPolicyIsReported: a policy stored without today's CRD rules is a
// failure naming every rule it breaks, as the webhook refuses it.
func TestInvalidStoredPolicyIsReported(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}, Spec: v1alpha1.HAPolicySpec{Sysctls: v1alpha1.SysctlsSpec{
		Values: map[string]v1alpha1.SysctlValue{"kernel.modprobe": "/tmp/x", "vm.overcommit_memory": "1"},
	}}}
	require.NoError(t, testenv.CreateUnchecked(ctx, f.c, policy))
	t.Cleanup(func() { _ = f.c.Delete(ctx, policy) })

	c := one(t, f.run(t, doctor.Options{}), "policies")
	assert.Equal(t, doctor.Fail, c.Status)
	assert.Contains(t, c.Message, `HAPolicy "legacy" is invalid`)
	assert.Contains(t, c.Message, "spec.sysctls.values[kernel.modprobe]")
	assert.Contains(t, c.Message, "spec.sysctls.values[vm.overcommit_memory]")
	assert.Contains(t, c.Fix, "applies nothing of an invalid policy")
}

// TestUnwisePolicyIsWarnedAbout: a valid policy whose not-ready toleration is shorter than
// a kubelet hiccup is a warning naming the policy and the field, in the words preview and
// the chart's ValidatingAdmissionPolicy use.
func TestUnwisePolicyIsWarnedAbout(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "eager"}, Spec: v1alpha1.HAPolicySpec{Tolerations: v1alpha1.TolerationsSpec{
		NotReadySeconds: ptr.To[int64](10),
	}}}
	require.NoError(t, f.c.Create(ctx, policy))
	t.Cleanup(func() { _ = f.c.Delete(ctx, policy) })

	c := one(t, f.run(t, doctor.Options{}), "policies")
	assert.Equal(t, doctor.Warn, c.Status)
	assert.Contains(t, c.Message, "HAPolicy eager: spec.tolerations.notReadySeconds is 10, under 30: pods are evicted when a live kubelet reports NotReady for longer")
	assert.Contains(t, c.Fix, "30 s or more")
}

// TestPolicyImageNotAllowedIsReported: serve allows only its own image by default.
func TestPolicyImageNotAllowedIsReported(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "own-image"}, Spec: v1alpha1.HAPolicySpec{Sysctls: v1alpha1.SysctlsSpec{Image: "busybox:1.36"}}}
	require.NoError(t, f.c.Create(ctx, policy))
	t.Cleanup(func() { _ = f.c.Delete(ctx, policy) })

	c := one(t, f.run(t, doctor.Options{}), "policy-images")
	assert.Equal(t, doctor.Warn, c.Status)
	assert.Contains(t, c.Message, "own-image (busybox:1.36)")
	assert.Contains(t, c.Fix, "sysctlImage.allowed")
}

// TestPrivilegedTemplatesAreListed: a Deployment injected while its namespace allowed
// privileged pods, whose namespace then enforces baseline.
func TestPrivilegedTemplatesAreListed(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	require.NoError(t, f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "raised", Labels: map[string]string{
		policies.PolicyLabel: "default", policies.PodSecurityEnforceLabel: "privileged",
	}}}))
	t.Cleanup(func() { f.optOut(t, "raised") })
	require.NoError(t, localwebhook.WaitEffective(ctx, f.c, "raised", 30*time.Second))
	dep := workloads.Deployment("raised", "web")
	require.NoError(t, f.c.Create(ctx, dep))
	require.Equal(t, policies.SysctlContainerName, dep.Spec.Template.Spec.InitContainers[0].Name, "injected")

	before := f.run(t, doctor.Options{Namespace: "raised"})
	assert.Empty(t, checks(before, "privileged-templates"), "privileged pods still allowed")

	var ns corev1.Namespace
	require.NoError(t, f.c.Get(ctx, client.ObjectKey{Name: "raised"}, &ns))
	ns.Labels[policies.PodSecurityEnforceLabel] = "baseline"
	require.NoError(t, f.c.Update(ctx, &ns))

	c := one(t, f.run(t, doctor.Options{Namespace: "raised", Workloads: true}), "privileged-templates")
	assert.Equal(t, doctor.Warn, c.Status)
	assert.Contains(t, c.Message, "1 Deployments carry the privileged ha-sysctl init container")
	assert.Equal(t, []string{"raised/Deployment web"}, c.Items)
	assert.Contains(t, c.Fix, "rollout restart")
}
