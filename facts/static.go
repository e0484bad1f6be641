package facts

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Static is a Source of facts given up front, as offline preview takes them
// from its flags: every namespace has Labels and names Policy; a Pod's owner
// is Owner; the domain counts are those of TopologyDomains (a key not there
// is unknown); and there are no revisions to roll back to.
type Static struct {
	Labels          map[string]string
	Policy          *v1alpha1.HAPolicy
	Owner           *policies.Owner
	TopologyDomains map[string]int
}

// Source returns s as a Source.
func (s Static) Source() Source { return staticSource{s} }

type staticSource struct{ Static }

var _ Source = staticSource{}

func (s staticSource) NamespaceLabels(context.Context, string) (map[string]string, error) {
	return s.Static.Labels, nil
}

func (s staticSource) Policy(_ context.Context, name string) (*v1alpha1.HAPolicy, error) {
	if s.Static.Policy == nil || s.Static.Policy.Name != name {
		return nil, fmt.Errorf("no HAPolicy %q", name)
	}
	return s.Static.Policy, nil
}

func (s staticSource) Owner(context.Context, string, *metav1.OwnerReference) (*policies.Owner, error) {
	return s.Static.Owner, nil
}

func (s staticSource) TopologyDomains(_ context.Context, key string) (int, bool, error) {
	n, ok := s.Static.TopologyDomains[key]
	return n, ok, nil
}

func (s staticSource) Revisions(context.Context, string, *appsv1.Deployment, *corev1.PodTemplateSpec) ([]corev1.PodTemplateSpec, error) {
	return nil, nil
}
