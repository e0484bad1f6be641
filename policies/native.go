package policies

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	sysctlname "github.com/ha-injector/ha-injector/internal/sysctl"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Native mode: the API server applies an HAPolicy to a pod itself, through a
// MutatingAdmissionPolicy whose parameters are the HAPolicy. Each injection
// has a CEL counterpart (Injection.Native); CompileNative assembles them with
// the variables they share into one NativeProgram, which package native turns
// into the admission policies.
//
// CEL reads only the pod, its namespace and the HAPolicy (with its status,
// where serve keeps the facts CEL cannot read: the number of topology
// domains). What it cannot know, native mode treats as the engine treats an
// unknown fact for a pod whose owner could not be read: the replica count is
// unknown (a Required anti-affinity is made Preferred, minReplicas does not
// skip), and an opt-out annotation on the Deployment (copied to its
// ReplicaSet) is not seen. NativeDifferences lists these for docs/native-mode.md and
// the differential test.
//
// Every variable is computed from the pod as it was admitted (there is one
// mutation, a list of JSON Patch operations on disjoint parts), so the
// injections decide as the engine does, from the same input.

// NativeSettings are the installation's settings compiled into native mode's
// policies, as serve's flags give them to the webhook.
type NativeSettings struct {
	// SysctlImage is the image of the ha-sysctl init container (--sysctl-image).
	SysctlImage string `json:"sysctlImage,omitempty"`
	// AllowedSysctlImages are the images an HAPolicy may name (nil: SysctlImage alone).
	AllowedSysctlImages []string `json:"allowedSysctlImages,omitempty"`
	// PodSecurity is the cluster's Pod Security default (--pod-security-default-level).
	PodSecurity PodSecurityDefault `json:"podSecurity,omitzero"`
}

// Native is an injection's CEL counterpart.
type Native struct {
	// Variables are the CEL variables it defines, in order; they may use
	// those of CompileNative (NativeCommonVariables) and their own.
	Variables []NativeExpression
	// Patch is a CEL expression of type list(JSONPatch): its operations on
	// its parts of the pod, computed from the pod as admitted.
	Patch string
	// Applies is a CEL bool expression: it applies something (the feature
	// goes into the record's applied list).
	Applies string
	// Warnings are what a person creating the pod is told, as the webhook's
	// warnings tell it (the companion ValidatingAdmissionPolicy evaluates
	// them on the pod after mutation).
	Warnings []NativeWarning
}

// NativeExpression is a named CEL expression: a variable or a match condition.
type NativeExpression struct {
	Name       string
	Expression string
}

// NativeWarning is a warning: Message (a CEL string expression) when
// Condition (a CEL bool expression) holds.
type NativeWarning struct {
	Condition string
	Message   string
}

// NativeProgram is native mode's whole program: the MutatingAdmissionPolicy
// evaluates MatchConditions, Variables and Patch; the companion validating
// policy MatchConditions, Variables and Warnings.
type NativeProgram struct {
	// MatchConditions leave alone the pods the engine skips whole (opted out,
	// mirror and DaemonSet pods).
	MatchConditions []NativeExpression
	Variables       []NativeExpression
	// Patch is the one mutation, of type list(JSONPatch).
	Patch string
	// Warnings are the validating policy's.
	Warnings []NativeWarning
}

// NativeDifference is something native mode does unlike the webhook, because
// CEL cannot read what the webhook reads.
type NativeDifference struct {
	// Fixtures are the golden cases (file names without .yaml) whose result
	// differs because of it; the differential test allows exactly these.
	Fixtures []string
	What     string
}

