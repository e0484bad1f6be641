package v1alpha1

import (
	"fmt"
	"maps"
	"regexp"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/internal/sysctl"
)

// The patterns below are the ones in the kubebuilder markers of the types, so
// that Validate accepts exactly what the API server accepts.
var (
	topologyKeyRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	imageRE       = regexp.MustCompile(`^[^\s]+$`)
	sysctlNameRE  = regexp.MustCompile(sysctl.NamePattern)
	sysctlValueRE = regexp.MustCompile(sysctl.ValuePattern)
)

const (
	maxTopologyKeyLength = 317
	maxImageLength       = 512
	maxSysctls           = 32
	maxSysctlValueLength = sysctl.MaxValueLength
	maxTolerationSeconds = 3600
)

// Validate checks a defaulted policy against the rules of the CRD schema and
// returns every violation with the path of its field (spec.sysctls.values[...]).
// Call Default first: like the API server, Validate sees the defaulted object.
func (p *HAPolicy) Validate() field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	s := p.Spec

	errs = append(errs, oneOf(spec.Child("mode"), string(s.Mode), string(ModeEnforce), string(ModeAudit))...)

	a, ap := s.AntiAffinity, spec.Child("antiAffinity")
	errs = append(errs, oneOf(ap.Child("type"), string(a.Type), string(AntiAffinityPreferred), string(AntiAffinityRequired))...)
	switch {
	case len(a.TopologyKey) > maxTopologyKeyLength:
		errs = append(errs, field.TooLong(ap.Child("topologyKey"), a.TopologyKey, maxTopologyKeyLength))
	case !topologyKeyRE.MatchString(a.TopologyKey):
		errs = append(errs, field.Invalid(ap.Child("topologyKey"), a.TopologyKey, "must be a label key such as kubernetes.io/hostname or topology.kubernetes.io/zone"))
	}
	errs = append(errs, inRange(ap.Child("weight"), int64(ptr.Deref(a.Weight, 0)), 1, 100)...)
	if a.MinReplicas != nil && *a.MinReplicas < 1 {
		errs = append(errs, field.Invalid(ap.Child("minReplicas"), *a.MinReplicas, "must be at least 1"))
	}

	z, zp := s.ZoneSpread, spec.Child("zoneSpread")
	if !ValidTopologyKey(z.TopologyKey) {
		errs = append(errs, field.Invalid(zp.Child("topologyKey"), z.TopologyKey, "must be a label key such as topology.kubernetes.io/zone"))
	}
	if z.MaxSkew != nil && *z.MaxSkew < 1 {
		errs = append(errs, field.Invalid(zp.Child("maxSkew"), *z.MaxSkew, "must be at least 1"))
	}
	errs = append(errs, oneOf(zp.Child("whenUnsatisfiable"), string(z.WhenUnsatisfiable), string(ScheduleAnyway), string(DoNotSchedule))...)

	t, tp := s.Tolerations, spec.Child("tolerations")
	errs = append(errs, inRange(tp.Child("notReadySeconds"), ptr.Deref(t.NotReadySeconds, 0), 0, maxTolerationSeconds)...)
	errs = append(errs, inRange(tp.Child("unreachableSeconds"), ptr.Deref(t.UnreachableSeconds, 0), 0, maxTolerationSeconds)...)

	c, cp := s.Sysctls, spec.Child("sysctls")
	if c.Method != "" {
		errs = append(errs, oneOf(cp.Child("method"), string(c.Method), string(SysctlInitContainer), string(SysctlPodSecurityContext), string(SysctlAuto))...)
	}
	switch {
	case c.Image == "":
		// The installation's image.
	case len(c.Image) > maxImageLength:
		errs = append(errs, field.TooLong(cp.Child("image"), c.Image, maxImageLength))
	case !ValidImage(c.Image):
		errs = append(errs, field.Invalid(cp.Child("image"), c.Image, "must be an image reference without spaces"))
	}
	vp := cp.Child("values")
	if len(c.Values) > maxSysctls {
		errs = append(errs, field.TooMany(vp, len(c.Values), maxSysctls))
	}
	if c.Enabled != nil && *c.Enabled && len(c.Values) == 0 {
		errs = append(errs, field.Required(vp, "values must name at least one sysctl when sysctls are enabled"))
	}
	for _, name := range slices.Sorted(maps.Keys(c.Values)) {
		value := string(c.Values[name])
		switch {
		case !sysctlNameRE.MatchString(name):
			errs = append(errs, field.Invalid(vp.Key(name), name, "must be a valid sysctl name (lower-case segments separated by '.' or '/')"))
		case !sysctl.IsNamespaced(name):
			errs = append(errs, field.Invalid(vp.Key(name), name, "only namespaced sysctls may be set (net.*, fs.mqueue.*, kernel.sem and the kernel.shm*/kernel.msg* IPC limits): the others would change the node"))
		}
		switch {
		case len(value) > maxSysctlValueLength:
			errs = append(errs, field.TooLong(vp.Key(name), value, maxSysctlValueLength))
		case !sysctlValueRE.MatchString(value):
			errs = append(errs, field.Invalid(vp.Key(name), value, "must be non-empty and contain only letters, digits, spaces and . _ : , / + -"))
		}
	}
	return errs
}

