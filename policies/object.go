package policies

import (
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
// webhook's job (webhook/patch), from the parts listed in TouchedParts.
func Mutate(ctx Context, obj runtime.Object) (*Mutation, error) {
	if obj != nil {
		if d, refused := refusePolicy(ctx); refused {
			return &Mutation{Object: obj, Decisions: []Decision{d}}, nil
		}
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		w := Workload{Kind: KindPod, Annotations: o.Annotations, OwnerReferences: o.OwnerReferences, Owner: ctx.Owner}
		if ctx.Owner != nil {
			w.Replicas = ctx.Owner.Replicas
		}
		// The engine reads only the labels and annotations of the template.
		tmpl := &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: o.Labels, Annotations: o.Annotations}, Spec: o.Spec}
		res := MutateTemplate(ctx, w, tmpl)
		if !res.Changed {
			return &Mutation{Object: o, Decisions: res.Decisions}, nil
		}
		out := *o
		out.Annotations = res.Template.Annotations
		out.Spec = res.Template.Spec
		return &Mutation{Object: &out, Decisions: res.Decisions, Changed: true}, nil
	case *appsv1.Deployment:
		res := mutateDeployment(ctx, o)
		out := *o
		out.Labels, out.Annotations = maps.Clone(o.Labels), maps.Clone(o.Annotations)
		out.Spec.Template = res.Template
		if defaulted(ctx.Policy).Spec.Mode != v1alpha1.ModeAudit || ctx.NotOptedIn {
			markDeployment(&out, res)
		}
		// markDeployment changes nothing of the metadata but these two.
		changed := res.Changed || !maps.Equal(out.Labels, o.Labels) || !maps.Equal(out.Annotations, o.Annotations)
		if !changed {
			return &Mutation{Object: o, Decisions: res.Decisions}, nil
		}
		return &Mutation{Object: &out, Decisions: res.Decisions, Changed: true}, nil
	case nil:
		return nil, fmt.Errorf("no object to mutate")
	}
	return nil, fmt.Errorf("ha-injector mutates Pods and Deployments, not %T", obj)
}

// NeedsTopologyDomains reports whether deciding the anti-affinity of a
// workload of this kind needs the number of topology domains of the
// policy's topology key (Cluster.TopologyDomains): only for an enabled
// Required policy and a workload whose replica count is known (a
// Deployment, or a Pod whose owner gave it). The webhook lists nodes only then.
func NeedsTopologyDomains(policy *v1alpha1.HAPolicy, kind Kind, owner *Owner) (topologyKey string, needed bool) {
	a := defaulted(policy).Spec.AntiAffinity
	replicasKnown := kind == KindDeployment || (owner != nil && owner.Replicas != nil)
	if !replicasKnown || a.Type != v1alpha1.AntiAffinityRequired || !enabled(a.Enabled) {
		return "", false
	}
	return a.TopologyKey, true
}

// mutateDeployment decides a Deployment's pod template. On an UPDATE it never
// starts a rollout by itself: a template equal to the stored one apart from
// ha-injector's own recorded injection is left as stored, and a template equal
// to one of the Deployment's ReplicaSets' (a rollback) is left as sent.
func mutateDeployment(ctx Context, d *appsv1.Deployment) Result {
	tmpl := &d.Spec.Template
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
	w := Workload{Kind: KindDeployment, Annotations: d.Annotations, Selector: d.Spec.Selector, Replicas: d.Spec.Replicas}
	return MutateTemplate(ctx, w, tmpl)
}

// TemplateChanged reports whether a Deployment UPDATE changes the pod
// template, ha-injector's own recorded injection aside: each side without
// what its record says was injected, and without the record itself.
func TemplateChanged(old, updated *corev1.PodTemplateSpec) bool {
	return !equality.Semantic.DeepEqual(withoutInjection(old), withoutInjection(updated))
}

func withoutInjection(t *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
	out := ownTouched(t)
	_, _ = undo(ReadRecord(out.Annotations), &out.Spec)
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

// summarize lists the features applied and, for the others, why not.
func summarize(decisions []Decision) ([]Feature, map[Feature]string) {
	applied := AppliedFeatures(decisions)
	isApplied := map[Feature]bool{}
	for _, f := range applied {
		isApplied[f] = true
	}
	var skipped map[Feature]string
	for _, d := range decisions {
		// A feature can be applied in part (some sysctls dropped under Pod
		// Security): its Skipped decisions are still recorded.
		if d.Action != Skipped && (d.Action != Kept || isApplied[d.Feature]) {
			continue
		}
		if skipped == nil {
			skipped = map[Feature]string{}
		}
		if prev, ok := skipped[d.Feature]; ok {
			skipped[d.Feature] = prev + "; " + d.Reason
		} else {
			skipped[d.Feature] = d.Reason
		}
	}
	return applied, skipped
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
