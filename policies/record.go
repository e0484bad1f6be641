package policies

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// RecordVersion is the version of the Record format written in the
// StatusAnnotation. Version 1 recorded the init container by its image and
// command only; version 2 records the whole container. A record without a
// version (the format before undo data) is read as carrying nothing to undo.
const RecordVersion = 2

// recordVersion1 is the first versioned format, still read: a Deployment
// injected by an earlier release carries it.
const recordVersion1 = 1

// Record is the JSON in the StatusAnnotation: what ha-injector changed in a
// pod template, with what it takes to undo it. It is written on the mutated
// object and, for a Deployment, in its pod template too, so every pod carries
// it. It is the product's memory: the next admission first undoes what the
// record says, then applies the current policy, so a changed policy, an
// opt-out or a namespace that stops opting in reaches the workload.
type Record struct {
	// Version is RecordVersion.
	Version int `json:"v"`
	// Policy is the HAPolicy applied; Hash is a short hash of its spec.
	Policy string `json:"policy"`
	Hash   string `json:"hash,omitempty"`
	// Applied lists the features that changed the template.
	Applied []Feature `json:"applied,omitempty"`
	// Skipped maps each feature that did not change the template to why.
	Skipped map[Feature]string `json:"skipped,omitempty"`

	// AntiAffinity is the term added, if any.
	AntiAffinity *RecordedTerm `json:"antiAffinity,omitempty"`
	// Tolerations are the not-ready / unreachable tolerations added or shortened.
	Tolerations []RecordedToleration `json:"tolerations,omitempty"`
	// Sysctls are the name=value pairs added to the pod securityContext.
	Sysctls []string `json:"sysctls,omitempty"`
	// InitContainer is the ha-sysctl container inserted first, whole (a
	// version-1 record holds only its image and command).
	InitContainer *corev1.Container `json:"initContainer,omitempty"`
}

// RecordedTerm is an anti-affinity term ha-injector added: a required term,
// or a preferred one with its weight.
type RecordedTerm struct {
	Weight int32                  `json:"weight,omitempty"`
	Term   corev1.PodAffinityTerm `json:"term"`
}

// RecordedToleration is a NoExecute toleration of Key set to Seconds: added
// when Was is nil, else shortened from Was.
type RecordedToleration struct {
	Key     string `json:"key"`
	Seconds int64  `json:"seconds"`
	Was     *int64 `json:"was,omitempty"`
}

// injected reports whether the record says anything was changed.
func (r *Record) injected() bool {
	return r != nil && (r.AntiAffinity != nil || len(r.Tolerations) > 0 || len(r.Sysctls) > 0 || r.InitContainer != nil)
}

// CarriesSysctlContainer reports whether a pod template holds the ha-sysctl
// init container its own record says ha-injector injected (not a user's
// container of that name).
func CarriesSysctlContainer(tmpl *corev1.PodTemplateSpec) bool {
	rec := ReadRecord(tmpl.Annotations)
	if rec == nil || rec.InitContainer == nil {
		return false
	}
	return slices.ContainsFunc(tmpl.Spec.InitContainers, func(c corev1.Container) bool { return isRecordedContainer(rec.InitContainer, &c) })
}

// absorb returns r with the parts of later, an injection made on top of the
// one r records; later's policy and hash, as the last applied. A feature r
// applied keeps r's account of it.
func (r *Record) absorb(later *Record) *Record {
	out := *r
	out.Version, out.Policy, out.Hash = RecordVersion, later.Policy, later.Hash
	if out.AntiAffinity == nil {
		out.AntiAffinity = later.AntiAffinity
	}
	out.Tolerations = append(slices.Clone(r.Tolerations), later.Tolerations...)
	out.Sysctls = append(slices.Clone(r.Sysctls), later.Sysctls...)
	if out.InitContainer == nil {
		out.InitContainer = later.InitContainer
	}
	for _, f := range later.Applied {
		if !slices.Contains(out.Applied, f) {
			out.Applied = append(out.Applied, f)
		}
	}
	// What the earlier injection applied, a later one only finds there (kept).
	out.Skipped = maps.Clone(r.Skipped)
	for f, why := range later.Skipped {
		if !slices.Contains(r.Applied, f) {
			if out.Skipped == nil {
				out.Skipped = map[Feature]string{}
			}
			out.Skipped[f] = why
		}
	}
	return &out
}

