package workloads

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestDeploymentSelectsItsOwnPods(t *testing.T) {
	d := Deployment("team-a", "web")
	assert.Equal(t, metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, d.TypeMeta)
	assert.Equal(t, "team-a", d.Namespace)
	assert.Equal(t, "web", d.Name)
	assert.Equal(t, int32(3), *d.Spec.Replicas)
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	require.NoError(t, err)
	assert.True(t, selector.Matches(labels.Set(d.Spec.Template.Labels)), "the selector matches the template's labels, as the API server requires")
	assert.Equal(t, []corev1.Container{{Name: "app", Image: DefaultImage}}, d.Spec.Template.Spec.Containers)

	other := Deployment("team-a", "db")
	assert.False(t, selector.Matches(labels.Set(other.Spec.Template.Labels)), "nor another Deployment's pods")
}

func TestOptionsApplyInOrder(t *testing.T) {
	spec := corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: "busybox:1.37"}}}
	d := Deployment("ns", "probe", Replicas(1), PodSpec(spec), Image("busybox:1.36"))
	assert.Equal(t, int32(1), *d.Spec.Replicas)
	assert.Equal(t, []corev1.Container{{Name: "probe", Image: "busybox:1.36"}}, d.Spec.Template.Spec.Containers)
	assert.Equal(t, "busybox:1.37", spec.Containers[0].Image, "the caller's spec is not changed")
}
