package policies_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
)

func plainDeployment() *appsv1.Deployment {
	return workloads.Deployment("team-a", "web", workloads.Image("nginx:1.27"))
}

func injected(t *testing.T, ctx policies.Context, d *appsv1.Deployment) *appsv1.Deployment {
	t.Helper()
	m, err := policies.Mutate(ctx, d)
	require.NoError(t, err)
	require.True(t, m.Changed)
	return m.Object.(*appsv1.Deployment)
}

// TestUpdatesNeverStartARollout: on UPDATE, a pod template that differs from
// the stored one only by ha-injector's own injection is kept as stored.
func TestUpdatesNeverStartARollout(t *testing.T) {
	ctx := defaultCtx
	stored := injected(t, ctx, plainDeployment())

	t.Run("re-applying the manifest without the injection keeps the stored template", func(t *testing.T) {
		sent := plainDeployment() // what kubectl apply --server-side or kubectl replace sends
		m, err := policies.Mutate(updating(ctx, stored, sent), sent)
		require.NoError(t, err)
		assert.Equal(t, stored.Spec.Template, m.Object.(*appsv1.Deployment).Spec.Template)
	})

	t.Run("a relaxed policy does not reach a template that did not change", func(t *testing.T) {
		relaxed := v1alpha1.NewDefault()
		relaxed.Spec.Tolerations.NotReadySeconds = ptr.To[int64](120)
		ctx := ctx
		ctx.Policy = relaxed
		sent := stored.DeepCopy()
		sent.Spec.Replicas = ptr.To[int32](5)
		m, err := policies.Mutate(updating(ctx, stored, sent), sent)
		require.NoError(t, err)
		assert.Equal(t, stored.Spec.Template, m.Object.(*appsv1.Deployment).Spec.Template)
		assert.False(t, m.Changed)
	})

	t.Run("a Deployment created before its namespace opted in stays as it is until its template changes", func(t *testing.T) {
		old := plainDeployment()
		sent := plainDeployment()
		sent.Annotations = map[string]string{"team": "a"}
		m, err := policies.Mutate(updating(ctx, old, sent), sent)
		require.NoError(t, err)
		assert.False(t, m.Changed)

		sent.Spec.Template.Spec.Containers[0].Image = "nginx:1.28"
		m, err = policies.Mutate(updating(ctx, old, sent), sent)
		require.NoError(t, err)
		assert.NotEmpty(t, m.Object.(*appsv1.Deployment).Spec.Template.Spec.InitContainers, "a real template change gets the policy")
	})

	t.Run("a real template change gets the current policy", func(t *testing.T) {
		relaxed := v1alpha1.NewDefault()
		relaxed.Spec.Tolerations.NotReadySeconds = ptr.To[int64](120)
		ctx := ctx
		ctx.Policy = relaxed
		sent := stored.DeepCopy()
		sent.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] = "2026-12-01T10:00:00Z"
		m, err := policies.Mutate(updating(ctx, stored, sent), sent)
		require.NoError(t, err)
		var notReady int64
		for _, tol := range m.Object.(*appsv1.Deployment).Spec.Template.Spec.Tolerations {
			if tol.Key == policies.NotReadyTaint {
				notReady = *tol.TolerationSeconds
			}
		}
		assert.Equal(t, int64(120), notReady)
	})

	t.Run("a rollback to an existing ReplicaSet's template is left as sent", func(t *testing.T) {
		relaxed := v1alpha1.NewDefault()
		relaxed.Spec.Tolerations.NotReadySeconds = ptr.To[int64](120)
		ctx := ctx
		ctx.Policy = relaxed
		newer := stored.DeepCopy()
		newer.Spec.Template.Spec.Containers[0].Image = "nginx:1.28"
		newer = injected(t, ctx, newer)
		rs := stored.Spec.Template.DeepCopy()
		rs.Labels["pod-template-hash"] = "5d4c3b2a1"
		revisions := []corev1.PodTemplateSpec{*rs}
		sent := newer.DeepCopy()
		sent.Spec.Template = stored.Spec.Template // what kubectl rollout undo sends
		uctx := updating(ctx, newer, sent)
		uctx.Update.Revisions = revisions
		m, err := policies.Mutate(uctx, sent)
		require.NoError(t, err)
		assert.Equal(t, stored.Spec.Template, m.Object.(*appsv1.Deployment).Spec.Template, "the old revision, not re-injected with the relaxed policy")
	})
}

// updating is ctx for an UPDATE of the stored Deployment to sent.
func updating(ctx policies.Context, stored, sent *appsv1.Deployment) policies.Context {
	ctx.Update = policies.NewUpdate(&stored.Spec.Template, &sent.Spec.Template)
	return ctx
}

// TestStoredInjectionRoundTrips: the API server adds defaults to the injected
// init container (terminationMessagePath, imagePullPolicy); undoing and
// applying the same policy again must give back the stored template exactly,
// or every UPDATE would carry a patch.
func TestStoredInjectionRoundTrips(t *testing.T) {
	stored := injected(t, defaultCtx, plainDeployment())
	c := &stored.Spec.Template.Spec.InitContainers[0]
	c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	c.ImagePullPolicy = corev1.PullIfNotPresent
	sent := stored.DeepCopy()
	sent.Spec.Template.Spec.Containers[0].Image = "nginx:1.28" // a real change: undo, then apply
	m, err := policies.Mutate(defaultCtx, sent)
	require.NoError(t, err)
	assert.False(t, m.Changed, "the same injection, as stored")
}