// ReadRecord decodes the StatusAnnotation of annotations. It returns nil when
// there is none, or when it is not a record of the current format (the
// earlier, unversioned one carries no undo data: nothing of it is undone).
func ReadRecord(annotations map[string]string) *Record {
	raw, ok := annotations[StatusAnnotation]
	if !ok {
		return nil
	}
	var r Record
	if err := json.Unmarshal([]byte(raw), &r); err != nil || (r.Version != RecordVersion && r.Version != recordVersion1) {
		return nil
	}
	if r.Version == recordVersion1 && r.InitContainer != nil {
		// The container that release injected for this image and command,
		// which was this release's.
		c := sysctlContainerRun(r.InitContainer.Image, r.InitContainer.Command)
		r.InitContainer = &c
	}
	return &r
}

// encode renders the record as the annotation's value.
func (r *Record) encode() string {
	b, err := json.Marshal(r)
	if err != nil {
		// Every field is a plain value; this cannot fail.
		panic(fmt.Sprintf("encoding the status record: %v", err))
	}
	return string(b)
}

// policyHash is a short hash of a policy's spec, so a record says which
// version of the policy made it.
func policyHash(p *v1alpha1.HAPolicy) string {
	if !stored(p) {
		return hashSpec(p)
	}
	return versionOf(p).hash
}

func hashSpec(p *v1alpha1.HAPolicy) string {
	b, _ := json.Marshal(p.Spec)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:4])
}

// stored reports whether p is a version of a policy the API server holds: it
// has a UID and a resourceVersion.
func stored(p *v1alpha1.HAPolicy) bool { return p.UID != "" && p.ResourceVersion != "" }

// policyVersion is what the engine derives from one version of a policy: the
// policy with its defaults (shared, read only), the hash of its spec, and
// what Validate finds wrong with it.
type policyVersion struct {
	resourceVersion string
	defaulted       *v1alpha1.HAPolicy
	hash            string
	invalid         error
}

// versionOf returns what the engine derives from p: once per version of a
// stored policy, the webhook handing the engine the same few policies on
// every admission; on every call for any other (a file given to preview).
func versionOf(p *v1alpha1.HAPolicy) policyVersion {
	if stored(p) {
		policyVersions.Lock()
		v, ok := policyVersions.byUID[p.UID]
		policyVersions.Unlock()
		if ok && v.resourceVersion == p.ResourceVersion {
			return v
		}
	}
	d := p.DeepCopy()
	d.Default()
	v := policyVersion{resourceVersion: p.ResourceVersion, defaulted: d, hash: hashSpec(d)}
	if errs := d.Validate(); len(errs) > 0 {
		v.invalid = &InvalidPolicyError{Policy: p.Name, Errs: errs}
	}
	if stored(p) {
		policyVersions.Lock()
		defer policyVersions.Unlock()
		if len(policyVersions.byUID) >= maxPolicyVersions {
			clear(policyVersions.byUID) // policies deleted over the years
		}
		policyVersions.byUID[p.UID] = v
	}
	return v
}

// policyVersions holds the last version seen of each stored policy.
var policyVersions = struct {
	sync.Mutex
	byUID map[types.UID]policyVersion
}{byUID: map[types.UID]policyVersion{}}

const maxPolicyVersions = 4096