// NativeDifferences lists what native mode does unlike the webhook.
func NativeDifferences() []NativeDifference {
	return []NativeDifference{
		{What: "The replica count of a pod's workload is unknown (CEL cannot read its ReplicaSet or StatefulSet): a Required anti-affinity is made Preferred, " +
			"as the webhook does for a pod whose owner it cannot read, and antiAffinity.minReplicas skips nothing (a one-replica Deployment's pod gets the anti-affinity and the zone spread, which cost it nothing).",
			Fixtures: []string{"pod-owner-one-replica", "pod-required-statefulset-3", "pod-zone-spread-one-replica",
				"deployment-one-replica", "deployment-replicas-unset", "deployment-min-replicas-policy", "deployment-required",
				"deployment-converge-reapplied-manifest", "deployment-converge-user-600s"}},
		{What: "An opt-out annotation on a Deployment (which its controller copies to the ReplicaSet, not to the pods) is not seen: opt a workload out on its pod template instead.",
			Fixtures: []string{"pod-owner-opted-out", "deployment-opt-out", "deployment-converge-opt-out"}},
		{What: "The ha-sysctl init container that a webhook-mode Deployment's template carries is not taken out of its pods when the namespace's Pod Security level was raised since " +
			"(the webhook finds it in the template's record, which CEL cannot parse): clean such Deployments when switching modes (doctor --workloads lists them).",
			Fixtures: []string{"pod-psa-raised-removes-init"}},
		{What: "The record (annotation ha-injector.io/status) names the policy and the features applied, with \"native\": true; not the parts and the policy's hash, which CEL cannot encode.",
			Fixtures: nil},
	}
}

// NativeRecord is the record native mode's admission policy writes for a pod
// that policy applied features to (the "record" variable of CompileNative).
func NativeRecord(policy string, applied []Feature) string {
	quoted := make([]string, len(applied))
	for i, f := range applied {
		quoted[i] = `"` + string(f) + `"`
	}
	return `{"v":` + strconv.Itoa(RecordVersion) + `,"policy":"` + policy + `","native":true,"applied":[` + strings.Join(quoted, ",") + `]}`
}

// CompileNative compiles the registered injections into native mode's program
// for an installation's settings.
func CompileNative(s NativeSettings) NativeProgram {
	p := NativeProgram{
		MatchConditions: nativeMatchConditions(),
		Variables:       nativeCommonVariables(s),
	}
	var patches, applied []string
	for _, inj := range registered {
		n := inj.Native(s)
		p.Variables = append(p.Variables, n.Variables...)
		patches = append(patches, "("+n.Patch+")")
		applied = append(applied, fmt.Sprintf("((%s) ? [%s] : [])", n.Applies, celQuote(string(inj.Feature()))))
		p.Warnings = append(p.Warnings, n.Warnings...)
	}
	p.Variables = append(p.Variables,
		NativeExpression{"applied", strings.Join(applied, " + ")},
		NativeExpression{"record", `'{"v":` + strconv.Itoa(RecordVersion) + `,"policy":' + variables.policyQuoted + ',"native":true,"applied":[' + variables.applied.map(f, '"' + f + '"').join(",") + ']}'`},
		NativeExpression{"recordPatch", `size(variables.applied) == 0 ? [] : has(object.metadata.annotations) ?
  [{"op": dyn("add"), "path": dyn("/metadata/annotations/" + ` + celQuote(strings.ReplaceAll(StatusAnnotation, "/", "~1")) + `), "value": dyn(variables.record)}] :
  [{"op": dyn("add"), "path": dyn("/metadata/annotations"), "value": dyn({` + celQuote(StatusAnnotation) + `: variables.record})}]`},
	)
	// Only the mutation may build JSONPatch values: the variables build
	// their operations as maps.
	p.Variables = append(p.Variables, NativeExpression{"operations", "!variables.enforce ? [] : " + strings.Join(patches, " + ") + " + variables.recordPatch"})
	p.Patch = `variables.operations.map(o, JSONPatch{op: o.op, path: o.path, value: o.value})`
	p.Warnings = append([]NativeWarning{
		{Condition: "!variables.valid", Message: `'HAPolicy ' + variables.policyName + ' is invalid: ' + variables.invalid[0] + ': nothing applied, the pod is left as it is'`},
		{Condition: `variables.valid && variables.mode == "Audit" && size(variables.applied) > 0`,
			Message: `'HAPolicy ' + variables.policyName + ' is in Audit mode: would apply ' + variables.applied.join(', ')`},
	}, p.Warnings...)
	return p
}

