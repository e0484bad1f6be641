package sysctl

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// NamePattern is the syntax of a sysctl name: lower-case segments of letters, digits, '-'
// and '_', separated by '.' or '/'. The HAPolicy CRD validates its keys with the same
// expression.
const NamePattern = `^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$`

// ValuePattern is the syntax of a sysctl value: letters, digits, spaces and . _ : , / + -.
// It is enough for numbers, lists of numbers (tcp_rmem), port ranges and names, and it
// leaves out every shell metacharacter. The HAPolicy CRD uses the same expression.
const ValuePattern = `^[A-Za-z0-9 ._:,/+-]+$`

// MaxValueLength is the longest value accepted, in bytes.
const MaxValueLength = 256

var (
	nameRE  = regexp.MustCompile(NamePattern)
	valueRE = regexp.MustCompile(ValuePattern)
)

// Normalize writes a sysctl name with '.' between its segments, as the kubelet does before
// it checks a name: when the first separator is '/', every '.' and '/' swap, so
// "net/ipv4/conf/eth0.100/forwarding" becomes "net.ipv4.conf.eth0/100.forwarding" (a '.'
// inside a segment, like a VLAN interface name, becomes '/'); a name whose first separator
// is '.' is already normal and is returned unchanged.
//
// Source: NormalizeName in k8s.io/component-helpers/node/util/sysctl/sysctl.go (formerly
// ConvertSysctlVariableToDotsSeparator), which follows sysctl.d(5).
func Normalize(name string) string {
	i := strings.IndexAny(name, "./")
	if i < 0 || name[i] == '.' {
		return name
	}
	return swapSeparators(name)
}

func swapSeparators(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, s)
}

// namespacedNames and namespacedPrefixes are the kubelet's list of sysctls known to be
// namespaced: nameToNamespace and prefixToNamespace (matched as prefix + ".") behind
// GetNamespace in k8s.io/component-helpers/node/util/sysctl/namespace.go. The kubelet also
// lists the bare "kernel.shm" and "kernel.msg", only so that its allowlist patterns
// kernel.shm* and kernel.msg* keep working; they are not sysctls and are left out here.
// Older kubelets (NamespacedBy, pkg/kubelet/sysctl/namespace.go) matched kernel.shm and
// kernel.msg as plain prefixes; the current, narrower list is the one followed here.
var (
	namespacedNames = map[string]bool{
		"kernel.sem":             true, // IPC
		"kernel.shmall":          true, // IPC
		"kernel.shmmax":          true, // IPC
		"kernel.shmmni":          true, // IPC
		"kernel.shm_rmid_forced": true, // IPC
		"kernel.msgmax":          true, // IPC
		"kernel.msgmnb":          true, // IPC
		"kernel.msgmni":          true, // IPC
	}
	namespacedPrefixes = []string{
		"net.",       // network namespace
		"fs.mqueue.", // IPC namespace
	}
)

// IsNamespaced reports whether the kubelet knows the sysctl to be namespaced, that is,
// setting it inside a pod changes the pod's network or IPC namespace and not the node.
// The name may use '.' or '/' as separator.
func IsNamespaced(name string) bool {
	name = Normalize(name)
	if namespacedNames[name] {
		return true
	}
	for _, p := range namespacedPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Check returns nil when ha-sysctl may write value to the sysctl name, or an error that
// says why not: a malformed name, a sysctl that is not namespaced (writing it would change
// the node), a value that is empty, malformed or longer than MaxValueLength.
func Check(name, value string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid sysctl name %q: want lower-case segments of letters, digits, '-' and '_' separated by '.' or '/'", name)
	}
	if !IsNamespaced(name) {
		return fmt.Errorf("sysctl %s is not namespaced: setting it from a pod would change the node", Normalize(name))
	}
	switch {
	case len(value) > MaxValueLength:
		return fmt.Errorf("value of %s is too long: %d bytes, at most %d", Normalize(name), len(value), MaxValueLength)
	case !valueRE.MatchString(value):
		return fmt.Errorf("invalid value %q for %s: want letters, digits, spaces and . _ : , / + - only", value, Normalize(name))
	}
	return nil
}

// Path is where the sysctl lives relative to /proc/sys: its segments joined by '/', a '.'
// inside a segment kept as '.' ("net.ipv4.conf.eth0/100.forwarding" and
// "net/ipv4/conf/eth0.100/forwarding" both give "net/ipv4/conf/eth0.100/forwarding"). Call
// it on a name Check accepts: NamePattern rules out empty and ".." segments, so the path
// stays under /proc/sys.
func Path(name string) string {
	return swapSeparators(Normalize(name))
}

// NamespacedNames are the namespaced sysctls outside NamespacedPrefixes, in order.
func NamespacedNames() []string { return slices.Sorted(maps.Keys(namespacedNames)) }

// NamespacedPrefixes are the prefixes of the namespaced sysctls' names.
func NamespacedPrefixes() []string { return slices.Clone(namespacedPrefixes) }
