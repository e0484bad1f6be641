package v1alpha1

import "k8s.io/utils/ptr"

// Defaults of an empty HAPolicy spec. They are also written into the CRD
// schema by the kubebuilder markers on the types; a test checks both agree.
const (
	DefaultTopologyKey       = "kubernetes.io/hostname"
	DefaultZoneKey           = "topology.kubernetes.io/zone"
	DefaultMaxSkew     int32 = 1
	DefaultWeight      int32 = 100
	DefaultMinReplicas int32 = 2
	DefaultNotReady    int64 = 60
	DefaultUnreachable int64 = 30
	// DefaultSysctlMethod is what an empty spec.sysctls.method means. It is
	// not written into the CRD: it is the installation's default, resolved at
	// admission, so that a new release can change it for every policy that
	// did not choose.
	DefaultSysctlMethod = SysctlAuto
)

// DefaultSysctls returns the sysctls an empty policy sets: TCP keepalive after
// 30s idle, probed every 30s, 5 probes, so an idle connection to a dead peer
// fails after 30 + 5 x 30 = 180s (kernel defaults: 7200 + 9 x 75 = 7875s), and
// 9 retransmissions instead of 15 for connections with unacknowledged data:
// 204.6s by the kernel's model (tcp_model_timeout, 200ms minimum RTO) instead
// of 924.6s.
func DefaultSysctls() map[string]SysctlValue {
	return map[string]SysctlValue{
		"net.ipv4.tcp_keepalive_time":   "30",
		"net.ipv4.tcp_keepalive_intvl":  "30",
		"net.ipv4.tcp_keepalive_probes": "5",
		"net.ipv4.tcp_retries2":         "9",
	}
}

// Default fills every unset field of the policy with its default, as the API
// server does from the CRD schema. A field that is set, even to false or 0,
// is left alone; an explicitly empty values map stays empty, as it does in the
// API server (defaults apply to absent fields only). spec.sysctls.method and
// spec.sysctls.image have no default here or in the CRD: empty means the
// installation's, which the engine resolves at admission.
func (p *HAPolicy) Default() {
	s := &p.Spec
	if s.Mode == "" {
		s.Mode = ModeEnforce
	}

	a := &s.AntiAffinity
	if a.Enabled == nil {
		a.Enabled = ptr.To(true)
	}
	if a.Type == "" {
		a.Type = AntiAffinityPreferred
	}
	if a.TopologyKey == "" {
		a.TopologyKey = DefaultTopologyKey
	}
	if a.Weight == nil {
		a.Weight = ptr.To(DefaultWeight)
	}
	if a.MinReplicas == nil {
		a.MinReplicas = ptr.To(DefaultMinReplicas)
	}

	z := &s.ZoneSpread
	if z.Enabled == nil {
		z.Enabled = ptr.To(true)
	}
	if z.TopologyKey == "" {
		z.TopologyKey = DefaultZoneKey
	}
	if z.MaxSkew == nil {
		z.MaxSkew = ptr.To(DefaultMaxSkew)
	}
	if z.WhenUnsatisfiable == "" {
		z.WhenUnsatisfiable = ScheduleAnyway
	}

	t := &s.Tolerations
	if t.Enabled == nil {
		t.Enabled = ptr.To(true)
	}
	if t.NotReadySeconds == nil {
		t.NotReadySeconds = ptr.To(DefaultNotReady)
	}
	if t.UnreachableSeconds == nil {
		t.UnreachableSeconds = ptr.To(DefaultUnreachable)
	}

	c := &s.Sysctls
	if c.Enabled == nil {
		c.Enabled = ptr.To(true)
	}
	if c.Values == nil {
		c.Values = DefaultSysctls()
	}
}

// NewDefault returns the built-in policy named "default" with every field defaulted:
// the policy a namespace gets from an HAPolicy with an empty spec.
func NewDefault() *HAPolicy {
	p := &HAPolicy{}
	p.APIVersion = GroupVersion.String()
	p.Kind = "HAPolicy"
	p.Name = "default"
	p.Default()
	return p
}
