package preview

import (
	"encoding/json"
	"fmt"
	"maps"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/webhook/patch"
)

// decodeDocument decodes a document of a kind the engine mutates (a v1 Pod or an
// apps/v1 Deployment) as the webhook decodes a request's object; nil for any
// other kind. A document that cannot be decoded is an error naming the field at
// fault.
func decodeDocument(doc []byte) (*policies.Object, error) {
	var meta metav1.TypeMeta
	if err := json.Unmarshal(doc, &meta); err != nil {
		return nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if meta.Kind == "" {
		return nil, fmt.Errorf("field kind is missing")
	}
	if meta.APIVersion == "" {
		return nil, fmt.Errorf("field apiVersion is missing")
	}
	kind, ok := policies.KindOf(meta.APIVersion, meta.Kind)
	if !ok {
		return nil, nil
	}
	obj, err := policies.Decode(kind, doc)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", meta.Kind, err)
	}
	return obj, nil
}

// Document applies ctx to one JSON document on the webhook's path: a v1 Pod or
// an apps/v1 Deployment is decoded as the webhook decodes a request's object,
// mutated with policies.Mutate, and the patch webhook/patch builds is applied to
// the document as it was read, keeping the order of its keys, so the output
// differs from the input only by the injection. Any other kind is returned
// unchanged with a nil Mutation. A document that cannot be decoded is an error
// naming the field at fault.
func Document(ctx policies.Context, doc []byte) ([]byte, *policies.Mutation, error) {
	return document(ctx, doc, false)
}

// document is Document; native writes the record as native mode's admission
// policy does (NativeForm).
func document(ctx policies.Context, doc []byte, native bool) ([]byte, *policies.Mutation, error) {
	obj, err := decodeDocument(doc)
	if err != nil || obj == nil {
		if err == nil {
			return doc, nil, nil
		}
		return nil, nil, err
	}
	m := policies.MutateObject(ctx, obj)
	if native {
		NativeForm(m)
	}
	if !m.Changed {
		return doc, m, nil
	}
	ops, err := patch.BuildObject(doc, obj, m.Object)
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
// the check of a patch: patch.Build emits operations only where their parents
// exist.
func apply(doc []byte, ops []jsonpatch.Operation) ([]byte, error) {
	if len(ops) == 0 {
		return doc, nil
	}
	raw, err := patch.Encode(ops)
	if err != nil {
		return nil, err
	}
	p, err := jsonpatchapply.DecodePatch(raw)
	if err != nil {
		return nil, err
	}
	return p.Apply(doc)
}

// NativeForm turns a pod's mutation into what native mode's admission policy
// stores: the same injections, with the record it writes (the policy and the
// features applied, "native": true; policies.NativeRecord).
func NativeForm(m *policies.Mutation) {
	pod, ok := m.Object.(*corev1.Pod)
	if !ok || !m.Changed {
		return
	}
	rec := policies.ReadRecord(pod.Annotations)
	if rec == nil {
		return
	}
	annotations := maps.Clone(pod.Annotations)
	annotations[policies.StatusAnnotation] = policies.NativeRecord(rec.Policy, rec.Applied)
	pod.Annotations = annotations
}
