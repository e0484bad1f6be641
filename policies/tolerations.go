package policies

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// FeatureTolerations caps how long pods stay on a node that is not ready or
// unreachable.
const FeatureTolerations Feature = "tolerations"

// tolerationsInjection caps the not-ready and unreachable NoExecute
// tolerations at the policy's seconds. For each taint the taint manager uses
// the first matching toleration in list order (GetMatchingTolerations), so
// the DefaultTolerationSeconds 300s toleration, or the user's own, is the one
// that counts: a toleration appended after it would be ignored. Longer ones
// are therefore shortened in place, shorter ones kept, and "tolerate
// forever" left alone.
type tolerationsInjection struct{}

var _ Injection = tolerationsInjection{}

// tolerationsRecord is the key of its part of the record.
const tolerationsRecord = "tolerations"

// RecordedToleration is a NoExecute toleration of Key set to Seconds: added
// when Was is nil, else shortened from Was. A list of them is the
// tolerations' part of the record.
type RecordedToleration struct {
	Key     string `json:"key"`
	Seconds int64  `json:"seconds"`
	Was     *int64 `json:"was,omitempty"`
}

var tolerationsPart = specField("tolerations", func(s *corev1.PodSpec) *[]corev1.Toleration { return &s.Tolerations })

func (tolerationsInjection) Feature() Feature { return FeatureTolerations }

func (tolerationsInjection) Parts() []Part { return []Part{tolerationsPart} }

func (tolerationsInjection) Needs(*v1alpha1.HAPolicy, Workload) Needs { return Needs{} }

func (tolerationsInjection) Apply(in *Input) []Decision {
	t := in.Policy.Spec.Tolerations
	if !enabled(t.Enabled) {
		return []Decision{{Feature: FeatureTolerations, Action: Skipped, Reason: "disabled by the policy"}}
	}
	var recorded []RecordedToleration
	decisions := []Decision{
		capToleration(in.Spec, NotReadyTaint, *t.NotReadySeconds, &recorded),
		capToleration(in.Spec, UnreachableTaint, *t.UnreachableSeconds, &recorded),
	}
	if len(recorded) > 0 {
		in.Record.Put(tolerationsRecord, recorded)
	}
	if note, ok := statefulSetNote(in.Workload); ok {
		decisions = append(decisions, note)
	}
	return decisions
}

func capToleration(spec *corev1.PodSpec, key string, limit int64, recorded *[]RecordedToleration) Decision {
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
		*recorded = append(*recorded, RecordedToleration{Key: key, Seconds: limit})
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
	*recorded = append(*recorded, RecordedToleration{Key: key, Seconds: limit, Was: &was})
	return decision(Applied, "shortened %ds -> %ds", was, limit)
}

