package policies

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	sysctlname "github.com/ha-injector/ha-injector/internal/sysctl"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// safeSysctls is the kubelet's safe set, which the baseline Pod Security
// Standard also allows in securityContext.sysctls, with the Kubernetes minor
// version from which Pod Security allows each one (0: every version). The TCP
// keepalive ones are namespaced and safe since 1.29.
var safeSysctls = map[string]int{
	"kernel.shm_rmid_forced":              0,
	"net.ipv4.ip_local_port_range":        0,
	"net.ipv4.ip_unprivileged_port_start": 0,
	"net.ipv4.tcp_syncookies":             0,
	"net.ipv4.ping_group_range":           0,
	"net.ipv4.ip_local_reserved_ports":    27,
	"net.ipv4.tcp_keepalive_time":         29,
	"net.ipv4.tcp_fin_timeout":            29,
	"net.ipv4.tcp_keepalive_intvl":        29,
	"net.ipv4.tcp_keepalive_probes":       29,
	"net.ipv4.tcp_rmem":                   32,
	"net.ipv4.tcp_wmem":                   32,
}

// canonicalSysctl writes a sysctl name with dots, as the kubelet converts it:
// net/ipv4/tcp_retries2 and net.ipv4.tcp_retries2 are the same sysctl.
func canonicalSysctl(name string) string { return sysctlname.Normalize(name) }

// IsSafeSysctl reports whether the kubelet (of a current Kubernetes) allows
// the sysctl in a pod's securityContext without --allowed-unsafe-sysctls.
// Names may use '/' or '.'.
func IsSafeSysctl(name string) bool {
	_, ok := safeSysctls[canonicalSysctl(name)]
	return ok
}