// ValidTopologyKey reports whether s is a topology key as the CRD accepts one:
// a label key of at most 317 characters.
func ValidTopologyKey(s string) bool {
	return len(s) <= maxTopologyKeyLength && topologyKeyRE.MatchString(s)
}

// ValidImage reports whether s is an image reference as the CRD accepts one:
// not empty, no whitespace. serve and preview hold --sysctl-image to it too.
func ValidImage(s string) bool { return imageRE.MatchString(s) }

func oneOf(path *field.Path, value string, allowed ...string) field.ErrorList {
	for _, a := range allowed {
		if value == a {
			return nil
		}
	}
	return field.ErrorList{field.NotSupported(path, value, allowed)}
}

func inRange(path *field.Path, value, lo, hi int64) field.ErrorList {
	if value < lo || value > hi {
		return field.ErrorList{field.Invalid(path, value, fmt.Sprintf("must be between %d and %d", lo, hi))}
	}
	return nil
}

// AdvisedMinNotReadySeconds is the shortest not-ready toleration Warnings lets pass.
// The node.kubernetes.io/not-ready taint is not only a dead node's: the node lifecycle
// controller also puts it on a node whose live kubelet reports NotReady, as during a
// container runtime or CNI restart, and removes it when the node is Ready again. A pod
// that tolerates it for less than such a hiccup lasts is evicted and restarted for
// nothing. 30 s is a chosen line, not a safe value: make failover measures a 30 s
// toleration evicted by a 45 s hiccup that the default 60 s rides out (docs/failover.md).
// The chart's ValidatingAdmissionPolicy
// <release>-hapolicy-warnings gives the same warnings when a policy is applied.
const AdvisedMinNotReadySeconds = 30

// Warnings are what is valid but likely a mistake, worded for a user, each with the path
// of its field. Call Default first. A not-ready toleration under
// AdvisedMinNotReadySeconds evicts pods for a hiccup of a live kubelet; a 0 s
// unreachable toleration evicts them the moment their node is marked unreachable, with
// no grace for a node that was only slow to renew its Lease.
func (p *HAPolicy) Warnings() []string {
	t := p.Spec.Tolerations
	if t.Enabled != nil && !*t.Enabled {
		return nil
	}
	var out []string
	if s := t.NotReadySeconds; s != nil && *s < AdvisedMinNotReadySeconds {
		out = append(out, fmt.Sprintf("spec.tolerations.notReadySeconds is %d, under %d: pods are evicted when a live kubelet reports NotReady for longer, as during a container runtime or CNI restart, and restarted for nothing", *s, AdvisedMinNotReadySeconds))
	}
	if s := t.UnreachableSeconds; s != nil && *s == 0 {
		out = append(out, "spec.tolerations.unreachableSeconds is 0: pods are evicted the moment their node is marked unreachable, with no grace for a node that was only late to renew its Lease")
	}
	return out
}
