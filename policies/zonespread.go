package policies

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// FeatureZoneSpread spreads a workload's replicas across zones.
const FeatureZoneSpread Feature = "zoneSpread"

// zoneSpreadInjection adds a topologySpreadConstraints entry that spreads a
// workload's replicas across the values of a node label (zones, by default):
// the anti-affinity keeps replicas off a shared node, and on a cluster with
// more nodes in one zone than in the others they can still all land in that
// zone, which its loss then takes whole.
//
// With DoNotSchedule the entry sets nodeTaintsPolicy Honor and no minDomains:
// the nodes of a lost zone are tainted unreachable, and must stop counting as
// a domain, or every placement of its pods' replacements in the zones left
// would exceed the skew against the dead zone's zero (what minDomains, or the
// default nodeTaintsPolicy Ignore, would keep counting).
type zoneSpreadInjection struct{}

var _ Injection = zoneSpreadInjection{}

// zoneSpreadRecord is the key of its part of the record: the constraint added.
const zoneSpreadRecord = "zoneSpread"

var topologySpreadPart = specField("topologySpreadConstraints",
	func(s *corev1.PodSpec) *[]corev1.TopologySpreadConstraint { return &s.TopologySpreadConstraints })

func (zoneSpreadInjection) Feature() Feature { return FeatureZoneSpread }

func (zoneSpreadInjection) Parts() []Part { return []Part{topologySpreadPart} }

// Needs: the number of zones, so that a cluster of one zone gets no constraint.
func (zoneSpreadInjection) Needs(policy *v1alpha1.HAPolicy, _ Workload) Needs {
	z := policy.Spec.ZoneSpread
	if !enabled(z.Enabled) {
		return Needs{}
	}
	return Needs{TopologyKeys: []string{z.TopologyKey}}
}

func (zoneSpreadInjection) Apply(in *Input) []Decision {
	z := in.Policy.Spec.ZoneSpread
	skip := func(format string, args ...any) []Decision {
		return []Decision{{Feature: FeatureZoneSpread, Action: Skipped, Reason: fmt.Sprintf(format, args...)}}
	}
	if !enabled(z.Enabled) {
		return skip("disabled by the policy")
	}
	if zones, known := in.Context.Cluster.TopologyDomains[z.TopologyKey]; known && zones < 2 {
		return skip("%d %s domain(s) in the cluster: nothing to spread across", zones, z.TopologyKey)
	}
	minReplicas := *in.Policy.Spec.AntiAffinity.MinReplicas
	if replicas, known := in.Workload.replicas(); known && replicas < minReplicas {
		return skip("%d replica(s), fewer than minReplicas %d", replicas, minReplicas)
	}
	selector := in.Workload.replicaSelector(in.Labels)
	if selector == nil {
		return skip("no labels that identify the workload's replicas, so no selector to spread them by")
	}
	spec := in.Spec
	if slices.ContainsFunc(spec.TopologySpreadConstraints, func(c corev1.TopologySpreadConstraint) bool { return c.TopologyKey == z.TopologyKey }) {
		return []Decision{{Feature: FeatureZoneSpread, Action: Kept, Reason: fmt.Sprintf("the workload already has a topology spread constraint on %s", z.TopologyKey)}}
	}

	c := corev1.TopologySpreadConstraint{
		MaxSkew:           *z.MaxSkew,
		TopologyKey:       z.TopologyKey,
		WhenUnsatisfiable: corev1.UnsatisfiableConstraintAction(z.WhenUnsatisfiable),
		LabelSelector:     selector,
	}
	if !selectsOn(selector, templateHashLabel) {
		// Only pods of the same ReplicaSet count, so a rolling update is
		// never blocked by the old ReplicaSet's pods.
		c.MatchLabelKeys = []string{templateHashLabel}
	}
	reason := fmt.Sprintf("topology spread on %s, maxSkew %d, %s", z.TopologyKey, c.MaxSkew, c.WhenUnsatisfiable)
	if z.WhenUnsatisfiable == v1alpha1.DoNotSchedule {
		c.NodeTaintsPolicy = ptr.To(corev1.NodeInclusionPolicyHonor)
		reason += ", nodeTaintsPolicy Honor (a lost zone's tainted nodes stop counting)"
	}
	spec.TopologySpreadConstraints = append(spec.TopologySpreadConstraints, c)
	in.Record.Put(zoneSpreadRecord, c)
	return []Decision{{Feature: FeatureZoneSpread, Action: Applied, Reason: reason}}
}

