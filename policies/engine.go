package policies

import (
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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

	var storedInit *corev1.Container
	if w.Kind == KindDeployment {
		if prior := ReadRecord(tmpl.Annotations); prior.injected() {
			var notes []Decision
			notes, storedInit = undo(prior, spec)
			res.Decisions = append(res.Decisions, notes...)
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

	rec := &Record{Version: RecordVersion, Policy: policyName(ctx), Hash: policyHash(policy)}
	var prior *Record
	if w.Kind == KindPod {
		var notes []Decision
		notes, prior = dropPrivilegedInit(ctx, tmpl, spec)
		res.Decisions = append(res.Decisions, notes...)
	}
	res.Decisions = append(res.Decisions, antiAffinity(policy, ctx, w, tmpl.Labels, spec, rec)...)
	res.Decisions = append(res.Decisions, tolerations(policy, spec, rec)...)
	res.Decisions = append(res.Decisions, sysctls(policy, ctx, spec, rec)...)
	if note, ok := statefulSetNote(policy, w); ok {
		res.Decisions = append(res.Decisions, note)
	}
	rec.Applied, rec.Skipped = summarize(res.Decisions)
	// The same container injected again: keep it as stored, with the
	// defaults the API server added, so nothing changes.
	if storedInit != nil && rec.InitContainer != nil && isRecordedContainer(rec.InitContainer, storedInit) && len(spec.InitContainers) > 0 {
		spec.InitContainers[0] = *storedInit
	}

	if prior != nil {
		// The pod's record is its template's, less what was removed, with
		// what this admission added, and why sysctls are missing.
		rec = prior.absorb(rec)
		var why []string
		for _, d := range res.Decisions {
			if d.Feature == FeatureSysctls && d.Fallback == FallbackPodSecurity {
				why = append(why, d.Reason)
			}
		}
		if rec.Skipped == nil {
			rec.Skipped = map[Feature]string{}
		}
		rec.Skipped[FeatureSysctls] = strings.Join(why, "; ")
	}
	switch {
	case rec.injected() || prior != nil:
		res.Record = rec
		setAnnotation(&res.Template.ObjectMeta, StatusAnnotation, rec.encode())
	case res.Undone:
		dropRecord(&res.Template.ObjectMeta)
	}
	res.Changed = !sameTouched(&res.Template, tmpl)
	return audited(ctx, policy, tmpl, res)
}

// dropPrivilegedInit removes from a Pod the ha-sysctl init container that its
// template's injection put there, when the namespace's Pod Security level now
// rejects privileged containers: injected while the namespace allowed them, it
// would get every replacement pod refused (after a drain or a node loss,
// exactly when replacements matter). Only the container the record describes
// is removed, never a user's. It returns the record without that container.
func dropPrivilegedInit(ctx Context, tmpl *corev1.PodTemplateSpec, spec *corev1.PodSpec) ([]Decision, *Record) {
	prior := ReadRecord(tmpl.Annotations)
	if prior == nil || prior.InitContainer == nil {
		return nil, nil
	}
	ps := effectivePodSecurity(ctx.Namespace, ctx.Cluster.PodSecurity)
	if ps.level == PodSecurityPrivileged || removeInitContainer(spec, prior.InitContainer) == nil {
		return nil, nil
	}
	prior.InitContainer = nil
	return []Decision{sysctlDecision(Skipped, FallbackPodSecurity,
		"%s, which rejects privileged containers: removed the %s init container of the pod template's injection (the template keeps it until its next change)", ps, SysctlContainerName)}, prior
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

// ownTouched returns a copy of t that owns what the engine may change (the
// annotations, affinity, tolerations, pod securityContext and init
// containers) and shares the rest with t: the containers, volumes and the
// rest of a large pod are never copied, and t is never modified.
func ownTouched(t *corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	out := *t
	out.Annotations = maps.Clone(t.Annotations)
	out.Spec.Affinity = t.Spec.Affinity.DeepCopy()
	out.Spec.SecurityContext = t.Spec.SecurityContext.DeepCopy()
	out.Spec.Tolerations = deepCopySlice(t.Spec.Tolerations)
	out.Spec.InitContainers = deepCopySlice(t.Spec.InitContainers)
	return out
}

// sameTouched reports whether a, a copy of b made by ownTouched and then
// changed, still equals b: only the parts ownTouched owns can differ (the
// rest is shared), so only they are compared, as equality.Semantic compares
// them, instead of the whole template.
func sameTouched(a, b *corev1.PodTemplateSpec) bool {
	return maps.Equal(a.Annotations, b.Annotations) &&
		equality.Semantic.DeepEqual(a.Spec.Affinity, b.Spec.Affinity) &&
		equality.Semantic.DeepEqual(a.Spec.SecurityContext, b.Spec.SecurityContext) &&
		equality.Semantic.DeepEqual(a.Spec.Tolerations, b.Spec.Tolerations) &&
		equality.Semantic.DeepEqual(a.Spec.InitContainers, b.Spec.InitContainers)
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

// defaulted returns a copy of p with its defaults, or the built-in default
// policy when p is nil. The copy of a stored policy's version is made once
// and shared by every admission: it is read only.
func defaulted(p *v1alpha1.HAPolicy) *v1alpha1.HAPolicy {
	if p == nil {
		return v1alpha1.NewDefault()
	}
	return versionOf(p).defaulted
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