// podSecurityAllows reports whether the baseline Pod Security Standard, at
// the version a namespace pins with pod-security.kubernetes.io/enforce-version
// ("latest", empty or unparseable: the newest), allows the sysctl.
func podSecurityAllows(name, version string) bool {
	since, ok := safeSysctls[canonicalSysctl(name)]
	if !ok {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(version, "v%d.%d", &major, &minor); err != nil || major != 1 {
		return true
	}
	return minor >= since
}

// sysctl is one name=value pair to set.
type sysctl struct{ name, value string }

func (s sysctl) String() string { return s.name + "=" + s.value }

// FeatureSysctls sets TCP sysctls in the pod's network namespace.
const FeatureSysctls Feature = "sysctls"

// sysctlsInjection sets the policy's sysctls through the pod securityContext,
// the ha-sysctl init container (inserted first), or both: it splits them
// between the two, lets Pod Security and the installation's allowed images
// move or drop what they reject, then sets each part.
type sysctlsInjection struct{}

var _ Injection = sysctlsInjection{}

// The keys of its parts of the record: the name=value pairs added to the
// securityContext, and the init container inserted, whole (a version-1
// record holds only its image and command).
const (
	sysctlsRecord       = "sysctls"
	initContainerRecord = "initContainer"
)

var (
	sysctlsPart = nestedField("securityContext", "sysctls",
		func(s *corev1.PodSpec) **corev1.PodSecurityContext { return &s.SecurityContext },
		func(c *corev1.PodSecurityContext) any { return c.Sysctls })
	initContainersPart = func() Part {
		p := specField("initContainers", func(s *corev1.PodSpec) *[]corev1.Container { return &s.InitContainers })
		p.Head = func(c any) bool { return c.(corev1.Container).Name == SysctlContainerName }
		return p
	}()
)

func (sysctlsInjection) Feature() Feature { return FeatureSysctls }

func (sysctlsInjection) Parts() []Part { return []Part{sysctlsPart, initContainersPart} }

func (sysctlsInjection) Needs(*v1alpha1.HAPolicy, Workload) Needs { return Needs{} }

func (sysctlsInjection) Apply(in *Input) []Decision {
	var decisions []Decision
	if in.Workload.Kind == KindPod {
		decisions = dropPrivilegedInit(in)
	}
	c, spec := in.Policy.Spec.Sysctls, in.Spec
	switch {
	case !enabled(c.Enabled):
		return append(decisions, sysctlDecision(Skipped, "", "disabled by the policy"))
	case spec.HostNetwork:
		return append(decisions, sysctlDecision(Skipped, "", "hostNetwork pod: sysctls would change the node's own network settings"))
	case isWindows(spec):
		return append(decisions, sysctlDecision(Skipped, "", "Windows pod: Linux sysctls do not apply"))
	}
	plan := splitSysctls(c, spec)
	n := len(decisions)
	decisions = append(decisions, plan.decisions()...)
	decisions = append(decisions, plan.podSecurityFallback(effectivePodSecurity(in.Context.Namespace, in.Context.Cluster.PodSecurity))...)
	decisions = append(decisions, plan.imageFallback(in.Policy, in.Context)...)
	decisions = append(decisions, setContextSysctls(spec, plan.toContext, in.Record)...)
	decisions = append(decisions, insertSysctlContainer(in, plan.toInit)...)
	if len(decisions) == n {
		decisions = append(decisions, sysctlDecision(Skipped, "", "nothing to set"))
	}
	return decisions
}

// Undo removes the recorded sysctls from the securityContext and the
// recorded init container, when they are still as ha-injector set them.
func (sysctlsInjection) Undo(rec *Record, spec *corev1.PodSpec) []Decision {
	var notes []Decision
	var pairs []string
	if rec.Part(sysctlsRecord, &pairs) {
		for _, s := range pairs {
			if !removeSysctl(spec, s) && hasSysctlNamed(spec, s) {
				notes = append(notes, keptByUser(FeatureSysctls, "securityContext sysctl %s", s))
			}
		}
	}
	if c := recordedInitContainer(rec); c != nil {
		if removeInitContainer(spec, c) == nil && hasContainer(spec, SysctlContainerName) {
			notes = append(notes, keptByUser(FeatureSysctls, "the %s init container", SysctlContainerName))
		}
	}
	return notes
}

// RecordedInitContainer returns the ha-sysctl init container a record says
// ha-injector inserted, whole; nil when it says none.
func RecordedInitContainer(rec *Record) *corev1.Container { return recordedInitContainer(rec) }

func recordedInitContainer(rec *Record) *corev1.Container {
	var c corev1.Container
	if !rec.Part(initContainerRecord, &c) {
		return nil
	}
	if rec.Version == recordVersion1 {
		// Version 1 named it by image and command: the container that
		// release injected for them, which was this release's.
		c = sysctlContainerRun(c.Image, c.Command)
	}
	return &c
}

// dropPrivilegedInit removes from a Pod the ha-sysctl init container that its
// template's injection put there, when the namespace's Pod Security level now
// rejects privileged containers: injected while the namespace allowed them, it
// would get every replacement pod refused (after a drain or a node loss,
// exactly when replacements matter). Only the container the record describes
// is removed, never a user's; it is taken out of the pod's record too.
func dropPrivilegedInit(in *Input) []Decision {
	c := recordedInitContainer(in.Prior)
	if c == nil {
		return nil
	}
	ps := effectivePodSecurity(in.Context.Namespace, in.Context.Cluster.PodSecurity)
	if ps.level == PodSecurityPrivileged || removeInitContainer(in.Spec, c) == nil {
		return nil
	}
	in.Prior.Drop(FeatureSysctls, initContainerRecord)
	return []Decision{sysctlDecision(Skipped, FallbackPodSecurity,
		"%s, which rejects privileged containers: removed the %s init container of the pod template's injection (the template keeps it until its next change)", ps, SysctlContainerName)}
}

func sysctlDecision(action Action, fallback Fallback, format string, args ...any) Decision {
	return Decision{Feature: FeatureSysctls, Action: action, Fallback: fallback, Reason: fmt.Sprintf(format, args...)}
}

// sysctlPlan is where each of the policy's sysctls goes.
type sysctlPlan struct {
	toContext, toInit []sysctl
	// kept are set by the workload already; hostIPC are IPC sysctls of a
	// hostIPC pod, which would change the node. Neither is set.
	kept, hostIPC []sysctl
	// refused are not sysctls ha-sysctl may write (not namespaced, or
	// malformed): a policy the API server did not check can hold them.
	refused []string
}

// splitSysctls splits the policy's sysctls between the securityContext and
// the init container by the policy's method, leaving out those the workload
// sets itself and, in a hostIPC pod, the IPC ones.
func splitSysctls(c v1alpha1.SysctlsSpec, spec *corev1.PodSpec) sysctlPlan {
	userSet := map[string]string{}
	if spec.SecurityContext != nil {
		for _, s := range spec.SecurityContext.Sysctls {
			userSet[canonicalSysctl(s.Name)] = s.Value
		}
	}
	method := c.Method
	if method == "" {
		method = v1alpha1.DefaultSysctlMethod
	}
	var p sysctlPlan
	for _, name := range slices.Sorted(maps.Keys(c.Values)) {
		// Whatever the policy says and whichever image runs them, nothing
		// that would change the node is ever set: the same check ha-sysctl
		// makes before it writes.
		if err := sysctlname.Check(name, string(c.Values[name])); err != nil {
			p.refused = append(p.refused, err.Error())
			continue
		}
		// Written with dots: Pod Security matches securityContext names
		// exactly, against the dotted form.
		s := sysctl{canonicalSysctl(name), string(c.Values[name])}
		if spec.HostIPC && !strings.HasPrefix(s.name, "net.") {
			// In the node's IPC namespace an IPC sysctl would change the node.
			p.hostIPC = append(p.hostIPC, s)
			continue
		}
		if v, ok := userSet[s.name]; ok {
			p.kept = append(p.kept, sysctl{s.name, v})
			continue
		}
		switch {
		case method == v1alpha1.SysctlPodSecurityContext:
			p.toContext = append(p.toContext, s)
		case method == v1alpha1.SysctlAuto && IsSafeSysctl(name):
			p.toContext = append(p.toContext, s)
		default:
			p.toInit = append(p.toInit, s)
		}
	}
	return p
}

// decisions reports the sysctls the plan leaves alone.
func (p sysctlPlan) decisions() []Decision {
	var decisions []Decision
	if len(p.refused) > 0 {
		decisions = append(decisions, sysctlDecision(Skipped, FallbackNotNamespaced, "not set, and never will be: %s", strings.Join(p.refused, "; ")))
	}
	if len(p.kept) > 0 {
		decisions = append(decisions, sysctlDecision(Kept, "", "set by the workload's securityContext, left as they are: %s", joinSysctls(p.kept)))
	}
	if len(p.hostIPC) > 0 {
		decisions = append(decisions, sysctlDecision(Skipped, "", "hostIPC pod: IPC sysctls would change the node's own settings: not set %s", joinSysctls(p.hostIPC)))
	}
	return decisions
}

// podSecurityFallback: Pod Security baseline and restricted reject
// privileged containers and unsafe sysctls. It keeps what the level allows,
// in the securityContext, and drops the rest loudly.
func (p *sysctlPlan) podSecurityFallback(ps podSecurity) []Decision {
	if ps.level == PodSecurityPrivileged {
		return nil
	}
	allowed := func(s sysctl) bool { return podSecurityAllows(s.name, ps.version) }
	moved, droppedInit := partition(p.toInit, allowed)
	kept, droppedContext := partition(p.toContext, allowed)
	dropped := append(droppedInit, droppedContext...)
	p.toInit, p.toContext = nil, append(kept, moved...)
	sort.Slice(p.toContext, func(i, j int) bool { return p.toContext[i].name < p.toContext[j].name })
	var decisions []Decision
	if len(moved) > 0 {
		decisions = append(decisions, sysctlDecision(Noted, FallbackPodSecurity,
			"%s: safe sysctls set through securityContext instead of a privileged init container", ps))
	}
	if len(dropped) > 0 {
		decisions = append(decisions, sysctlDecision(Skipped, FallbackPodSecurity,
			"%s, which rejects privileged containers and unsafe sysctls: dropped %s", ps, joinSysctls(dropped)))
	}
	return decisions
}

// imageFallback withholds the init container when the policy names an image
// the installation does not allow: whoever may write an HAPolicy could
// otherwise run any image, privileged, in every pod of every opted-in
// namespace. The sysctls the kubelet treats as safe still go to the
// securityContext; the others are dropped, loudly.
func (p *sysctlPlan) imageFallback(policy *v1alpha1.HAPolicy, ctx Context) []Decision {
	image := policy.Spec.Sysctls.Image
	if len(p.toInit) == 0 || image == "" || SysctlImageAllowed(image, ctx.allowedSysctlImages()) {
		return nil
	}
	moved, dropped := partition(p.toInit, func(s sysctl) bool { return IsSafeSysctl(s.name) })
	p.toInit, p.toContext = nil, append(p.toContext, moved...)
	sort.Slice(p.toContext, func(i, j int) bool { return p.toContext[i].name < p.toContext[j].name })
	reason := fmt.Sprintf("no %s init container from %s: HAPolicy %q names it and this installation does not allow it (--allowed-sysctl-images)", SysctlContainerName, image, policyName(ctx))
	if len(dropped) > 0 {
		reason += "; not set: " + joinSysctls(dropped)
	}
	if len(moved) > 0 {
		reason += "; the safe ones go to securityContext instead"
	}
	return []Decision{sysctlDecision(Skipped, FallbackImageNotAllowed, "%s", reason)}
}

// SysctlImageAllowed reports whether a policy may name image for the ha-sysctl
// init container: it is one of allowed, or allowed names its repository
// without a tag or digest (any tag or digest of that repository).
func SysctlImageAllowed(image string, allowed []string) bool {
	repo := imageRepository(image)
	for _, a := range allowed {
		if image == a || (a == imageRepository(a) && repo == a) {
			return true
		}
	}
	return false
}

// imageRepository is an image reference without its tag and digest.
func imageRepository(image string) string {
	name, _, _ := strings.Cut(image, "@")
	slash := strings.LastIndex(name, "/")
	if colon := strings.LastIndex(name, ":"); colon > slash {
		name = name[:colon]
	}
	return name
}

// setContextSysctls appends sysctls to the pod securityContext.
func setContextSysctls(spec *corev1.PodSpec, sysctls []sysctl, rec *Record) []Decision {
	if len(sysctls) == 0 {
		return nil
	}
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	var unsafe, pairs []string
	for _, s := range sysctls {
		spec.SecurityContext.Sysctls = append(spec.SecurityContext.Sysctls, corev1.Sysctl{Name: s.name, Value: s.value})
		pairs = append(pairs, s.String())
		if !IsSafeSysctl(s.name) {
			unsafe = append(unsafe, s.name)
		}
	}
	rec.Put(sysctlsRecord, pairs)
	decisions := []Decision{sysctlDecision(Applied, "", "securityContext.sysctls %s", joinSysctls(sysctls))}
	if len(unsafe) > 0 {
		decisions = append(decisions, sysctlDecision(Noted, "",
			"%s not in the kubelet's safe set: nodes must allow it with --allowed-unsafe-sysctls or the pod is rejected", joinComma(unsafe)))
	}
	return decisions
}

// insertSysctlContainer inserts the ha-sysctl init container that sets
// sysctls, first, unless the pod has a container of that name or there is no
// image for it. The same container injected again (a Deployment's template
// undone and injected anew) is kept as it was stored, with the defaults the
// API server added, so that nothing changes.
func insertSysctlContainer(in *Input, sysctls []sysctl) []Decision {
	if len(sysctls) == 0 {
		return nil
	}
	spec := in.Spec
	container, ok := sysctlContainer(in.Policy.Spec.Sysctls.Image, in.Context.SysctlImage, sysctls)
	switch {
	case hasContainer(spec, SysctlContainerName):
		return []Decision{sysctlDecision(Kept, "", "a container named %s already exists", SysctlContainerName)}
	case !ok:
		return []Decision{sysctlDecision(Skipped, "", "no image for the %s init container (the policy names none and the installation's --sysctl-image is empty): not set %s", SysctlContainerName, joinSysctls(sysctls))}
	}
	in.Record.Put(initContainerRecord, container)
	for _, stored := range in.Original().InitContainers {
		if isRecordedContainer(&container, &stored) {
			container = *stored.DeepCopy()
			break
		}
	}
	spec.InitContainers = append([]corev1.Container{container}, spec.InitContainers...)
	return []Decision{sysctlDecision(Applied, "", "init container %s sets %s", SysctlContainerName, joinSysctls(sysctls))}
}

// sysctlContainer is the privileged init container that sets the sysctls in
// the pod's network namespace. With no image in the policy it runs
// /ha-sysctl from the installation's image (ha-injector's own), which only
// ever writes namespaced sysctls; an image the policy names runs
// "sysctl -w". ok is false when there is no image to run.
func sysctlContainer(policyImage, installationImage string, values []sysctl) (c corev1.Container, ok bool) {
	image, command := policyImage, []string{"sysctl", "-w"}
	if image == "" {
		image, command = installationImage, []string{"/ha-sysctl"}
	}
	if image == "" {
		return corev1.Container{}, false
	}
	for _, s := range values {
		command = append(command, s.String())
	}
	return sysctlContainerRun(image, command), true
}

// sysctlContainerRun is the ha-sysctl init container that runs command in
// image. It runs as root whatever the pod asks for, so a pod-level
// runAsNonRoot does not stop it, and has small requests and limits so that
// namespaces with a ResourceQuota accept the pod. Everything but the image
// and the command is fixed, so a version-1 record (image and command only)
// names exactly one container.
func sysctlContainerRun(image string, command []string) corev1.Container {
	small := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("10m"),
		corev1.ResourceMemory: resource.MustParse("16Mi"),
	}
	return corev1.Container{
		Name:    SysctlContainerName,
		Image:   image,
		Command: slices.Clone(command),
		Resources: corev1.ResourceRequirements{
			Requests: small,
			Limits:   small.DeepCopy(),
		},
		// What it could not set is in its termination message; the logs
		// are the fallback when it crashed before writing one.
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			Privileged:             ptr.To(true),
			RunAsUser:              ptr.To[int64](0),
			RunAsNonRoot:           ptr.To(false),
			ReadOnlyRootFilesystem: ptr.To(true),
		},
	}
}

