package policies

import (
	"encoding/json"
	"fmt"

	"gomodules.xyz/jsonpatch/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Mutation is the outcome of Mutate.
type Mutation struct {
	// Object is a mutated copy of the input (*corev1.Pod or *appsv1.Deployment);
	// when nothing applied it equals the input.
	Object runtime.Object
	// Decisions lists what the engine decided, feature by feature.
	Decisions []Decision
	// Patch turns the input into Object. It is empty when nothing changed.
	// It is computed between the two typed objects, never against the raw
	// request, so it does not remove fields this build's API types lack.
	Patch []jsonpatch.Operation
}

// Status is the JSON recorded in the StatusAnnotation of a mutated object.
type Status struct {
	// Policy is the name of the HAPolicy that was applied.
	Policy string `json:"policy"`
	// Applied lists the features that changed the object.
	Applied []Feature `json:"applied,omitempty"`
	// Skipped maps each feature that did not change the object to why.
	Skipped map[Feature]string `json:"skipped,omitempty"`
}

// Mutate applies ctx to a *corev1.Pod or an *appsv1.Deployment. The input is
// not modified. A Deployment's pod template gets the settings (so its pods
// arrive compliant); the StatusAnnotation goes on the object itself.
func Mutate(ctx Context, obj runtime.Object) (*Mutation, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		w := Workload{Kind: KindPod, Annotations: o.Annotations, OwnerReferences: o.OwnerReferences, Owner: ctx.Owner}
		if ctx.Owner != nil {
			w.Replicas = ctx.Owner.Replicas
		}
		// The engine reads only the labels and annotations of the template.
		tmpl := &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: o.Labels, Annotations: o.Annotations}, Spec: o.Spec}
		res := MutateTemplate(ctx, w, tmpl)
		out := &corev1.Pod{TypeMeta: o.TypeMeta, ObjectMeta: *o.ObjectMeta.DeepCopy(), Spec: res.Template.Spec, Status: *o.Status.DeepCopy()}
		return finish(ctx, res, o, out, "/spec", func(p *corev1.Pod) *corev1.PodSpec { return &p.Spec })
	case *appsv1.Deployment:
		w := Workload{Kind: KindDeployment, Annotations: o.Annotations, Selector: o.Spec.Selector, Replicas: o.Spec.Replicas}
		res := MutateTemplate(ctx, w, &o.Spec.Template)
		out := &appsv1.Deployment{TypeMeta: o.TypeMeta, ObjectMeta: *o.ObjectMeta.DeepCopy(), Spec: *o.Spec.DeepCopy(), Status: *o.Status.DeepCopy()}
		out.Spec.Template = res.Template
		return finish(ctx, res, o, out, "/spec/template/spec", func(d *appsv1.Deployment) *corev1.PodSpec { return &d.Spec.Template.Spec })
	case nil:
		return nil, fmt.Errorf("no object to mutate")
	}
	return nil, fmt.Errorf("ha-injector mutates Pods and Deployments, not %T", obj)
}

// object is a pointer to a Kubernetes object type T.
type object[T any] interface {
	*T
	runtime.Object
	metav1.Object
}

// finish records the StatusAnnotation on a changed out and computes the
// patch from in to out. spec finds the pod spec at specPath.
func finish[T any, P object[T]](ctx Context, res Result, in, out P, specPath string, spec func(P) *corev1.PodSpec) (*Mutation, error) {
	m := &Mutation{Object: out, Decisions: res.Decisions}
	if !res.Changed {
		return m, nil
	}
	status, err := json.Marshal(statusOf(ctx, res.Decisions))
	if err != nil {
		return nil, err
	}
	annotations := out.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[StatusAnnotation] = string(status)
	out.SetAnnotations(annotations)

	// Shallow copies without managedFields: they can be large and
	// ha-injector never changes them.
	before, after := *in, *out
	P(&before).SetManagedFields(nil)
	P(&after).SetManagedFields(nil)
	var insert *jsonpatch.Operation
	if res.insertedInitContainer {
		insert = takeInsertion(specPath, spec(&before), spec(&after))
	}
	m.Patch, err = createPatch(&before, &after, insert)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func statusOf(ctx Context, decisions []Decision) Status {
	s := Status{Policy: "default"}
	if ctx.Policy != nil {
		s.Policy = ctx.Policy.Name
	}
	s.Applied = AppliedFeatures(decisions)
	applied := map[Feature]bool{}
	for _, f := range s.Applied {
		applied[f] = true
	}
	for _, d := range decisions {
		// A feature can be applied in part (some sysctls dropped under Pod
		// Security): its Skipped decisions are still recorded.
		if d.Action != Skipped && (d.Action != Kept || applied[d.Feature]) {
			continue
		}
		if s.Skipped == nil {
			s.Skipped = map[Feature]string{}
		}
		if prev, ok := s.Skipped[d.Feature]; ok {
			s.Skipped[d.Feature] = prev + "; " + d.Reason
		} else {
			s.Skipped[d.Feature] = d.Reason
		}
	}
	return s
}

// AppliedFeatures lists, in order, the features with an Applied decision
// (under Audit: the features that would be applied).
func AppliedFeatures(decisions []Decision) []Feature {
	var out []Feature
	seen := map[Feature]bool{}
	for _, d := range decisions {
		if d.Action == Applied && !seen[d.Feature] {
			seen[d.Feature] = true
			out = append(out, d.Feature)
		}
	}
	return out
}