// statefulSetNote warns that short tolerations alone do not replace a
// StatefulSet pod on a dead node: the pod is only deleted once the kubelet
// confirms it or the node object is removed, so its identity stays taken.
func statefulSetNote(w Workload) (Decision, bool) {
	if w.Kind != KindPod {
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

// Undo gives each recorded toleration back: an added one is removed, a
// shortened one gets its seconds back, if it still has the recorded seconds.
func (tolerationsInjection) Undo(rec *Record, spec *corev1.PodSpec) []Decision {
	var recorded []RecordedToleration
	if !rec.Part(tolerationsRecord, &recorded) {
		return nil
	}
	var notes []Decision
	for _, rt := range recorded {
		if !undoToleration(spec, rt) && tolerationChanged(spec, rt) {
			notes = append(notes, keptByUser(FeatureTolerations, "the %s toleration", rt.Key))
		}
	}
	return notes
}

// undoToleration finds the first NoExecute toleration of rt.Key (the one the
// taint manager uses) and, if it still has the recorded seconds, removes it
// (added) or gives it back its original seconds (shortened).
func undoToleration(spec *corev1.PodSpec, rt RecordedToleration) bool {
	i := firstNoExecute(spec, rt.Key)
	if i < 0 || spec.Tolerations[i].Key != rt.Key || spec.Tolerations[i].TolerationSeconds == nil || *spec.Tolerations[i].TolerationSeconds != rt.Seconds {
		return false
	}
	if rt.Was == nil {
		spec.Tolerations = slices.Delete(spec.Tolerations, i, i+1)
		if len(spec.Tolerations) == 0 {
			spec.Tolerations = nil
		}
		return true
	}
	was := *rt.Was
	spec.Tolerations[i].TolerationSeconds = &was
	return true
}

// tolerationChanged reports whether the first NoExecute toleration of rt.Key
// has seconds that are neither the recorded ones nor the workload's own.
func tolerationChanged(spec *corev1.PodSpec, rt RecordedToleration) bool {
	i := firstNoExecute(spec, rt.Key)
	if i < 0 || spec.Tolerations[i].Key != rt.Key {
		return false
	}
	secs := spec.Tolerations[i].TolerationSeconds
	return !(rt.Was != nil && secs != nil && *secs == *rt.Was)
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

// Native: capToleration in CEL, for each taint: the first NoExecute
// toleration of it (the API server's DefaultTolerationSeconds has added its
// 300 s ones before native mode runs) is shortened in place when longer, kept
// otherwise; none, one is appended.
func (tolerationsInjection) Native(NativeSettings) Native {
	d := v1alpha1.NewDefault().Spec.Tolerations
	vars := []NativeExpression{
		{"tolOn", `variables.spec.?tolerations.?enabled.orValue(true)`},
		{"tolList", `object.spec.?tolerations.orValue([])`},
	}
	var adds, replaces []string
	for _, t := range []struct {
		v, taint, field string
		def             int64
	}{
		{"tolNotReady", NotReadyTaint, "notReadySeconds", *d.NotReadySeconds},
		{"tolUnreachable", UnreachableTaint, "unreachableSeconds", *d.UnreachableSeconds},
	} {
		key := celQuote(t.taint)
		vars = append(vars,
			NativeExpression{t.v + "Limit", fmt.Sprintf(`variables.spec.?tolerations.?%s.orValue(%d)`, t.field, t.def)},
			// toleratesNoExecute: the indexes of the tolerations of the taint.
			NativeExpression{t.v + "Matches", `variables.tolList.transformList(i, t,
  t.?effect.orValue("") in ["", "NoExecute"] &&
  ((t.?operator.orValue("") == "Exists" && t.?key.orValue("") in ["", ` + key + `]) ||
   (t.?operator.orValue("") in ["", "Equal"] && t.?key.orValue("") == ` + key + ` && t.?value.orValue("") == "")), i)`},
			NativeExpression{t.v + "Add", `size(variables.` + t.v + `Matches) == 0 ?
  [{"key": dyn(` + key + `), "operator": dyn("Exists"), "effect": dyn("NoExecute"), "tolerationSeconds": dyn(variables.` + t.v + `Limit)}] : []`},
			NativeExpression{t.v + "Replace", `size(variables.` + t.v + `Matches) == 0 ? [] :
  [variables.tolList[variables.` + t.v + `Matches[0]]].filter(t, t.?key.orValue("") != "" && has(t.tolerationSeconds) && t.tolerationSeconds > variables.` + t.v + `Limit)
    .map(t, {"op": dyn("replace"), "path": dyn("/spec/tolerations/" + string(variables.` + t.v + `Matches[0]) + "/tolerationSeconds"), "value": dyn(variables.` + t.v + `Limit)})`},
		)
		adds = append(adds, "variables."+t.v+"Add")
		replaces = append(replaces, "variables."+t.v+"Replace")
	}
	vars = append(vars,
		NativeExpression{"tolAdd", `variables.tolOn ? ` + strings.Join(adds, " + ") + ` : []`},
		NativeExpression{"tolReplace", `variables.tolOn ? ` + strings.Join(replaces, " + ") + ` : []`},
		NativeExpression{"tolPatch", `variables.tolReplace + (size(variables.tolAdd) == 0 ? [] :
  has(object.spec.tolerations) ? variables.tolAdd.map(t, {"op": dyn("add"), "path": dyn("/spec/tolerations/-"), "value": dyn(t)}) :
  [{"op": dyn("add"), "path": dyn("/spec/tolerations"), "value": dyn(variables.tolAdd)}])`},
	)
	return Native{
		Variables: vars,
		Patch:     "variables.tolPatch",
		Applies:   "size(variables.tolAdd) + size(variables.tolReplace) > 0",
	}
}