// partition splits list into the sysctls keep accepts and the others, in order.
func partition(list []sysctl, keep func(sysctl) bool) (yes, no []sysctl) {
	for _, s := range list {
		if keep(s) {
			yes = append(yes, s)
		} else {
			no = append(no, s)
		}
	}
	return yes, no
}

func hasContainer(spec *corev1.PodSpec, name string) bool {
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range list {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

// isWindows reports whether the pod is meant for Windows nodes.
func isWindows(spec *corev1.PodSpec) bool {
	if spec.OS != nil && spec.OS.Name == corev1.Windows {
		return true
	}
	return spec.NodeSelector[corev1.LabelOSStable] == string(corev1.Windows)
}

func joinSysctls(list []sysctl) string {
	parts := make([]string, len(list))
	for i, s := range list {
		parts[i] = s.String()
	}
	return joinComma(parts)
}

func joinComma(parts []string) string { return strings.Join(parts, ", ") }

// SafeSysctlSince reports whether the kubelet allows the sysctl in a pod's
// securityContext by default, and from which Kubernetes 1.N minor on (an
// older kubelet rejects the pod with SysctlForbidden).
func SafeSysctlSince(name string) (minor int, safe bool) {
	minor, safe = safeSysctls[canonicalSysctl(name)]
	return minor, safe
}

// CarriesSysctlContainer reports whether a pod template holds the ha-sysctl
// init container its own record says ha-injector injected (not a user's
// container of that name).
func CarriesSysctlContainer(tmpl *corev1.PodTemplateSpec) bool {
	recorded := recordedInitContainer(ReadRecord(tmpl.Annotations))
	if recorded == nil {
		return false
	}
	return slices.ContainsFunc(tmpl.Spec.InitContainers, func(c corev1.Container) bool { return isRecordedContainer(recorded, &c) })
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

// Native: the engine's plan in CEL: the policy's sysctls (only well-formed,
// namespaced ones), less those the pod sets itself and, in a hostIPC pod, the
// IPC ones, split by method; Pod Security and the allowed images move the
// safe ones to the securityContext and drop the rest; then the securityContext
// and the ha-sysctl init container, inserted first.
func (sysctlsInjection) Native(s NativeSettings) Native {
	safe := map[string]int{}
	maps.Copy(safe, safeSysctls)
	safeCEL, _ := json.Marshal(safe)
	allowed := Context{SysctlImage: s.SysctlImage, AllowedSysctlImages: s.AllowedSysctlImages}.allowedSysctlImages()
	inSafe := func(v string) string { return "(" + v + ".name in " + string(safeCEL) + ")" }
	psAllows := func(v string) string {
		return "(" + inSafe(v) + " && (variables.psMinor < 0 || variables.psMinor >= " + string(safeCEL) + "[" + v + ".name]))"
	}
	repo := func(image string) string {
		n := image + `.split("@")[0]`
		return `(` + n + `.lastIndexOf(":") > ` + n + `.lastIndexOf("/") ? ` + n + `.substring(0, ` + n + `.lastIndexOf(":")) : ` + n + `)`
	}
	const imagePlaceholder, commandPlaceholder = "\x00image\x00", "\x00command\x00"
	container := celLiteral(sysctlContainerRun(imagePlaceholder, []string{commandPlaceholder}))
	container = strings.Replace(container, celQuote(imagePlaceholder), "variables.scImage", 1)
	container = strings.Replace(container, "["+celQuote(commandPlaceholder)+"]",
		`(variables.scPolicyImage != "" ? ["sysctl", "-w"] : ["/ha-sysctl"]) + variables.scInit.map(s, s.name + "=" + s.value)`, 1)
	pairs := func(list string) string { return list + `.map(s, s.name + "=" + s.value).join(", ")` }
	return Native{
		Variables: []NativeExpression{
			{"scActive", `variables.spec.?sysctls.?enabled.orValue(true) && !object.spec.?hostNetwork.orValue(false) &&
  object.spec.?os.?name.orValue("") != "windows" && object.spec.?nodeSelector[?"kubernetes.io/os"].orValue("") != "windows"`},
			{"scAll", `variables.sysctlValues.map(n, n).sort().map(n, {"raw": dyn(n), "name": dyn(` + nativeNormalize("n") + `), "value": dyn(string(variables.sysctlValues[n]))})`},
			{"scHostIPC", `object.spec.?hostIPC.orValue(false)`},
			// The plan for any pod: the well-formed, namespaced sysctls (and in a
			// hostIPC pod, the net ones), split by method.
			{"scOK", `variables.scAll.filter(s, ` + nativeSysctlOK("s.raw", "s.value") + ` && !(variables.scHostIPC && !s.name.startsWith("net.")))`},
			{"scMethod", `variables.spec.?sysctls.?method.orValue("") == "" ? ` + celQuote(string(v1alpha1.DefaultSysctlMethod)) + ` : variables.spec.sysctls.method`},
			{"scUser", `object.spec.?securityContext.?sysctls.orValue([]).map(s, ` + nativeNormalize("s.name") + `)`},
			// This pod's: less what it sets itself.
			{"scCandidates", `variables.scOK.filter(s, !(s.name in variables.scUser))`},
			{"scCtx0", `variables.scCandidates.filter(s, ` + `variables.scMethod == "PodSecurityContext" || (variables.scMethod == "Auto" && ` + inSafe("s") + `))`},
			{"scInit0", `variables.scCandidates.filter(s, !(variables.scMethod == "PodSecurityContext" || (variables.scMethod == "Auto" && ` + inSafe("s") + `)))`},
			{"scPrivileged", `variables.psLevel == "privileged"`},
			{"scCtx1", `variables.scPrivileged ? variables.scCtx0 : (variables.scCtx0 + variables.scInit0).filter(s, ` + psAllows("s") + `).sortBy(s, s.name)`},
			{"scInit1", `variables.scPrivileged ? variables.scInit0 : []`},
			{"scPolicyImage", `variables.spec.?sysctls.?image.orValue("")`},
			// The allowed images, written as one string (image references hold
			// no spaces) so that the chart can fill in its value.
			{"scImageOK", `variables.scPolicyImage == "" || ` + celQuote(strings.Join(allowed, " ")) + `.split(" ").exists(a, a != "" && (variables.scPolicyImage == a || (a == ` + repo("a") + ` && ` + repo("variables.scPolicyImage") + ` == a)))`},
			{"scInit", `variables.scImageOK ? variables.scInit1 : []`},
			{"scCtx", `variables.scImageOK || size(variables.scInit1) == 0 ? variables.scCtx1 :
  (variables.scCtx1 + variables.scInit1.filter(s, ` + inSafe("s") + `)).sortBy(s, s.name)`},
			{"scContextList", `variables.scCtx.map(s, {"name": s.name, "value": s.value})`},
			{"scContextPatch", `!variables.scActive || size(variables.scCtx) == 0 ? [] :
  !has(object.spec.securityContext) ? [{"op": dyn("add"), "path": dyn("/spec/securityContext"), "value": dyn({"sysctls": variables.scContextList})}] :
  !has(object.spec.securityContext.sysctls) ? [{"op": dyn("add"), "path": dyn("/spec/securityContext/sysctls"), "value": dyn(variables.scContextList)}] :
  variables.scContextList.map(s, {"op": dyn("add"), "path": dyn("/spec/securityContext/sysctls/-"), "value": dyn(s)})`},
			{"scImage", `variables.scPolicyImage != "" ? variables.scPolicyImage : ` + celQuote(s.SysctlImage)},
			{"scInsert", `variables.scActive && size(variables.scInit) > 0 && variables.scImage != "" &&
  !object.spec.?initContainers.orValue([]).exists(c, c.name == ` + celQuote(SysctlContainerName) + `) &&
  !object.spec.containers.exists(c, c.name == ` + celQuote(SysctlContainerName) + `)`},
			{"scContainer", container},
			{"scInitPatch", `!variables.scInsert ? [] :
  has(object.spec.initContainers) ? [{"op": dyn("add"), "path": dyn("/spec/initContainers/0"), "value": dyn(variables.scContainer)}] :
  [{"op": dyn("add"), "path": dyn("/spec/initContainers"), "value": dyn([variables.scContainer])}]`},
			// For the warnings, on the pod after mutation: the plan without the
			// pod's own sysctls, which by then include those set for it.
			{"scPlanInit", `variables.scOK.filter(s, !(variables.scMethod == "PodSecurityContext" || (variables.scMethod == "Auto" && ` + inSafe("s") + `)))`},
			{"scPlanCtx", `variables.scOK.filter(s, variables.scMethod == "PodSecurityContext" || (variables.scMethod == "Auto" && ` + inSafe("s") + `))`},
			{"scPSDropped", `variables.scPrivileged ? [] : variables.scPlanInit.filter(s, !` + psAllows("s") + `) + variables.scPlanCtx.filter(s, !` + psAllows("s") + `)`},
			{"scImageDropped", `variables.scImageOK || !variables.scPrivileged ? [] : variables.scPlanInit.filter(s, !` + inSafe("s") + `)`},
		},
		Patch:   "variables.scContextPatch + variables.scInitPatch",
		Applies: "variables.scActive && (size(variables.scCtx) > 0 || variables.scInsert)",
		Warnings: []NativeWarning{
			{Condition: `variables.scActive && !variables.scPrivileged && variables.scPlanInit.exists(s, ` + psAllows("s") + `)`,
				Message: `'sysctls: note: ' + variables.psText + ': safe sysctls set through securityContext instead of a privileged init container'`},
			{Condition: `variables.scActive && size(variables.scPSDropped) > 0`,
				Message: `'sysctls: skipped: ' + variables.psText + ', which rejects privileged containers and unsafe sysctls: dropped ' + ` + pairs("variables.scPSDropped")},
			{Condition: `variables.scActive && variables.scPrivileged && !variables.scImageOK && size(variables.scPlanInit) > 0`,
				Message: `'sysctls: skipped: no ` + SysctlContainerName + ` init container from ' + variables.scPolicyImage + ': HAPolicy "' + variables.policyName + '" names it and this installation does not allow it (--allowed-sysctl-images)' +
  (size(variables.scImageDropped) > 0 ? '; not set: ' + ` + pairs("variables.scImageDropped") + ` : '')`},
			{Condition: `variables.scActive && variables.scMethod == "PodSecurityContext" && variables.scPlanCtx.exists(s, !` + inSafe("s") + `)`,
				Message: `variables.scPlanCtx.filter(s, !` + inSafe("s") + `).map(s, s.name).join(", ") + ' not in the kubelet\'s safe set: nodes must allow it with --allowed-unsafe-sysctls or the pod is rejected'`},
		},
	}
}
