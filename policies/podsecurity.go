package policies

import (
	"fmt"
	"regexp"
)

// podSecurity is the Pod Security level and version the API server enforces
// on a namespace, and where they come from.
type podSecurity struct {
	level, version string
	// label is the namespace's enforce label value ("" when it has none);
	// fromDefault says the cluster default applies.
	label       string
	fromDefault bool
}

// effectivePodSecurity resolves a namespace's Pod Security as the PodSecurity
// admission plugin does: each of the enforce level and version comes from the
// namespace's label, else from the cluster default; a level that is not one of
// the three is enforced as restricted.
func effectivePodSecurity(ns Namespace, def PodSecurityDefault) podSecurity {
	ps := podSecurity{level: def.Level, version: def.Version}
	if level, ok := ns.Labels[PodSecurityEnforceLabel]; ok {
		ps.level, ps.label = level, level
	} else {
		ps.fromDefault = true
	}
	if version, ok := ns.Labels[PodSecurityEnforceVersionLabel]; ok {
		ps.version = version
	}
	if ps.level == "" && ps.fromDefault {
		ps.level = PodSecurityPrivileged
	}
	if !ValidPodSecurityLevel(ps.level) {
		ps.level = PodSecurityRestricted
	}
	return ps
}

// PrivilegedAllowed reports whether the namespace's effective Pod Security
// level (its enforce label, else the cluster default) admits a privileged
// container.
func PrivilegedAllowed(ns Namespace, def PodSecurityDefault) bool {
	return effectivePodSecurity(ns, def).level == PodSecurityPrivileged
}

// String says what is enforced and why, e.g. `namespace enforces Pod Security "baseline"`.
func (ps podSecurity) String() string {
	at := ""
	if ps.version != "" && ps.version != "latest" {
		at = " at " + ps.version
	}
	switch {
	case ps.fromDefault:
		return fmt.Sprintf("the cluster's default Pod Security level %q%s applies (--pod-security-default-level)", ps.level, at)
	case ps.label != ps.level:
		return fmt.Sprintf("namespace enforces Pod Security level %q%s, not a level, which Pod Security enforces as %q", ps.label, at, ps.level)
	}
	return fmt.Sprintf("namespace enforces Pod Security %q%s", ps.level, at)
}

var podSecurityVersionRE = regexp.MustCompile(`^v1\.(0|[1-9][0-9]*)$`)

// ValidPodSecurityLevel reports whether l is one of the three Pod Security levels.
func ValidPodSecurityLevel(l string) bool {
	return l == PodSecurityPrivileged || l == PodSecurityBaseline || l == PodSecurityRestricted
}

// ValidPodSecurityVersion reports whether v is a Pod Security version the
// enforce-version label accepts: "latest" or "v1.N".
func ValidPodSecurityVersion(v string) bool {
	return v == "latest" || podSecurityVersionRE.MatchString(v)
}
