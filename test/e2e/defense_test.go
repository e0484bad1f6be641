package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

// TestAnInvalidStoredPolicyAppliesNothing: an HAPolicy stored while the CRD lacked its
// namespaced-sysctl rule (an older CRD kept by crds.upgrade=false) names a busybox image
// and two sysctls that would change the node. Applied, it would run
// `sysctl -w kernel.modprobe=... vm.overcommit_memory=1` privileged in every pod: the
// webhook applies nothing of it and says so.
func TestAnInvalidStoredPolicyAppliesNothing(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "legacy-broken"}, Spec: v1alpha1.HAPolicySpec{Sysctls: v1alpha1.SysctlsSpec{
		Method: v1alpha1.SysctlInitContainer, Image: "busybox:1.36",
		Values: map[string]v1alpha1.SysctlValue{"kernel.modprobe": "/tmp/x", "vm.overcommit_memory": "1"},
	}}}
	require.Error(t, f.client.Create(ctx, policy.DeepCopy(), client.DryRunAll), "today's CRD refuses it")
	require.NoError(t, testenv.CreateUnchecked(ctx, f.client, policy))
	t.Cleanup(func() { _ = f.client.Delete(ctx, policy) })
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "legacy-broken"})

	pod := newPod(ns, "web")
	require.NoError(t, f.client.Create(ctx, pod), "ha-injector's refusal never blocks a deploy")
	warned := strings.Join(f.warnings.Take(), "\n")
	assert.Contains(t, warned, `HAPolicy "legacy-broken" breaks 2 rule(s) of its CRD, so nothing of it is applied`)
	var got corev1.Pod
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(pod), &got))
	assert.Empty(t, got.Spec.InitContainers)
	assert.NotContains(t, got.Annotations, policies.StatusAnnotation)
	assert.Equal(t, map[string][]int64{policies.NotReadyTaint: {300}, policies.UnreachableTaint: {300}}, tolerationSeconds(&got))
}

// TestAPolicyImageTheInstallationDoesNotAllow: serve allows only its own image by
// default; a policy naming another gets no init container, and everything else.
func TestAPolicyImageTheInstallationDoesNotAllow(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "other-image"}, Spec: v1alpha1.HAPolicySpec{Sysctls: v1alpha1.SysctlsSpec{
		Method: v1alpha1.SysctlInitContainer, Image: "busybox:1.36",
	}}}
	require.NoError(t, f.client.Create(ctx, policy))
	t.Cleanup(func() { _ = f.client.Delete(ctx, policy) })
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "other-image"})

	pod := newPod(ns, "web")
	require.NoError(t, f.client.Create(ctx, pod))
	warned := strings.Join(f.warnings.Take(), "\n")
	assert.Contains(t, warned, `no ha-sysctl init container from busybox:1.36: HAPolicy "other-image" names it and this installation does not allow it`)
	var got corev1.Pod
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(pod), &got))
	assert.Empty(t, got.Spec.InitContainers)
	require.NotNil(t, got.Spec.SecurityContext)
	assert.Len(t, got.Spec.SecurityContext.Sysctls, 3, "the safe keepalive sysctls still apply")
	assert.Equal(t, map[string][]int64{policies.NotReadyTaint: {60}, policies.UnreachableTaint: {30}}, tolerationSeconds(&got), "and the tolerations")
	require.NotNil(t, got.Spec.Affinity, "and the anti-affinity")
}

// TestRequiredTermsOnlyWhereTheReplicasFit: under a Required policy, with two nodes, a
// StatefulSet's pod is judged by its StatefulSet's replicas (2: Required kept; 3:
// Preferred), and a Job's pod or a bare pod, whose replica count is unknown, gets
// Preferred: none stays Pending for want of a node.
func TestRequiredTermsOnlyWhereTheReplicasFit(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	for _, name := range []string{"e2e-node-a", "e2e-node-b"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
		if err := f.client.Create(ctx, node); err == nil {
			t.Cleanup(func() { _ = f.client.Delete(ctx, node) })
		}
	}
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "required"}, Spec: v1alpha1.HAPolicySpec{
		AntiAffinity: v1alpha1.AntiAffinitySpec{Type: v1alpha1.AntiAffinityRequired},
	}}
	require.NoError(t, f.client.Create(ctx, policy))
	t.Cleanup(func() { _ = f.client.Delete(ctx, policy) })
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "required"})

	required := func(pod *corev1.Pod) bool {
		a := pod.Spec.Affinity
		return a != nil && a.PodAntiAffinity != nil && len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) == 1
	}
	preferred := func(pod *corev1.Pod) bool {
		a := pod.Spec.Affinity
		return a != nil && a.PodAntiAffinity != nil && len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 1
	}
	for replicas, wantRequired := range map[int32]bool{2: true, 3: false} {
		name := map[int32]string{2: "db-two", 3: "db-three"}[replicas]
		sts := &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.StatefulSetSpec{
				Replicas: ptr.To(replicas),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "postgres:17"}}},
				},
			},
		}
		require.NoError(t, f.client.Create(ctx, sts))
		// As the StatefulSet controller creates it (envtest runs no controllers).
		pod := newPod(ns, name+"-0")
		pod.Labels = map[string]string{"app": name, "statefulset.kubernetes.io/pod-name": name + "-0"}
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: name, UID: sts.UID, Controller: ptr.To(true)}}
		require.NoError(t, f.client.Create(ctx, pod))
		assert.Equal(t, wantRequired, required(pod), "StatefulSet of %d replicas on 2 nodes: Required", replicas)
		assert.Equal(t, !wantRequired, preferred(pod), "StatefulSet of %d replicas on 2 nodes: Preferred", replicas)
	}

	job := newPod(ns, "report-x7k2p")
	job.Labels = map[string]string{"job-name": "report"}
	job.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: "report", UID: "6a1f0c7e-2222-4b3c-8e44-000000000004", Controller: ptr.To(true)}}
	require.NoError(t, f.client.Create(ctx, job))
	assert.True(t, preferred(job), "a Job's pod gets Preferred")
	assert.False(t, required(job))

	f.warnings.Take()
	bare := newPod(ns, "worker")
	require.NoError(t, f.client.Create(ctx, bare))
	assert.True(t, preferred(bare), "a bare pod gets Preferred")
	assert.Contains(t, strings.Join(f.warnings.Take(), "\n"), "Required made Preferred: the number of replicas of this pod's workload is unknown (a pod without a controller)")
}
