package policies

import (
	"encoding/json"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// MutateDocument applies ctx to one JSON document as `ha-injector preview`
// does: a v1 Pod or an apps/v1 Deployment is decoded, mutated with Mutate and
// the resulting patch applied to the document as it was read, so the output
// differs from the input only by the injection. Any other kind is returned
// unchanged with a nil Mutation. A document that cannot be decoded is an
// error naming the field at fault.
func MutateDocument(ctx Context, doc []byte) ([]byte, *Mutation, error) {
	var meta metav1.TypeMeta
	if err := json.Unmarshal(doc, &meta); err != nil {
		return nil, nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if meta.Kind == "" {
		return nil, nil, fmt.Errorf("field kind is missing")
	}
	if meta.APIVersion == "" {
		return nil, nil, fmt.Errorf("field apiVersion is missing")
	}

	var obj runtime.Object
	switch {
	case meta.APIVersion == "v1" && meta.Kind == "Pod":
		obj = &corev1.Pod{}
	case meta.APIVersion == "apps/v1" && meta.Kind == "Deployment":
		obj = &appsv1.Deployment{}
	default:
		return doc, nil, nil
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(doc, obj); err != nil {
		return nil, nil, fmt.Errorf("decoding %s: %w", meta.Kind, err)
	}
	m, err := Mutate(ctx, obj)
	if err != nil {
		return nil, nil, err
	}
	out, err := applyPatch(doc, m.Patch, true)
	if err != nil {
		return nil, nil, fmt.Errorf("applying the patch: %w", err)
	}
	return out, m, nil
}

// ParsePolicy decodes one HAPolicy from YAML or JSON, strictly (an unknown or
// mistyped field is an error naming it), then defaults and validates it as
// the API server would. The error lists every invalid field.
func ParsePolicy(data []byte) (*v1alpha1.HAPolicy, error) {
	doc, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var p v1alpha1.HAPolicy
	strict, err := kjson.UnmarshalStrict(doc, &p)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	if p.APIVersion != v1alpha1.GroupVersion.String() || p.Kind != "HAPolicy" {
		return nil, fmt.Errorf("want apiVersion %s and kind HAPolicy, got apiVersion %q and kind %q", v1alpha1.GroupVersion, p.APIVersion, p.Kind)
	}
	p.Default()
	if errs := p.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("invalid HAPolicy %q: %w", p.Name, errs.ToAggregate())
	}
	return &p, nil
}
