package policies

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// perPodLabels are labels that differ between replicas of one workload, or
// between revisions of it; selecting on them would select only the pod itself.
var perPodLabels = map[string]bool{
	templateHashLabel:                          true,
	"controller-revision-hash":                 true,
	"statefulset.kubernetes.io/pod-name":       true,
	"apps.kubernetes.io/pod-index":             true,
	"controller-uid":                           true,
	"batch.kubernetes.io/controller-uid":       true,
	"batch.kubernetes.io/job-completion-index": true,
}

func antiAffinity(policy *v1alpha1.HAPolicy, ctx Context, w Workload, labels map[string]string, spec *corev1.PodSpec, rec *Record) []Decision {
	a := policy.Spec.AntiAffinity
	skip := func(reason string) []Decision {
		return []Decision{{Feature: FeatureAntiAffinity, Action: Skipped, Reason: reason}}
	}
	if !enabled(a.Enabled) {
		return skip("disabled by the policy")
	}

	// A Deployment's replica count is known (unset means 1); a Pod's only
	// when the webhook found its owner.
	replicas, known := int32(1), w.Kind == KindDeployment
	if w.Replicas != nil {
		replicas, known = *w.Replicas, true
	}
	if known && replicas < *a.MinReplicas {
		return skip(fmt.Sprintf("%d replica(s), fewer than minReplicas %d", replicas, *a.MinReplicas))
	}

	selector := replicaSelector(w, labels)
	if selector == nil {
		return skip("no labels that identify the workload's replicas, so no selector to spread them by")
	}

	if existing := podAntiAffinityOn(spec, a.TopologyKey); existing != "" {
		return []Decision{{Feature: FeatureAntiAffinity, Action: Kept, Reason: fmt.Sprintf("the workload already has %s pod anti-affinity on %s", existing, a.TopologyKey)}}
	}

	term := corev1.PodAffinityTerm{LabelSelector: selector, TopologyKey: a.TopologyKey}
	if !selectsOn(selector, templateHashLabel) {
		// Only pods of the same ReplicaSet count, so a rolling update is not
		// blocked by the old ReplicaSet's pods on the other nodes.
		term.MatchLabelKeys = []string{templateHashLabel}
	}

	var decisions []Decision
	kind := a.Type
	if kind == v1alpha1.AntiAffinityRequired && !known {
		// A required term on a pod whose replicas may outnumber the domains
		// (a Job's parallelism, a StatefulSet that was not found) would
		// leave the extra ones Pending.
		kind = v1alpha1.AntiAffinityPreferred
		decisions = append(decisions, Decision{
			Feature:  FeatureAntiAffinity,
			Action:   Noted,
			Fallback: FallbackDowngrade,
			Reason:   fmt.Sprintf("Required made Preferred: the number of replicas of this pod's workload is unknown (%s), so a required term could leave some of them Pending", unknownReplicas(w)),
		})
	}
	if kind == v1alpha1.AntiAffinityRequired {
		if domains, known := ctx.Cluster.TopologyDomains[a.TopologyKey]; known && int(replicas) > domains {
			kind = v1alpha1.AntiAffinityPreferred
			decisions = append(decisions, Decision{
				Feature:  FeatureAntiAffinity,
				Action:   Noted,
				Fallback: FallbackDowngrade,
				Reason:   fmt.Sprintf("Required downgraded to Preferred: %d replicas but only %d schedulable %s domains", replicas, domains, a.TopologyKey),
			})
		}
	}

	if spec.Affinity == nil {
		spec.Affinity = &corev1.Affinity{}
	}
	if spec.Affinity.PodAntiAffinity == nil {
		spec.Affinity.PodAntiAffinity = &corev1.PodAntiAffinity{}
	}
	paa := spec.Affinity.PodAntiAffinity
	var reason string
	if kind == v1alpha1.AntiAffinityRequired {
		paa.RequiredDuringSchedulingIgnoredDuringExecution = append(paa.RequiredDuringSchedulingIgnoredDuringExecution, term)
		rec.AntiAffinity = &RecordedTerm{Term: *term.DeepCopy()}
		reason = fmt.Sprintf("Required pod anti-affinity on %s", a.TopologyKey)
	} else {
		paa.PreferredDuringSchedulingIgnoredDuringExecution = append(paa.PreferredDuringSchedulingIgnoredDuringExecution,
			corev1.WeightedPodAffinityTerm{Weight: *a.Weight, PodAffinityTerm: term})
		rec.AntiAffinity = &RecordedTerm{Weight: *a.Weight, Term: *term.DeepCopy()}
		reason = fmt.Sprintf("Preferred pod anti-affinity (weight %d) on %s", *a.Weight, a.TopologyKey)
	}
	return append([]Decision{{Feature: FeatureAntiAffinity, Action: Applied, Reason: reason}}, decisions...)
}

// unknownReplicas says why a pod's replica count is unknown.
func unknownReplicas(w Workload) string {
	for _, ref := range w.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		switch ref.Kind {
		case "ReplicaSet", "StatefulSet":
			return fmt.Sprintf("its %s %s could not be read", ref.Kind, ref.Name)
		}
		return fmt.Sprintf("owned by %s %s, whose replicas ha-injector does not count", ref.Kind, ref.Name)
	}
	return "a pod without a controller"
}

// replicaSelector returns the selector that matches the workload's replicas:
// a Deployment's own selector, or a Pod's labels without the per-pod ones.
func replicaSelector(w Workload, labels map[string]string) *metav1.LabelSelector {
	if w.Kind == KindDeployment {
		if w.Selector == nil || (len(w.Selector.MatchLabels) == 0 && len(w.Selector.MatchExpressions) == 0) {
			return nil
		}
		return w.Selector.DeepCopy()
	}
	match := map[string]string{}
	for k, v := range labels {
		if !perPodLabels[k] {
			match[k] = v
		}
	}
	if len(match) == 0 {
		return nil
	}
	return &metav1.LabelSelector{MatchLabels: match}
}

func selectsOn(s *metav1.LabelSelector, key string) bool {
	if _, ok := s.MatchLabels[key]; ok {
		return true
	}
	for _, e := range s.MatchExpressions {
		if e.Key == key {
			return true
		}
	}
	return false
}

// podAntiAffinityOn returns "Required" or "Preferred" when the pod spec
// already has a pod anti-affinity term on topologyKey, and "" otherwise.
func podAntiAffinityOn(spec *corev1.PodSpec, topologyKey string) string {
	if spec.Affinity == nil || spec.Affinity.PodAntiAffinity == nil {
		return ""
	}
	paa := spec.Affinity.PodAntiAffinity
	for _, t := range paa.RequiredDuringSchedulingIgnoredDuringExecution {
		if t.TopologyKey == topologyKey {
			return string(v1alpha1.AntiAffinityRequired)
		}
	}
	for _, t := range paa.PreferredDuringSchedulingIgnoredDuringExecution {
		if t.PodAffinityTerm.TopologyKey == topologyKey {
			return string(v1alpha1.AntiAffinityPreferred)
		}
	}
	return ""
}
