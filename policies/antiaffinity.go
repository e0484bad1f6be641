package policies

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// FeatureAntiAffinity spreads a workload's replicas across nodes.
const FeatureAntiAffinity Feature = "antiAffinity"

// antiAffinityInjection adds a pod anti-affinity term that keeps a
// workload's replicas on different topology domains (nodes, by default).
type antiAffinityInjection struct{}

var _ Injection = antiAffinityInjection{}

// antiAffinityRecord is the key of its part of the record.
const antiAffinityRecord = "antiAffinity"

// RecordedTerm is an anti-affinity term ha-injector added: a required term,
// or a preferred one with its weight. It is the anti-affinity's part of the
// record.
type RecordedTerm struct {
	Weight int32                  `json:"weight,omitempty"`
	Term   corev1.PodAffinityTerm `json:"term"`
}

var podAntiAffinityPart = nestedField("affinity", "podAntiAffinity",
	func(s *corev1.PodSpec) **corev1.Affinity { return &s.Affinity },
	func(a *corev1.Affinity) any { return a.PodAntiAffinity })

func (antiAffinityInjection) Feature() Feature { return FeatureAntiAffinity }

func (antiAffinityInjection) Parts() []Part { return []Part{podAntiAffinityPart} }

// Needs: the number of domains of its topology key, to downgrade a Required
// term that would leave replicas Pending; only for a Required policy and a
// workload whose replica count is known.
func (antiAffinityInjection) Needs(policy *v1alpha1.HAPolicy, w Workload) Needs {
	a := policy.Spec.AntiAffinity
	if _, known := w.replicas(); !known || a.Type != v1alpha1.AntiAffinityRequired || !enabled(a.Enabled) {
		return Needs{}
	}
	return Needs{TopologyKeys: []string{a.TopologyKey}}
}

func (antiAffinityInjection) Apply(in *Input) []Decision {
	a := in.Policy.Spec.AntiAffinity
	skip := func(reason string) []Decision {
		return []Decision{{Feature: FeatureAntiAffinity, Action: Skipped, Reason: reason}}
	}
	if !enabled(a.Enabled) {
		return skip("disabled by the policy")
	}
	replicas, known := in.Workload.replicas()
	if known && replicas < *a.MinReplicas {
		return skip(fmt.Sprintf("%d replica(s), fewer than minReplicas %d", replicas, *a.MinReplicas))
	}
	selector := in.Workload.replicaSelector(in.Labels)
	if selector == nil {
		return skip("no labels that identify the workload's replicas, so no selector to spread them by")
	}
	spec := in.Spec
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
			Reason:   fmt.Sprintf("Required made Preferred: the number of replicas of this pod's workload is unknown (%s), so a required term could leave some of them Pending", in.Workload.unknownReplicas()),
		})
	}
	if kind == v1alpha1.AntiAffinityRequired {
		if domains, known := in.Context.Cluster.TopologyDomains[a.TopologyKey]; known && int(replicas) > domains {
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
		in.Record.Put(antiAffinityRecord, RecordedTerm{Term: term})
		reason = fmt.Sprintf("Required pod anti-affinity on %s", a.TopologyKey)
	} else {
		paa.PreferredDuringSchedulingIgnoredDuringExecution = append(paa.PreferredDuringSchedulingIgnoredDuringExecution,
			corev1.WeightedPodAffinityTerm{Weight: *a.Weight, PodAffinityTerm: term})
		in.Record.Put(antiAffinityRecord, RecordedTerm{Weight: *a.Weight, Term: term})
		reason = fmt.Sprintf("Preferred pod anti-affinity (weight %d) on %s", *a.Weight, a.TopologyKey)
	}
	return append([]Decision{{Feature: FeatureAntiAffinity, Action: Applied, Reason: reason}}, decisions...)
}

// Undo removes the recorded term. One that is gone, or was never there, was
// undone by the user (a manifest re-applied whole): nothing to note; a term
// on the same key that is not the recorded one is the user's now.
func (antiAffinityInjection) Undo(rec *Record, spec *corev1.PodSpec) []Decision {
	var t RecordedTerm
	if !rec.Part(antiAffinityRecord, &t) {
		return nil
	}
	if !removeTerm(spec, &t) && podAntiAffinityOn(spec, t.Term.TopologyKey) != "" {
		return []Decision{keptByUser(FeatureAntiAffinity, "the recorded anti-affinity term on %s", t.Term.TopologyKey)}
	}
	return nil
}