// nativeMatchConditions skip the pods the engine leaves alone whatever the policy.
func nativeMatchConditions() []NativeExpression {
	return []NativeExpression{
		{"not-opted-out", `object.metadata.?annotations[?` + celQuote(InjectAnnotation) + `].orValue("") != "false"`},
		{"not-a-mirror-pod", `!(` + celQuote(mirrorPodAnnotation) + ` in object.metadata.?annotations.orValue({}))`},
		{"not-a-daemonset-pod", `!object.metadata.?ownerReferences.orValue([]).exists(r, r.kind == "DaemonSet")`},
	}
}

// nativeCommonVariables are the variables every injection may use: the
// policy's validity and mode, the replicas' selector, the namespace's Pod
// Security.
func nativeCommonVariables(s NativeSettings) []NativeExpression {
	perPod := slices.Sorted(maps.Keys(perPodLabels))
	level, version := s.PodSecurity.Level, s.PodSecurity.Version
	return []NativeExpression{
		{"policyName", `params.metadata.name`},
		{"policyQuoted", `'"' + params.metadata.name + '"'`},
		{"spec", `params.?spec.orValue({})`},
		{"mode", `variables.spec.?mode.orValue("` + string(v1alpha1.ModeEnforce) + `")`},
		{"sysctlValues", `variables.spec.?sysctls.?values.orValue(` + celStringMap(defaultSysctlValues()) + `)`},
		{"invalid", nativeValidation()},
		{"valid", `size(variables.invalid) == 0`},
		{"enforce", `variables.valid && variables.mode == "` + string(v1alpha1.ModeEnforce) + `"`},
		{"labels", `object.metadata.?labels.orValue({})`},
		// The pod's labels without the per-pod and per-revision ones, as the
		// engine's replicaSelector makes them for a pod.
		{"selector", `variables.labels.transformMap(k, v, !(k in ` + celList(perPod) + `), v)`},
		{"nsLabels", `namespaceObject.metadata.?labels.orValue({})`},
		// effectivePodSecurity: the namespace's label, else the cluster's
		// default, else privileged; a level that is not one counts as restricted.
		{"psLabelled", celQuote(PodSecurityEnforceLabel) + ` in variables.nsLabels`},
		{"psRaw", `variables.psLabelled ? variables.nsLabels[` + celQuote(PodSecurityEnforceLabel) + `] : ` + celQuote(orDefault(level, PodSecurityPrivileged))},
		{"psLevel", `variables.psRaw in ["privileged", "baseline", "restricted"] ? variables.psRaw : "restricted"`},
		{"psVersion", `variables.nsLabels[?` + celQuote(PodSecurityEnforceVersionLabel) + `].orValue(` + celQuote(version) + `)`},
		// The minor of a version "v1.N" (-1: the newest), as podSecurityAllows reads it.
		{"psMinor", `variables.psVersion.matches("^v1\\.[0-9]") ? int(variables.psVersion.substring(3).find("^[0-9]+")) : -1`},
		{"psAt", `variables.psVersion != "" && variables.psVersion != "latest" ? " at " + variables.psVersion : ""`},
		// podSecurity.String.
		{"psText", `variables.psLabelled ? (variables.psRaw == variables.psLevel ?
  'namespace enforces Pod Security "' + variables.psLevel + '"' + variables.psAt :
  'namespace enforces Pod Security level "' + variables.psRaw + '"' + variables.psAt + ', not a level, which Pod Security enforces as "' + variables.psLevel + '"') :
  'the cluster\'s default Pod Security level "' + variables.psLevel + '"' + variables.psAt + ' applies (--pod-security-default-level)'`},
	}
}

