package patch

import (
	"encoding/json"
	"fmt"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"

	"github.com/ha-injector/ha-injector/policies"
)

// Document applies ctx to one JSON document as `ha-injector preview` does,
// on the webhook's path: a v1 Pod or an apps/v1 Deployment is decoded as the
// webhook decodes a request's object, mutated with policies.Mutate, and the
// patch Build gives applied to the document as it was read, keeping the order
// of its keys, so the output differs from the input only by the injection.
// Any other kind is returned unchanged with a nil Mutation. A document that
// cannot be decoded is an error naming the field at fault.
func Document(ctx policies.Context, doc []byte) ([]byte, *policies.Mutation, error) {
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
	m, err := policies.Mutate(ctx, obj)
	if err != nil {
		return nil, nil, err
	}
	if !m.Changed {
		return doc, m, nil
	}
	ops, err := Build(doc, obj, m.Object)
	if err != nil {
		return nil, nil, err
	}
	out, err := apply(doc, ops)
	if err != nil {
		return nil, nil, fmt.Errorf("applying the patch: %w", err)
	}
	return out, m, nil
}

// apply applies ops to doc keeping the order of its keys (evanphx/json-patch
// v5), as preview prints it. Unlike the API server's application it is not
// the check of a patch: Build already emits operations only where their
// parents exist.
func apply(doc []byte, ops []jsonpatch.Operation) ([]byte, error) {
	if len(ops) == 0 {
		return doc, nil
	}
	raw, err := Encode(ops)
	if err != nil {
		return nil, err
	}
	p, err := jsonpatchapply.DecodePatch(raw)
	if err != nil {
		return nil, err
	}
	return p.Apply(doc)
}