func removeTerm(spec *corev1.PodSpec, t *RecordedTerm) bool {
	if spec.Affinity == nil || spec.Affinity.PodAntiAffinity == nil {
		return false
	}
	paa := spec.Affinity.PodAntiAffinity
	removed := false
	if t.Weight == 0 {
		if i := slices.IndexFunc(paa.RequiredDuringSchedulingIgnoredDuringExecution, func(x corev1.PodAffinityTerm) bool {
			return equality.Semantic.DeepEqual(x, t.Term)
		}); i >= 0 {
			paa.RequiredDuringSchedulingIgnoredDuringExecution = slices.Delete(paa.RequiredDuringSchedulingIgnoredDuringExecution, i, i+1)
			removed = true
		}
	} else if i := slices.IndexFunc(paa.PreferredDuringSchedulingIgnoredDuringExecution, func(x corev1.WeightedPodAffinityTerm) bool {
		return x.Weight == t.Weight && equality.Semantic.DeepEqual(x.PodAffinityTerm, t.Term)
	}); i >= 0 {
		paa.PreferredDuringSchedulingIgnoredDuringExecution = slices.Delete(paa.PreferredDuringSchedulingIgnoredDuringExecution, i, i+1)
		removed = true
	}
	if !removed {
		return false
	}
	// What ha-injector created to hold the term goes with it.
	if len(paa.RequiredDuringSchedulingIgnoredDuringExecution) == 0 {
		paa.RequiredDuringSchedulingIgnoredDuringExecution = nil
	}
	if len(paa.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		paa.PreferredDuringSchedulingIgnoredDuringExecution = nil
	}
	if paa.RequiredDuringSchedulingIgnoredDuringExecution == nil && paa.PreferredDuringSchedulingIgnoredDuringExecution == nil {
		spec.Affinity.PodAntiAffinity = nil
	}
	if equality.Semantic.DeepEqual(*spec.Affinity, corev1.Affinity{}) {
		spec.Affinity = nil
	}
	return true
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

// Native: a Preferred term (native mode does not know the replica count, so
// a Required policy gets Preferred, as the engine gives a pod whose owner it
// cannot read), selecting the pod's labels without the per-pod ones, unless
// the pod has a term on the key already or no labels to select by.
func (antiAffinityInjection) Native(NativeSettings) Native {
	d := v1alpha1.NewDefault().Spec.AntiAffinity
	paa := "object.spec.?affinity.?podAntiAffinity"
	return Native{
		Variables: []NativeExpression{
			{"aaOn", `variables.spec.?antiAffinity.?enabled.orValue(true)`},
			{"aaKey", `variables.spec.?antiAffinity.?topologyKey.orValue(` + celQuote(d.TopologyKey) + `)`},
			{"aaType", `variables.spec.?antiAffinity.?type.orValue(` + celQuote(string(d.Type)) + `)`},
			{"aaWeight", fmt.Sprintf(`variables.spec.?antiAffinity.?weight.orValue(%d)`, *d.Weight)},
			{"aaExisting", paa + `.?requiredDuringSchedulingIgnoredDuringExecution.orValue([]).exists(t, t.topologyKey == variables.aaKey) ||
  ` + paa + `.?preferredDuringSchedulingIgnoredDuringExecution.orValue([]).exists(t, t.podAffinityTerm.topologyKey == variables.aaKey)`},
			{"aaApplies", `variables.aaOn && size(variables.selector) > 0 && !variables.aaExisting`},
			{"aaTerm", `{"weight": dyn(variables.aaWeight), "podAffinityTerm": dyn({"labelSelector": dyn({"matchLabels": variables.selector}),
  "topologyKey": dyn(variables.aaKey), "matchLabelKeys": dyn([` + celQuote(templateHashLabel) + `])})}`},
			{"aaPatch", `!variables.aaApplies ? [] :
  !has(object.spec.affinity) ? [{"op": dyn("add"), "path": dyn("/spec/affinity"), "value": dyn({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [variables.aaTerm]}})}] :
  !has(object.spec.affinity.podAntiAffinity) ? [{"op": dyn("add"), "path": dyn("/spec/affinity/podAntiAffinity"), "value": dyn({"preferredDuringSchedulingIgnoredDuringExecution": [variables.aaTerm]})}] :
  !has(object.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution) ?
    [{"op": dyn("add"), "path": dyn("/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution"), "value": dyn([variables.aaTerm])}] :
  [{"op": dyn("add"), "path": dyn("/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/-"), "value": dyn(variables.aaTerm)}]`},
		},
		Patch:   "variables.aaPatch",
		Applies: "variables.aaApplies",
		Warnings: []NativeWarning{
			// After the mutation: a Required policy, and the pod has no
			// required term on the key (the injected one is Preferred).
			{Condition: `variables.aaOn && variables.aaType == "Required" && size(variables.selector) > 0 &&
  !` + paa + `.?requiredDuringSchedulingIgnoredDuringExecution.orValue([]).exists(t, t.topologyKey == variables.aaKey)`,
				Message: `'antiAffinity: note: Required made Preferred: in native mode the number of replicas of this pod\'s workload is unknown, so a required term could leave some of them Pending'`},
			{Condition: `variables.aaOn && size(variables.selector) == 0 && !variables.aaExisting`,
				Message: `'antiAffinity: skipped: no labels that identify the workload\'s replicas, so no selector to spread them by'`},
		},
	}
}
