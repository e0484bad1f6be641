package policies

import (
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// MutateTemplate applies ctx.Policy to the pod template of workload w and
// returns the new template with the decisions taken. The input template is
// never modified. Applying it again to its own output changes nothing.
//
// For a Deployment it first undoes what the template's Record says
// ha-injector injected earlier, so the result follows the current policy
// (or, for a workload that opted out or a namespace that no longer opts in,
// carries no injection at all); see mutateDeployment for UPDATEs. A
// Pod is created once and never converged: its injection is applied on top
// of what it carries (a Deployment's pods arrive with their template's).
func MutateTemplate(ctx Context, w Workload, tmpl *corev1.PodTemplateSpec) Result {
	if d, refused := refusePolicy(ctx); refused {
		return Result{Template: ownTouched(tmpl), Decisions: []Decision{d}}
	}
	policy := defaulted(ctx.Policy)
	res := Result{Template: ownTouched(tmpl)}
	spec := &res.Template.Spec

	if w.Kind == KindDeployment {
		if prior := ReadRecord(tmpl.Annotations); prior.injected() {
			res.Decisions = append(res.Decisions, undo(prior, spec)...)
			res.Undone = true
		}
	}
	reason, skip := skipWorkload(w, tmpl)
	if ctx.NotOptedIn {
		reason, skip = fmt.Sprintf("namespace %s no longer carries the %s label", ctx.Namespace.Name, PolicyLabel), true
	}
	if skip {
		switch {
		case res.Undone && policy.Spec.Mode == v1alpha1.ModeAudit && !ctx.NotOptedIn:
			reason += ": ha-injector's earlier injection would be removed"
		case res.Undone:
			reason += ": ha-injector's earlier injection removed"
		}
		res.Decisions = append([]Decision{{Feature: FeatureWorkload, Action: Skipped, Reason: reason}}, res.Decisions...)
		if res.Undone {
			dropRecord(&res.Template.ObjectMeta)
		}
		res.Changed = !sameTouched(&res.Template, tmpl)
		return audited(ctx, policy, tmpl, res)
	}

	in := &Input{
		Policy: policy, Context: ctx, Workload: w, Labels: tmpl.Labels, Spec: spec,
		Record:   &Record{Version: RecordVersion, Policy: policyName(ctx), Hash: policyHash(policy), parts: make([]recordPart, 0, len(registered)+1)},
		original: &tmpl.Spec,
	}
	if w.Kind == KindPod {
		in.Prior = ReadRecord(tmpl.Annotations)
	}
	for _, inj := range registered {
		res.Decisions = append(res.Decisions, inj.Apply(in)...)
	}
	rec := in.Record
	rec.Applied, rec.Skipped = summarize(res.Decisions)
	dropped := in.Prior != nil && len(in.Prior.dropped) > 0
	if dropped {
		// The pod's record is its template's, less what was taken back, with
		// what this admission added, and why a feature lost a part.
		rec = in.Prior.absorb(rec)
		for _, f := range in.Prior.dropped {
			if rec.Skipped == nil {
				rec.Skipped = map[Feature]string{}
			}
			rec.Skipped[f] = fallbackReasons(res.Decisions, f)
		}
	}

	switch {
	case rec.injected() || dropped:
		res.Record = rec
		setAnnotation(&res.Template.ObjectMeta, StatusAnnotation, rec.encode())
	case res.Undone:
		dropRecord(&res.Template.ObjectMeta)
	}
	res.Changed = !sameTouched(&res.Template, tmpl)
	return audited(ctx, policy, tmpl, res)
}

// refusePolicy returns the decision that nothing is applied when the policy
// to apply is invalid: an object is then left exactly as it came, an earlier
// injection included.
func refusePolicy(ctx Context) (Decision, bool) {
	if ctx.NotOptedIn {
		return Decision{}, false
	}
	err := PolicyError(ctx.Policy)
	if err == nil {
		return Decision{}, false
	}
	return Decision{Feature: FeatureWorkload, Action: Skipped, Fallback: FallbackInvalidPolicy, Reason: err.Error() + ": nothing applied, the object is left as it is"}, true
}

// audited turns res into a report under an Audit policy: the decisions say
// what would be done, and the template is left as it was.
func audited(ctx Context, policy *v1alpha1.HAPolicy, tmpl *corev1.PodTemplateSpec, res Result) Result {
	if policy.Spec.Mode != v1alpha1.ModeAudit || ctx.NotOptedIn {
		return res
	}
	for i := range res.Decisions {
		res.Decisions[i].Audit = true
	}
	res.Template = ownTouched(tmpl)
	res.Changed = false
	res.Record = nil
	res.Undone = false
	return res
}

func policyName(ctx Context) string {
	if ctx.Policy == nil {
		return "default"
	}
	return ctx.Policy.Name
}

// ownTouched returns a copy of t that owns what the engine may change (its
// annotations and the registered injections' parts) and shares the rest
// with t: the containers, volumes and the rest of a large pod are never
// copied, and t is never modified.
func ownTouched(t *corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	out := *t
	out.Annotations = maps.Clone(t.Annotations)
	for _, p := range parts() {
		p.own(&out.Spec)
	}
	return out
}

// sameTouched reports whether a, a copy of b made by ownTouched and then
// changed, still equals b: only what ownTouched owns can differ (the rest is
// shared), so only that is compared, as equality.Semantic compares it,
// instead of the whole template.
func sameTouched(a, b *corev1.PodTemplateSpec) bool {
	if !maps.Equal(a.Annotations, b.Annotations) {
		return false
	}
	for _, p := range parts() {
		if !p.same(&a.Spec, &b.Spec) {
			return false
		}
	}
	return true
}

// deepCopySlice copies s and its elements; nil stays nil.
func deepCopySlice[T any, P interface {
	*T
	DeepCopyInto(*T)
}](s []T) []T {
	if s == nil {
		return nil
	}
	out := make([]T, len(s))
	for i := range s {
		P(&s[i]).DeepCopyInto(&out[i])
	}
	return out
}

// dropRecord removes the StatusAnnotation from meta.
func dropRecord(meta *metav1.ObjectMeta) {
	delete(meta.Annotations, StatusAnnotation)
	if len(meta.Annotations) == 0 {
		meta.Annotations = nil
	}
}

func setAnnotation(meta *metav1.ObjectMeta, key, value string) {
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[key] = value
}

// skipWorkload reports whether the whole workload is left alone, and why.
func skipWorkload(w Workload, tmpl *corev1.PodTemplateSpec) (string, bool) {
	if w.Annotations[InjectAnnotation] == "false" {
		return fmt.Sprintf("opted out by annotation %s=false", InjectAnnotation), true
	}
	if tmpl.Annotations[InjectAnnotation] == "false" {
		return fmt.Sprintf("opted out by pod template annotation %s=false", InjectAnnotation), true
	}
	if w.Kind != KindPod {
		return "", false
	}
	if w.Owner != nil && w.Owner.Annotations[InjectAnnotation] == "false" {
		return fmt.Sprintf("opted out by annotation %s=false on its %s %s (copied from its Deployment)", InjectAnnotation, w.Owner.Kind, w.Owner.Name), true
	}
	if _, ok := w.Annotations[mirrorPodAnnotation]; ok {
		return "mirror pod of a static pod: the kubelet owns it", true
	}
	for _, ref := range w.OwnerReferences {
		if ref.Kind == "DaemonSet" {
			return fmt.Sprintf("owned by DaemonSet %s: one pod per node by design", ref.Name), true
		}
	}
	return "", false
}

// summarize lists the features applied and, for the others, why not.
func summarize(decisions []Decision) ([]Feature, map[Feature]string) {
	applied := AppliedFeatures(decisions)
	var skipped map[Feature]string
	for _, d := range decisions {
		// A feature can be applied in part (some sysctls dropped under Pod
		// Security): its Skipped decisions are still recorded.
		if d.Action != Skipped && (d.Action != Kept || containsFeature(applied, d.Feature)) {
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
	for _, d := range decisions {
		if d.Action == Applied && !containsFeature(out, d.Feature) {
			out = append(out, d.Feature)
		}
	}
	return out
}

func containsFeature(fs []Feature, f Feature) bool {
	for _, x := range fs {
		if x == f {
			return true
		}
	}
	return false
}

// fallbackReasons joins the reasons of the decisions of feature f that
// depart from the policy (those with a fallback).
func fallbackReasons(decisions []Decision, f Feature) string {
	var why []string
	for _, d := range decisions {
		if d.Feature == f && d.Fallback != "" {
			why = append(why, d.Reason)
		}
	}
	return strings.Join(why, "; ")
}

func enabled(b *bool) bool { return ptr.Deref(b, false) }
