// Package sysctl holds the rules ha-injector applies to sysctl names and values, shared by
// the ha-sysctl init container (which writes them) and the HAPolicy validation (which
// refuses a policy ha-sysctl would refuse): name syntax and normalisation as the kubelet
// does it, the kubelet's list of namespaced sysctls, the value syntax, and the path of a
// sysctl under /proc/sys.
//
// It imports the standard library only, so the ha-sysctl binary stays small.
package sysctl
