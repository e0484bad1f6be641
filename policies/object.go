package policies

import (
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Mutation is the outcome of Mutate.
type Mutation struct {
	// Object is the object as the API server should store it: the input
	// itself when nothing changed, otherwise a copy that shares every part
	// the engine does not change with the input (*corev1.Pod or
	// *appsv1.Deployment).
	Object runtime.Object
	// Decisions lists what the engine decided, feature by feature.
	Decisions []Decision
	// Changed is true when Object differs from the input.
	Changed bool
}

// Mutate applies ctx to a *corev1.Pod or an *appsv1.Deployment. The input is
// not modified. A Deployment's pod template gets the settings (so its pods
// arrive compliant) and the Record; the Record also goes on the Deployment,
// with the InjectedLabel. Turning the result into a JSON patch is the
// webhook's job (webhook/patch), from the registered injections' Parts.
func Mutate(ctx Context, obj runtime.Object) (*Mutation, error) {
	o, err := ObjectOf(obj)
	if err != nil {
		return nil, err
	}
	return MutateObject(ctx, o), nil
}

// MutateObject is Mutate for an object already decoded (Decode, ObjectOf).
func MutateObject(ctx Context, o *Object) *Mutation {
	obj := o.Object
	if d, refused := refusePolicy(ctx); refused {
		return &Mutation{Object: obj, Decisions: []Decision{d}}
	}
	switch o.Kind {
	case KindDeployment:
		d := obj.(*appsv1.Deployment)
		res := mutateDeployment(ctx, o)
		out := *d
		out.Labels, out.Annotations = maps.Clone(d.Labels), maps.Clone(d.Annotations)
		out.Spec.Template = res.Template
		if defaulted(ctx.Policy).Spec.Mode != v1alpha1.ModeAudit || ctx.NotOptedIn {
			markDeployment(&out, res)
		}
		// markDeployment changes nothing of the metadata but these two.
		changed := res.Changed || !maps.Equal(out.Labels, d.Labels) || !maps.Equal(out.Annotations, d.Annotations)
		if !changed {
			return &Mutation{Object: d, Decisions: res.Decisions}
		}
		return &Mutation{Object: &out, Decisions: res.Decisions, Changed: true}
	default:
		pod := obj.(*corev1.Pod)
		res := MutateTemplate(ctx, o.Workload(ctx.Owner), o.Template)
		if !res.Changed {
			return &Mutation{Object: pod, Decisions: res.Decisions}
		}
		out := *pod
		out.Annotations = res.Template.Annotations
		out.Spec = res.Template.Spec
		return &Mutation{Object: &out, Decisions: res.Decisions, Changed: true}
	}
}

// mutateDeployment decides a Deployment's pod template. On an UPDATE it never
// starts a rollout by itself: a template equal to the stored one apart from
// ha-injector's own recorded injection is left as stored, and a template equal
// to one of the Deployment's ReplicaSets' (a rollback) is left as sent.
func mutateDeployment(ctx Context, o *Object) Result {
	tmpl := o.Template
	u := ctx.Update
	if u == nil {
		u = &Update{}
	}
	if u.Old != nil && !u.TemplateChanged {
		res := Result{Template: ownTouched(u.Old), Record: ReadRecord(u.Old.Annotations)}
		res.Decisions = []Decision{{Feature: FeatureWorkload, Action: Kept, Reason: "pod template unchanged apart from ha-injector's own injection: kept as stored, so no rollout starts"}}
		// The rest of the template equals the stored one: TemplateChanged
		// compared all of it but the parts ownTouched owns.
		res.Changed = !sameTouched(&res.Template, tmpl)
		return res
	}
	for _, rev := range u.Revisions {
		if sameRevision(&rev, tmpl) {
			res := Result{Template: ownTouched(tmpl), Record: ReadRecord(tmpl.Annotations)}
			res.Decisions = []Decision{{Feature: FeatureWorkload, Action: Kept, Reason: "pod template of an existing ReplicaSet (a rollback): left as sent"}}
			return res
		}
	}
	return MutateTemplate(ctx, o.Workload(nil), tmpl)
}

// TemplateChanged reports whether a Deployment UPDATE changes the pod
// template, ha-injector's own recorded injection aside: each side without
// what its record says was injected, and without the record itself.
func TemplateChanged(old, updated *corev1.PodTemplateSpec) bool {
	return !equality.Semantic.DeepEqual(withoutInjection(old), withoutInjection(updated))
}

func withoutInjection(t *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
	out := ownTouched(t)
	undo(ReadRecord(out.Annotations), &out.Spec)
	dropRecord(&out.ObjectMeta)
	return &out
}

// sameRevision reports whether tmpl is a ReplicaSet's template: equal apart
// from the pod-template-hash label the Deployment controller adds.
func sameRevision(rs, tmpl *corev1.PodTemplateSpec) bool {
	withoutHash, t := *rs, *tmpl
	withoutHash.Labels = maps.Clone(rs.Labels)
	delete(withoutHash.Labels, templateHashLabel)
	if len(withoutHash.Labels) == 0 {
		withoutHash.Labels = nil
	}
	if len(t.Labels) == 0 {
		t.Labels = nil
	}
	return equality.Semantic.DeepEqual(&withoutHash, &t)
}

// markDeployment puts the template's record on the Deployment and sets or
// clears the InjectedLabel to match.
func markDeployment(d *appsv1.Deployment, res Result) {
	if res.Record != nil {
		setAnnotation(&d.ObjectMeta, StatusAnnotation, res.Record.encode())
		if d.Labels == nil {
			d.Labels = map[string]string{}
		}
		d.Labels[InjectedLabel] = "true"
		return
	}
	if res.Undone || ReadRecord(d.Annotations) != nil {
		dropRecord(&d.ObjectMeta)
	} else if len(d.Annotations) == 0 {
		d.Annotations = nil
	}
	delete(d.Labels, InjectedLabel)
	if len(d.Labels) == 0 {
		d.Labels = nil
	}
}