// Undo removes the recorded constraint when it is still as added; a
// constraint on its key that is not the recorded one is the user's now.
func (zoneSpreadInjection) Undo(rec *Record, spec *corev1.PodSpec) []Decision {
	var c corev1.TopologySpreadConstraint
	if !rec.Part(zoneSpreadRecord, &c) {
		return nil
	}
	i := slices.IndexFunc(spec.TopologySpreadConstraints, func(x corev1.TopologySpreadConstraint) bool { return equality.Semantic.DeepEqual(x, c) })
	if i >= 0 {
		spec.TopologySpreadConstraints = slices.Delete(spec.TopologySpreadConstraints, i, i+1)
		if len(spec.TopologySpreadConstraints) == 0 {
			spec.TopologySpreadConstraints = nil
		}
		return nil
	}
	if slices.ContainsFunc(spec.TopologySpreadConstraints, func(x corev1.TopologySpreadConstraint) bool { return x.TopologyKey == c.TopologyKey }) {
		return []Decision{keptByUser(FeatureZoneSpread, "the recorded topology spread constraint on %s", c.TopologyKey)}
	}
	return nil
}

// Native: the same constraint, skipped where the HAPolicy's status (kept by
// serve) counts fewer than two zones.
func (zoneSpreadInjection) Native(NativeSettings) Native {
	d := v1alpha1.NewDefault().Spec.ZoneSpread
	return Native{
		Variables: []NativeExpression{
			{"zsOn", `variables.spec.?zoneSpread.?enabled.orValue(true)`},
			{"zsKey", `variables.spec.?zoneSpread.?topologyKey.orValue(` + celQuote(d.TopologyKey) + `)`},
			{"zsSkew", fmt.Sprintf(`variables.spec.?zoneSpread.?maxSkew.orValue(%d)`, *d.MaxSkew)},
			{"zsWhen", `variables.spec.?zoneSpread.?whenUnsatisfiable.orValue(` + celQuote(string(d.WhenUnsatisfiable)) + `)`},
			{"zsZones", `params.?status.?topologyDomains[?variables.zsKey]`},
			{"zsApplies", `variables.zsOn && !(variables.zsZones.hasValue() && variables.zsZones.value() < 2) && size(variables.selector) > 0 &&
  !object.spec.?topologySpreadConstraints.orValue([]).exists(c, c.topologyKey == variables.zsKey)`},
			// With DoNotSchedule, nodeTaintsPolicy Honor (CEL maps do not concatenate).
			{"zsConstraint", `variables.zsWhen == "DoNotSchedule" ? ` + zoneSpreadCEL(`, "nodeTaintsPolicy": dyn("Honor")`) + ` : ` + zoneSpreadCEL("")},
			{"zsPatch", `!variables.zsApplies ? [] :
  has(object.spec.topologySpreadConstraints) ? [{"op": dyn("add"), "path": dyn("/spec/topologySpreadConstraints/-"), "value": dyn(variables.zsConstraint)}] :
  [{"op": dyn("add"), "path": dyn("/spec/topologySpreadConstraints"), "value": dyn([variables.zsConstraint])}]`},
		},
		Patch:   "variables.zsPatch",
		Applies: "variables.zsApplies",
	}
}

// zoneSpreadCEL is the constraint as a CEL map, with more fields.
func zoneSpreadCEL(more string) string {
	return `{"maxSkew": dyn(variables.zsSkew), "topologyKey": dyn(variables.zsKey), "whenUnsatisfiable": dyn(variables.zsWhen),
  "labelSelector": dyn({"matchLabels": variables.selector}), "matchLabelKeys": dyn([` + celQuote(templateHashLabel) + `])` + more + `}`
}