// nativeValidation is a CEL list of the policy's violations of the CRD's
// rules (HAPolicy.Validate), each worded with its field: a policy stored
// under an older CRD, or with its validation relaxed, is applied by the
// webhook only if it passes Validate, and so by native mode.
func nativeValidation() string {
	d := v1alpha1.NewDefault().Spec
	topo := strconv.Quote(topologyKeyPattern)
	rules := []struct{ ok, msg string }{
		{`variables.spec.?mode.orValue("Enforce") in ["Enforce", "Audit"]`, `spec.mode`},
		{`variables.spec.?antiAffinity.?type.orValue("Preferred") in ["Preferred", "Required"]`, `spec.antiAffinity.type`},
		{fmt.Sprintf(`variables.spec.?antiAffinity.?topologyKey.orValue(%q).matches(%s) && size(variables.spec.?antiAffinity.?topologyKey.orValue(%q)) <= 317`, d.AntiAffinity.TopologyKey, topo, d.AntiAffinity.TopologyKey), `spec.antiAffinity.topologyKey`},
		{fmt.Sprintf(`variables.spec.?antiAffinity.?weight.orValue(%d) >= 1 && variables.spec.?antiAffinity.?weight.orValue(%d) <= 100`, *d.AntiAffinity.Weight, *d.AntiAffinity.Weight), `spec.antiAffinity.weight`},
		{fmt.Sprintf(`variables.spec.?antiAffinity.?minReplicas.orValue(%d) >= 1`, *d.AntiAffinity.MinReplicas), `spec.antiAffinity.minReplicas`},
		{fmt.Sprintf(`variables.spec.?zoneSpread.?topologyKey.orValue(%q).matches(%s) && size(variables.spec.?zoneSpread.?topologyKey.orValue(%q)) <= 317`, d.ZoneSpread.TopologyKey, topo, d.ZoneSpread.TopologyKey), `spec.zoneSpread.topologyKey`},
		{fmt.Sprintf(`variables.spec.?zoneSpread.?maxSkew.orValue(%d) >= 1`, *d.ZoneSpread.MaxSkew), `spec.zoneSpread.maxSkew`},
		{`variables.spec.?zoneSpread.?whenUnsatisfiable.orValue("ScheduleAnyway") in ["ScheduleAnyway", "DoNotSchedule"]`, `spec.zoneSpread.whenUnsatisfiable`},
		{fmt.Sprintf(`variables.spec.?tolerations.?notReadySeconds.orValue(%d) >= 0 && variables.spec.?tolerations.?notReadySeconds.orValue(%d) <= 3600`, *d.Tolerations.NotReadySeconds, *d.Tolerations.NotReadySeconds), `spec.tolerations.notReadySeconds`},
		{fmt.Sprintf(`variables.spec.?tolerations.?unreachableSeconds.orValue(%d) >= 0 && variables.spec.?tolerations.?unreachableSeconds.orValue(%d) <= 3600`, *d.Tolerations.UnreachableSeconds, *d.Tolerations.UnreachableSeconds), `spec.tolerations.unreachableSeconds`},
		{`variables.spec.?sysctls.?method.orValue("") in ["", "InitContainer", "PodSecurityContext", "Auto"]`, `spec.sysctls.method`},
		{`variables.spec.?sysctls.?image.orValue("") == "" || (size(variables.spec.sysctls.image) <= 512 && variables.spec.sysctls.image.matches("^[^\\s]+$"))`, `spec.sysctls.image`},
		{`size(variables.sysctlValues) <= 32`, `spec.sysctls.values: at most 32`},
		{`!variables.spec.?sysctls.?enabled.orValue(true) || size(variables.sysctlValues) > 0`, `spec.sysctls.values: at least one sysctl when sysctls are enabled`},
		{`variables.sysctlValues.all(n, ` + nativeSysctlOK("n", "variables.sysctlValues[n]") + `)`, `spec.sysctls.values: only namespaced sysctls with values of letters, digits, spaces and . _ : , / + -`},
	}
	list := make([]string, len(rules))
	for i, r := range rules {
		list[i] = fmt.Sprintf("((%s) ? [] : [%s])", r.ok, celQuote(r.msg))
	}
	return strings.Join(list, " +\n")
}

