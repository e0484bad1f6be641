// Package workloads builds the Deployments the tests create: one builder with the
// shape every test starts from (its own app label, selected by the Deployment, one
// container), and options for what a test changes.
package workloads

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// DefaultImage is the image of the one container of a Deployment built with no
// PodSpec or Image option.
const DefaultImage = "registry.k8s.io/pause:3.10"

// Option changes a Deployment that Deployment builds.
type Option func(*appsv1.Deployment)

// Deployment is a Deployment named name in ns as a manifest writes it (apiVersion
// and kind set): 3 replicas, selector and pod template labels app=name, and one
// container "app" running DefaultImage; then each option, in order.
func Deployment(ns, name string, opts ...Option) *appsv1.Deployment {
	d := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: DefaultImage}}},
			},
		},
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Replicas sets spec.replicas.
func Replicas(n int32) Option {
	return func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To(n) }
}

// Image sets the image of the pod template's first container.
func Image(image string) Option {
	return func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = image }
}

// PodSpec replaces the pod template's spec with a copy of spec.
func PodSpec(spec corev1.PodSpec) Option {
	return func(d *appsv1.Deployment) { d.Spec.Template.Spec = *spec.DeepCopy() }
}