// undo removes from spec what rec says ha-injector injected, part by part. A
// part the user has changed since (it no longer matches the record) is the
// user's and stays; each such part gets a Kept decision. It returns the
// removed init container as stored (with the API server's defaults), so an
// identical re-injection can put it back unchanged.
func undo(rec *Record, spec *corev1.PodSpec) ([]Decision, *corev1.Container) {
	if !rec.injected() {
		return nil, nil
	}
	var notes []Decision
	userKept := func(f Feature, format string, args ...any) {
		notes = append(notes, Decision{Feature: f, Action: Kept, Reason: fmt.Sprintf(format, args...) + ": changed since ha-injector set it, so it is the workload's own now"})
	}

	// A part that is gone, or back at the workload's own value, was undone by
	// the user (a manifest re-applied whole): nothing to note. A part still
	// there with another value is the user's now.
	if t := rec.AntiAffinity; t != nil && !removeTerm(spec, t) && podAntiAffinityOn(spec, t.Term.TopologyKey) != "" {
		userKept(FeatureAntiAffinity, "the recorded anti-affinity term on %s", t.Term.TopologyKey)
	}
	for _, rt := range rec.Tolerations {
		if !undoToleration(spec, rt) && tolerationChanged(spec, rt) {
			userKept(FeatureTolerations, "the %s toleration", rt.Key)
		}
	}
	for _, s := range rec.Sysctls {
		if !removeSysctl(spec, s) && hasSysctlNamed(spec, s) {
			userKept(FeatureSysctls, "securityContext sysctl %s", s)
		}
	}
	var removed *corev1.Container
	if c := rec.InitContainer; c != nil {
		if removed = removeInitContainer(spec, c); removed == nil && hasContainer(spec, SysctlContainerName) {
			userKept(FeatureSysctls, "the %s init container", SysctlContainerName)
		}
	}
	return notes, removed
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

func hasSysctlNamed(spec *corev1.PodSpec, pair string) bool {
	if spec.SecurityContext == nil {
		return false
	}
	name, _, _ := strings.Cut(pair, "=")
	return slices.ContainsFunc(spec.SecurityContext.Sysctls, func(s corev1.Sysctl) bool { return s.Name == name })
}

func removeSysctl(spec *corev1.PodSpec, pair string) bool {
	if spec.SecurityContext == nil {
		return false
	}
	list := spec.SecurityContext.Sysctls
	i := slices.IndexFunc(list, func(s corev1.Sysctl) bool { return s.Name+"="+s.Value == pair })
	if i < 0 {
		return false
	}
	spec.SecurityContext.Sysctls = slices.Delete(list, i, i+1)
	if len(spec.SecurityContext.Sysctls) == 0 {
		spec.SecurityContext.Sysctls = nil
	}
	return true
}

func removeInitContainer(spec *corev1.PodSpec, c *corev1.Container) *corev1.Container {
	i := slices.IndexFunc(spec.InitContainers, func(x corev1.Container) bool { return isRecordedContainer(c, &x) })
	if i < 0 {
		return nil
	}
	removed := spec.InitContainers[i].DeepCopy()
	spec.InitContainers = slices.Delete(spec.InitContainers, i, i+1)
	if len(spec.InitContainers) == 0 {
		spec.InitContainers = nil
	}
	return removed
}

// isRecordedContainer reports whether x is the init container the record
// describes: the whole container, not only its name, image and command, so
// that a record copied onto a workload of its own (the annotation is the
// user's to write) never makes ha-injector take the user's container of that
// name, with its own args, mounts or privileges, for its own. What the API
// server adds to every container does not count: the defaults of
// terminationMessagePath and imagePullPolicy, and the ServiceAccount token
// mount that the ServiceAccount admission plugin adds before webhooks run.
func isRecordedContainer(recorded, x *corev1.Container) bool {
	if x.Name != SysctlContainerName || x.Image != recorded.Image {
		return false
	}
	a, b := withoutServerDefaults(recorded), withoutServerDefaults(x)
	// Quantities compare by value ("16Mi" is 16777216), the rest as it is.
	if !sameQuantities(a.Resources.Requests, b.Resources.Requests) || !sameQuantities(a.Resources.Limits, b.Resources.Limits) {
		return false
	}
	a.Resources.Requests, a.Resources.Limits = nil, nil
	b.Resources.Requests, b.Resources.Limits = nil, nil
	return reflect.DeepEqual(a, b)
}

// sameQuantities compares two resource lists by value.
func sameQuantities(x, y corev1.ResourceList) bool {
	if len(x) != len(y) {
		return false
	}
	for name, q := range x {
		if other, ok := y[name]; !ok || q.Cmp(other) != 0 {
			return false
		}
	}
	return true
}

// serviceAccountMountPath is where the ServiceAccount admission plugin mounts
// the token volume (kube-api-access-<random>) into every container.
const serviceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// withoutServerDefaults returns a shallow copy of c without what the API
// server sets on every container it stores: the defaults of
// SetDefaults_Container and the ServiceAccount token mount. It shares c's
// lists but the mounts, which it copies only to leave the token out.
func withoutServerDefaults(c *corev1.Container) corev1.Container {
	out := *c
	if out.TerminationMessagePath == corev1.TerminationMessagePathDefault {
		out.TerminationMessagePath = ""
	}
	if out.TerminationMessagePolicy == corev1.TerminationMessageReadFile {
		out.TerminationMessagePolicy = ""
	}
	if out.ImagePullPolicy == defaultPullPolicy(out.Image) {
		out.ImagePullPolicy = ""
	}
	token := func(m corev1.VolumeMount) bool {
		return m.MountPath == serviceAccountMountPath && m.ReadOnly && strings.HasPrefix(m.Name, "kube-api-access-")
	}
	if slices.ContainsFunc(out.VolumeMounts, token) {
		out.VolumeMounts = slices.DeleteFunc(slices.Clone(out.VolumeMounts), token)
	}
	if len(out.VolumeMounts) == 0 {
		out.VolumeMounts = nil
	}
	return out
}

// defaultPullPolicy is the imagePullPolicy the API server gives a container
// that sets none (SetDefaults_Container, with ParseImageName): Always when the
// tag is latest, or when there is neither a tag nor a digest (latest is then
// implied); IfNotPresent otherwise.
func defaultPullPolicy(image string) corev1.PullPolicy {
	name, digest, _ := strings.Cut(image, "@")
	name = name[strings.LastIndex(name, "/")+1:]
	_, tag, _ := strings.Cut(name, ":")
	if tag == "latest" || (tag == "" && digest == "") {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}