// topologyKeyPattern is the CRD's pattern of a topology key.
const topologyKeyPattern = `^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`

// nativeSysctlOK is sysctl.Check in CEL: a well-formed name of a namespaced
// sysctl and a value ha-sysctl accepts.
func nativeSysctlOK(name, value string) string {
	norm := nativeNormalize(name)
	var namespaced []string
	for _, n := range sysctlname.NamespacedNames() {
		namespaced = append(namespaced, n)
	}
	var prefixes []string
	for _, p := range sysctlname.NamespacedPrefixes() {
		prefixes = append(prefixes, norm+".startsWith("+celQuote(p)+")")
	}
	return fmt.Sprintf(`(%s.matches(%s) && (%s in %s || %s) && size(string(%s)) <= %d && string(%s).matches(%s))`,
		name, strconv.Quote(sysctlname.NamePattern), norm, celList(namespaced), strings.Join(prefixes, " || "),
		value, sysctlname.MaxValueLength, value, strconv.Quote(sysctlname.ValuePattern))
}

// nativeNormalize is sysctl.Normalize in CEL: a name whose first separator is
// '/' has its '.' and '/' swapped. '#' never occurs in a well-formed name.
func nativeNormalize(name string) string {
	return fmt.Sprintf(`((%[1]s.indexOf("/") >= 0 && (%[1]s.indexOf(".") < 0 || %[1]s.indexOf("/") < %[1]s.indexOf("."))) ? %[1]s.replace(".", "#").replace("/", ".").replace("#", "/") : %[1]s)`, name)
}

// celQuote writes s as a CEL string literal.
func celQuote(s string) string { return strconv.Quote(s) }

// celList writes a list of strings as a CEL list literal.
func celList(list []string) string {
	b, _ := json.Marshal(list)
	if list == nil {
		return "[]"
	}
	return string(b)
}

// celStringMap writes a map of strings as a CEL map literal.
func celStringMap(m map[string]string) string {
	b, _ := json.Marshal(m)
	return string(b)
}

// defaultSysctlValues are the sysctls of an empty policy.
func defaultSysctlValues() map[string]string {
	out := map[string]string{}
	for k, v := range v1alpha1.DefaultSysctls() {
		out[k] = string(v)
	}
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// celLiteral writes v, as it marshals to JSON, as a CEL literal whose maps'
// values are dyn (Kubernetes' CEL requires a map's values to be of one type).
func celLiteral(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var x any
	if err := json.Unmarshal(b, &x); err != nil {
		panic(err)
	}
	var write func(x any) string
	write = func(x any) string {
		switch t := x.(type) {
		case map[string]any:
			fields := make([]string, 0, len(t))
			for _, k := range slices.Sorted(maps.Keys(t)) {
				fields = append(fields, celQuote(k)+": dyn("+write(t[k])+")")
			}
			return "{" + strings.Join(fields, ", ") + "}"
		case []any:
			items := make([]string, len(t))
			for i := range t {
				items[i] = write(t[i])
			}
			return "[" + strings.Join(items, ", ") + "]"
		case string:
			return celQuote(t)
		case float64:
			return strconv.FormatFloat(t, 'f', -1, 64)
		case bool:
			return strconv.FormatBool(t)
		case nil:
			return "null"
		}
		panic(fmt.Sprintf("celLiteral: %T", x))
	}
	return write(x)
}
