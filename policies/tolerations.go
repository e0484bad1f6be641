package policies

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// tolerations caps the not-ready and unreachable NoExecute tolerations at the
// policy's seconds. For each taint the taint manager uses the first matching
// toleration in list order (GetMatchingTolerations), so the DefaultTolerationSeconds
// 300s toleration, or the user's own, is the one that counts: a toleration
// appended after it would be ignored. Longer ones are therefore shortened in
// place, shorter ones kept, and "tolerate forever" left alone.
func tolerations(policy *v1alpha1.HAPolicy, spec *corev1.PodSpec, rec *Record) []Decision {
	t := policy.Spec.Tolerations
	if !enabled(t.Enabled) {
		return []Decision{{Feature: FeatureTolerations, Action: Skipped, Reason: "disabled by the policy"}}
	}
	return []Decision{
		capToleration(spec, NotReadyTaint, *t.NotReadySeconds, rec),
		capToleration(spec, UnreachableTaint, *t.UnreachableSeconds, rec),
	}
}

func capToleration(spec *corev1.PodSpec, key string, limit int64, rec *Record) Decision {
	decision := func(action Action, format string, args ...any) Decision {
		return Decision{Feature: FeatureTolerations, Action: action, Reason: key + " " + fmt.Sprintf(format, args...)}
	}

	first := firstNoExecute(spec, key)
	if first < 0 {
		spec.Tolerations = append(spec.Tolerations, corev1.Toleration{
			Key:               key,
			Operator:          corev1.TolerationOpExists,
			Effect:            corev1.TaintEffectNoExecute,
			TolerationSeconds: &limit,
		})
		rec.Tolerations = append(rec.Tolerations, RecordedToleration{Key: key, Seconds: limit})
		return decision(Applied, "added with %ds", limit)
	}

	tol := &spec.Tolerations[first]
	switch {
	case tol.TolerationSeconds == nil && tol.Key == "":
		return decision(Kept, "tolerated forever by a toleration of every taint without tolerationSeconds: the workload's choice, left alone")
	case tol.TolerationSeconds == nil:
		return decision(Kept, "tolerated forever by a toleration without tolerationSeconds: the workload's choice, left alone")
	case *tol.TolerationSeconds <= limit:
		return decision(Kept, "already %ds, within the policy's %ds", *tol.TolerationSeconds, limit)
	case tol.Key == "":
		// Shortening it would change every NoExecute taint, not just this one.
		return decision(Kept, "tolerated %ds by a toleration of every NoExecute taint, which comes first and is left alone: add a %s toleration before it to cap this taint", *tol.TolerationSeconds, key)
	}
	was := *tol.TolerationSeconds
	tol.TolerationSeconds = &limit
	rec.Tolerations = append(rec.Tolerations, RecordedToleration{Key: key, Seconds: limit, Was: &was})
	return decision(Applied, "shortened %ds -> %ds", was, limit)
}

// firstNoExecute returns the index of the first toleration of the NoExecute
// taint key, the one the taint manager uses, or -1.
func firstNoExecute(spec *corev1.PodSpec, key string) int {
	for i := range spec.Tolerations {
		if toleratesNoExecute(&spec.Tolerations[i], key) {
			return i
		}
	}
	return -1
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
