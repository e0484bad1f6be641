package policies

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// tolerations caps the not-ready and unreachable NoExecute tolerations at the
// policy's seconds. The taint manager evicts after the shortest matching
// toleration with tolerationSeconds, and a toleration without seconds only
// counts when no matching one has seconds; so appending a second toleration
// next to the user's would silently override it. Longer ones are therefore
// shortened in place, shorter ones kept, and "tolerate forever" left alone.
func tolerations(policy *v1alpha1.HAPolicy, spec *corev1.PodSpec) []Decision {
	t := policy.Spec.Tolerations
	if !enabled(t.Enabled) {
		return []Decision{{Feature: FeatureTolerations, Action: Skipped, Reason: "disabled by the policy"}}
	}
	return []Decision{
		capToleration(spec, NotReadyTaint, *t.NotReadySeconds),
		capToleration(spec, UnreachableTaint, *t.UnreachableSeconds),
	}
}

func capToleration(spec *corev1.PodSpec, key string, limit int64) Decision {
	decision := func(action Action, format string, args ...any) Decision {
		return Decision{Feature: FeatureTolerations, Action: action, Reason: key + " " + fmt.Sprintf(format, args...)}
	}

	var (
		own             []int // tolerations of exactly this key, with seconds
		ownForever      bool  // a toleration of exactly this key without seconds
		wildcardForever bool  // a toleration of every taint without seconds
		wildcardMin     *int64
	)
	for i := range spec.Tolerations {
		tol := &spec.Tolerations[i]
		if !toleratesNoExecute(tol, key) {
			continue
		}
		switch {
		case tol.Key == key && tol.TolerationSeconds == nil:
			ownForever = true
		case tol.Key == key:
			own = append(own, i)
		case tol.TolerationSeconds == nil:
			wildcardForever = true
		case wildcardMin == nil || *tol.TolerationSeconds < *wildcardMin:
			wildcardMin = tol.TolerationSeconds
		}
	}

	switch {
	case ownForever:
		return decision(Kept, "tolerated forever by a toleration without tolerationSeconds: the workload's choice, left alone")
	case wildcardForever && len(own) == 0 && wildcardMin == nil:
		// A toleration without seconds only counts when no matching one has seconds.
		return decision(Kept, "tolerated forever by a toleration of every taint without tolerationSeconds: the workload's choice, left alone")
	case len(own) == 0 && wildcardMin != nil && *wildcardMin <= limit:
		return decision(Kept, "already %ds through a toleration of every taint, within the policy's %ds", *wildcardMin, limit)
	case len(own) == 0:
		// Nothing for this key: add one. The shortest matching toleration
		// wins, so it also caps a longer toleration of every taint, for this
		// taint only.
		spec.Tolerations = append(spec.Tolerations, corev1.Toleration{
			Key:               key,
			Operator:          corev1.TolerationOpExists,
			Effect:            corev1.TaintEffectNoExecute,
			TolerationSeconds: &limit,
		})
		return decision(Applied, "added with %ds", limit)
	}

	var shortened []string
	for _, i := range own {
		tol := &spec.Tolerations[i]
		if *tol.TolerationSeconds > limit {
			shortened = append(shortened, fmt.Sprintf("%ds -> %ds", *tol.TolerationSeconds, limit))
			tol.TolerationSeconds = &limit
		}
	}
	if len(shortened) == 0 {
		return decision(Kept, "already %ds, within the policy's %ds", *spec.Tolerations[own[0]].TolerationSeconds, limit)
	}
	return decision(Applied, "shortened %s", joinComma(shortened))
}

// toleratesNoExecute reports whether tol tolerates the NoExecute taint key
// (with an empty value, as the node lifecycle controller sets it).
func toleratesNoExecute(tol *corev1.Toleration, key string) bool {
	if tol.Effect != "" && tol.Effect != corev1.TaintEffectNoExecute {
		return false
	}
	switch tol.Operator {
	case corev1.TolerationOpExists:
		return tol.Key == "" || tol.Key == key
	case corev1.TolerationOpEqual, "":
		return tol.Key == key && tol.Value == ""
	}
	return false
}
