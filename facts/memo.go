package facts

import (
	"context"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Memo returns a Source that reads each namespace, policy, owner and domain
// count from src once, for callers that gather the facts of many objects
// from a live client (doctor, preview --cluster). Revisions are not kept.
func Memo(src Source) Source { return &memo{src: src, values: map[string]memoValue{}} }

type memo struct {
	src    Source
	mu     sync.Mutex
	values map[string]memoValue
}

type memoValue struct {
	v     any
	known bool
	err   error
}

func (m *memo) once(key string, read func() (any, bool, error)) (any, bool, error) {
	m.mu.Lock()
	if v, ok := m.values[key]; ok {
		m.mu.Unlock()
		return v.v, v.known, v.err
	}
	m.mu.Unlock()
	v, known, err := read()
	m.mu.Lock()
	m.values[key] = memoValue{v, known, err}
	m.mu.Unlock()
	return v, known, err
}

func (m *memo) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	v, _, err := m.once("namespace/"+name, func() (any, bool, error) {
		labels, err := m.src.NamespaceLabels(ctx, name)
		return labels, true, err
	})
	labels, _ := v.(map[string]string)
	return labels, err
}

func (m *memo) Policy(ctx context.Context, name string) (*v1alpha1.HAPolicy, error) {
	v, _, err := m.once("policy/"+name, func() (any, bool, error) {
		p, err := m.src.Policy(ctx, name)
		return p, true, err
	})
	p, _ := v.(*v1alpha1.HAPolicy)
	return p, err
}

func (m *memo) Owner(ctx context.Context, namespace string, ref *metav1.OwnerReference) (*policies.Owner, error) {
	v, _, err := m.once("owner/"+namespace+"/"+ref.Kind+"/"+ref.Name, func() (any, bool, error) {
		o, err := m.src.Owner(ctx, namespace, ref)
		return o, true, err
	})
	o, _ := v.(*policies.Owner)
	return o, err
}

func (m *memo) TopologyDomains(ctx context.Context, key string) (int, bool, error) {
	v, known, err := m.once("domains/"+key, func() (any, bool, error) { return m.src.TopologyDomains(ctx, key) })
	n, _ := v.(int)
	return n, known, err
}

func (m *memo) Revisions(ctx context.Context, namespace string, d *appsv1.Deployment, tmpl *corev1.PodTemplateSpec) ([]corev1.PodTemplateSpec, error) {
	return m.src.Revisions(ctx, namespace, d, tmpl)
}
