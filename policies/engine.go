package policies

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// MutateTemplate applies ctx.Policy to the pod template of workload w and
// returns the new template with the decisions taken. The input template is
// never modified. Applying it again to its own output changes nothing.
func MutateTemplate(ctx Context, w Workload, tmpl *corev1.PodTemplateSpec) Result {
	policy := defaulted(ctx.Policy)
	res := Result{Template: *tmpl.DeepCopy()}

	if reason, skip := skipWorkload(w, tmpl); skip {
		res.Decisions = []Decision{{Feature: FeatureWorkload, Action: Skipped, Reason: reason}}
		return res
	}

	spec := &res.Template.Spec
	res.Decisions = append(res.Decisions, antiAffinity(policy, ctx, w, tmpl.Labels, spec)...)
	res.Decisions = append(res.Decisions, tolerations(policy, spec)...)
	sysctlDecisions, inserted := sysctls(policy, ctx, spec)
	res.Decisions = append(res.Decisions, sysctlDecisions...)
	if note, ok := statefulSetNote(policy, w); ok {
		res.Decisions = append(res.Decisions, note)
	}

	for _, d := range res.Decisions {
		if d.Action == Applied {
			res.Changed = true
		}
	}
	res.insertedInitContainer = inserted

	if policy.Spec.Mode == v1alpha1.ModeAudit {
		for i := range res.Decisions {
			res.Decisions[i].Audit = true
		}
		res.Template = *tmpl.DeepCopy()
		res.Changed = false
		res.insertedInitContainer = false
	}
	return res
}

// defaulted returns a defaulted copy of p, or the built-in default policy when p is nil.
func defaulted(p *v1alpha1.HAPolicy) *v1alpha1.HAPolicy {
	if p == nil {
		return v1alpha1.NewDefault()
	}
	p = p.DeepCopy()
	p.Default()
	return p
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

// statefulSetNote warns that short tolerations alone do not replace a
// StatefulSet pod on a dead node: the pod is only deleted once the kubelet
// confirms it or the node object is removed, so its identity stays taken.
func statefulSetNote(policy *v1alpha1.HAPolicy, w Workload) (Decision, bool) {
	if w.Kind != KindPod || !enabled(policy.Spec.Tolerations.Enabled) {
		return Decision{}, false
	}
	for _, ref := range w.OwnerReferences {
		if ref.Kind == "StatefulSet" {
			return Decision{
				Feature: FeatureTolerations,
				Action:  Noted,
				Reason:  "StatefulSet pod: after eviction it stays Terminating until the dead node is deleted or shut down (non-graceful node shutdown), so short tolerations alone do not move it",
			}, true
		}
	}
	return Decision{}, false
}

func enabled(b *bool) bool { return ptr.Deref(b, false) }
