package native_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// derived makes n inputs from the pods of the valid cases that native mode
// and the engine agree on, each changed at random (a fixed seed: the same
// inputs every run) where the two decide: the tolerations the pod brings,
// its labels, hostNetwork and hostIPC, its own sysctls, an anti-affinity or
// spread of its own, a Windows pod, the opt-out; the policy's method, type,
// seconds and spread; the namespace's Pod Security. Only pods Pod Security
// admits are made (no host namespaces, nor unsafe sysctls of the pod's own,
// where it enforces baseline).
func derived(t *testing.T, inputs []input, n int) []input {
	t.Helper()
	listed := map[string]bool{}
	for _, d := range policies.NativeDifferences() {
		for _, f := range d.Fixtures {
			listed[f] = true
		}
	}
	var bases []input
	for _, in := range inputs {
		// Pods whose owner the webhook cannot read: native mode never can.
		if in.owner == nil && !listed[in.name] && !in.c.Settings.InvalidPolicy && in.c.Settings.NamespaceLabels[policies.PodSecurityEnforceLabel] != policies.PodSecurityRestricted &&
			in.c.Settings.PodSecurityDefault.Level != policies.PodSecurityRestricted {
			bases = append(bases, in)
		}
	}
	r := rand.New(rand.NewPCG(29, 30))
	pick := func(list ...string) string { return list[r.IntN(len(list))] }
	var out []input
	for k := 0; k < n; k++ {
		base := bases[r.IntN(len(bases))]
		in := input{name: fmt.Sprintf("derived-%02d-%s", k, base.name), c: base.c, pod: base.pod.DeepCopy()}
		pod, spec := in.pod, &in.pod.Spec

		policy := in.c.Context.Policy.DeepCopy()
		policy.Spec.Sysctls.Method = v1alpha1.SysctlMethod(pick("", "Auto", "InitContainer", "PodSecurityContext"))
		policy.Spec.AntiAffinity.Type = v1alpha1.AntiAffinityType(pick("Preferred", "Required"))
		policy.Spec.ZoneSpread.WhenUnsatisfiable = v1alpha1.WhenUnsatisfiable(pick("ScheduleAnyway", "DoNotSchedule"))
		policy.Spec.Tolerations.NotReadySeconds = ptr.To(int64(r.IntN(400)))
		policy.Spec.Tolerations.UnreachableSeconds = ptr.To(int64(r.IntN(400)))
		in.c.Context.Policy = policy

		labels := map[string]string{}
		for k, v := range in.c.Settings.NamespaceLabels {
			labels[k] = v
		}
		hostPod := spec.HostNetwork || spec.HostIPC
		switch r.IntN(4) {
		case 0:
			delete(labels, policies.PodSecurityEnforceLabel)
		case 1:
			labels[policies.PodSecurityEnforceLabel] = policies.PodSecurityPrivileged
		case 2:
			if hostPod {
				break // Pod Security baseline refuses it
			}
			labels[policies.PodSecurityEnforceLabel] = policies.PodSecurityBaseline
			labels[policies.PodSecurityEnforceVersionLabel] = pick("latest", "v1.28", "v1.30")
		}
		in.c.Settings.NamespaceLabels = labels
		in.c.Context.Namespace.Labels = labels
		lvl, ok := labels[policies.PodSecurityEnforceLabel]
		if !ok {
			lvl = in.c.Settings.PodSecurityDefault.Level
		}
		privileged := lvl == "" || lvl == policies.PodSecurityPrivileged

		// The tolerations the pod brings, before DefaultTolerationSeconds.
		pool := []corev1.Toleration{
			{Key: policies.NotReadyTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](600)},
			{Key: policies.NotReadyTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](10)},
			{Key: policies.NotReadyTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			{Key: policies.UnreachableTaint, Operator: corev1.TolerationOpEqual, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](200)},
			{Key: policies.UnreachableTaint, Effect: corev1.TaintEffectNoSchedule},
			{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](500)},
			{Operator: corev1.TolerationOpExists},
			{Key: "example.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		}
		spec.Tolerations = nil
		for _, i := range r.Perm(len(pool))[:r.IntN(4)] {
			spec.Tolerations = append(spec.Tolerations, pool[i])
		}

		switch r.IntN(6) {
		case 0:
			pod.Labels = nil
		case 1:
			pod.Labels = map[string]string{"controller-revision-hash": "abc", "statefulset.kubernetes.io/pod-name": pod.Name}
		case 2:
			if pod.Labels == nil {
				pod.Labels = map[string]string{}
			}
			pod.Labels["tier"] = pick("web", "db")
		}
		userSysctls := spec.SecurityContext != nil && len(spec.SecurityContext.Sysctls) > 0
		if privileged && !userSysctls && r.IntN(6) == 0 {
			spec.HostNetwork = true
		}
		if privileged && r.IntN(6) == 0 {
			spec.HostIPC = true
		}
		// Pod Security allows the keepalive sysctls from 1.29.
		if r.IntN(4) == 0 && !spec.HostNetwork && (privileged || labels[policies.PodSecurityEnforceVersionLabel] != "v1.28") {
			if spec.SecurityContext == nil {
				spec.SecurityContext = &corev1.PodSecurityContext{}
			}
			spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "net.ipv4.tcp_keepalive_time", Value: "45"}}
			if privileged && r.IntN(2) == 0 {
				spec.SecurityContext.Sysctls = append(spec.SecurityContext.Sysctls, corev1.Sysctl{Name: "net/ipv4/tcp_retries2", Value: "7"})
			}
		}
		if r.IntN(6) == 0 {
			spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
				Weight: 7, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: pick(corev1.LabelHostname, corev1.LabelTopologyZone),
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}}},
			}}}}
		}
		if r.IntN(6) == 0 {
			spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 2, TopologyKey: pick(corev1.LabelTopologyZone, "rack"),
				WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}}}}
		}
		if r.IntN(10) == 0 && (spec.SecurityContext == nil || len(spec.SecurityContext.Sysctls) == 0) && !spec.HostNetwork && !spec.HostIPC {
			spec.OS = &corev1.PodOS{Name: corev1.Windows}
			spec.SecurityContext = nil
		}
		if r.IntN(10) == 0 {
			if pod.Annotations == nil {
				pod.Annotations = map[string]string{}
			}
			pod.Annotations[policies.InjectAnnotation] = "false"
		}
		if slices.ContainsFunc(spec.InitContainers, func(c corev1.Container) bool {
			return c.SecurityContext != nil && ptr.Deref(c.SecurityContext.Privileged, false)
		}) && !privileged {
			continue // a pod Pod Security would refuse whatever ha-injector does
		}
		out = append(out, in)
	}
	return out
}
