package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Mode says whether a policy changes workloads or only reports what it would change.
// +kubebuilder:validation:Enum=Enforce;Audit
type Mode string

const (
	// ModeEnforce mutates workloads.
	ModeEnforce Mode = "Enforce"
	// ModeAudit leaves workloads unchanged and reports, as warnings, what Enforce would do.
	ModeAudit Mode = "Audit"
)

// AntiAffinityType selects a preferred (soft) or required (hard) pod anti-affinity term.
// +kubebuilder:validation:Enum=Preferred;Required
type AntiAffinityType string

const (
	// AntiAffinityPreferred adds a weighted preferredDuringScheduling term: the
	// scheduler spreads replicas when it can and still places them when it cannot.
	AntiAffinityPreferred AntiAffinityType = "Preferred"
	// AntiAffinityRequired adds a requiredDuringScheduling term: two replicas never
	// share a topology domain, even if that leaves one Pending.
	AntiAffinityRequired AntiAffinityType = "Required"
)

// SysctlMethod selects how the TCP sysctls reach the pod.
// +kubebuilder:validation:Enum=InitContainer;PodSecurityContext;Auto
type SysctlMethod string

const (
	// SysctlInitContainer sets every sysctl from a privileged init container.
	SysctlInitContainer SysctlMethod = "InitContainer"
	// SysctlPodSecurityContext sets every sysctl through the pod's securityContext.sysctls.
	SysctlPodSecurityContext SysctlMethod = "PodSecurityContext"
	// SysctlAuto puts the kubelet-safe sysctls in the pod's securityContext and
	// the others in the init container. It is the installation's default.
	SysctlAuto SysctlMethod = "Auto"
)

// HAPolicySpec says what ha-injector injects into the Pods and Deployments of
// the namespaces labelled ha-injector.io/policy=<this policy's name>. An empty
// spec is the recommended policy: every field has a default.
type HAPolicySpec struct {
	// mode is Enforce (mutate workloads) or Audit (change nothing, report what
	// Enforce would change as admission warnings). Audit is the safe way to roll
	// a policy out.
	// +kubebuilder:default=Enforce
	// +optional
	Mode Mode `json:"mode,omitempty"`

	// antiAffinity spreads the replicas of a workload across topology domains
	// (nodes, by default) so that losing one node loses at most one replica.
	// +kubebuilder:default={}
	// +optional
	AntiAffinity AntiAffinitySpec `json:"antiAffinity,omitempty"`

	// zoneSpread spreads the replicas of a workload across zones, so that the
	// loss of a zone (or of another failure domain a node label names) leaves
	// replicas in the others.
	// +kubebuilder:default={}
	// +optional
	ZoneSpread ZoneSpreadSpec `json:"zoneSpread,omitempty"`

	// tolerations caps how long pods stay bound to a node that is not ready or
	// unreachable before they are evicted and replaced (Kubernetes' default is 300s).
	// +kubebuilder:default={}
	// +optional
	Tolerations TolerationsSpec `json:"tolerations,omitempty"`

	// sysctls sets TCP keepalive and retransmission sysctls in the pod's network
	// namespace so that connections to a dead peer fail in about 3 minutes instead
	// of 15 (unacknowledged data) or over 2 hours (idle keepalive connections).
	// Only the pod's own sockets are affected, and an application that sets its
	// own socket options (TCP_USER_TIMEOUT, per-socket keepalive) keeps them.
	// +kubebuilder:default={}
	// +optional
	Sysctls SysctlsSpec `json:"sysctls,omitempty"`
}

// AntiAffinitySpec configures the injected pod anti-affinity term.
type AntiAffinitySpec struct {
	// enabled turns anti-affinity injection on or off.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// type is Preferred (a weighted soft rule the scheduler may break) or
	// Required (a hard rule). ha-injector downgrades Required to Preferred when a
	// Deployment has more replicas than there are schedulable topology domains.
	// +kubebuilder:default=Preferred
	// +optional
	Type AntiAffinityType `json:"type,omitempty"`

	// topologyKey is the node label whose values are the domains replicas are
	// spread across: kubernetes.io/hostname for nodes, topology.kubernetes.io/zone
	// for zones.
	// +kubebuilder:default="kubernetes.io/hostname"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	// +optional
	TopologyKey string `json:"topologyKey,omitempty"`

	// weight is the weight (1-100) of the Preferred term against the pod's other
	// scheduling preferences. Ignored by Required.
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	Weight *int32 `json:"weight,omitempty"`

	// minReplicas is the smallest Deployment replica count that gets
	// anti-affinity: a single replica has nothing to be spread from.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +optional
	MinReplicas *int32 `json:"minReplicas,omitempty"`
}

// WhenUnsatisfiable says what the scheduler does with a pod whose placement
// would exceed the zone spread's maxSkew.
// +kubebuilder:validation:Enum=ScheduleAnyway;DoNotSchedule
type WhenUnsatisfiable string

const (
	// ScheduleAnyway places the pod anyway, preferring the placements that
	// reduce the skew.
	ScheduleAnyway WhenUnsatisfiable = "ScheduleAnyway"
	// DoNotSchedule leaves the pod Pending rather than exceed the skew.
	DoNotSchedule WhenUnsatisfiable = "DoNotSchedule"
)

// ZoneSpreadSpec configures the injected topologySpreadConstraints entry.
type ZoneSpreadSpec struct {
	// enabled turns the zone spread on or off.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// topologyKey is the node label whose values are the zones.
	// +kubebuilder:default="topology.kubernetes.io/zone"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	// +optional
	TopologyKey string `json:"topologyKey,omitempty"`

	// maxSkew is the largest difference allowed between the number of a
	// workload's replicas in any two zones.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxSkew *int32 `json:"maxSkew,omitempty"`

	// whenUnsatisfiable is ScheduleAnyway (the default: a pod is never left
	// Pending for the spread's sake) or DoNotSchedule (a hard rule; then the
	// nodes of a zone that is lost stop counting, nodeTaintsPolicy Honor, so
	// its pods' replacements schedule in the zones left).
	// +kubebuilder:default=ScheduleAnyway
	// +optional
	WhenUnsatisfiable WhenUnsatisfiable `json:"whenUnsatisfiable,omitempty"`
}

// TolerationsSpec configures the node.kubernetes.io/not-ready and
// node.kubernetes.io/unreachable NoExecute tolerations. The seconds are a cap:
// longer tolerations are shortened in place, shorter ones are kept, and a
// toleration without tolerationSeconds (tolerate forever) is never touched.
type TolerationsSpec struct {
	// enabled turns toleration capping on or off.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// notReadySeconds is the longest a pod may stay on a node whose Ready
	// condition is False before it is evicted. A live kubelet reports NotReady
	// while its container runtime or CNI restarts, so keep this above such a
	// hiccup: a pod evicted then is restarted for nothing.
	// +kubebuilder:default=60
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	NotReadySeconds *int64 `json:"notReadySeconds,omitempty"`

	// unreachableSeconds is the longest a pod may stay on a node whose Ready
	// condition is Unknown (the node stopped reporting) before it is evicted.
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	UnreachableSeconds *int64 `json:"unreachableSeconds,omitempty"`
}

// SysctlsSpec configures the TCP sysctls set in each pod's network namespace.
// +kubebuilder:validation:XValidation:rule="!has(self.enabled) || !self.enabled || (has(self.values) && size(self.values) > 0)",message="values must name at least one sysctl when sysctls are enabled"
type SysctlsSpec struct {
	// enabled turns sysctl injection on or off.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// method is how the sysctls are set: Auto (the sysctls the kubelet treats
	// as safe, TCP keepalive among them since Kubernetes 1.29, in the pod's
	// securityContext.sysctls; the others, such as tcp_retries2, in a privileged
	// init container), InitContainer (every sysctl from the privileged init
	// container; for nodes older than 1.29) or PodSecurityContext (every sysctl
	// in the securityContext; those outside the kubelet's safe set need
	// --allowed-unsafe-sysctls on the nodes). Empty means the installation's
	// default, Auto, resolved at admission. Where the namespace's effective Pod
	// Security level is not privileged, no privileged container is injected
	// whatever the method.
	// +optional
	Method SysctlMethod `json:"method,omitempty"`

	// image is the image of the injected ha-sysctl init container. Empty means
	// the installation's image (ha-injector's own, which runs /ha-sysctl and
	// only ever writes namespaced sysctls), resolved at admission. An explicit
	// image runs "sysctl -w name=value ..." (a busybox-like image); to use a
	// mirror of ha-injector's image, set the chart's sysctlImage instead.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^\s]+$`
	// +optional
	Image string `json:"image,omitempty"`

	// values maps sysctl names to the values to set. Only sysctls the kubelet
	// treats as namespaced are accepted (net.*, fs.mqueue.*, kernel.sem and the
	// kernel.shm*/kernel.msg* IPC limits): a privileged container must never be able to
	// change the node (kernel.core_pattern, vm.*).
	// +kubebuilder:default={"net.ipv4.tcp_keepalive_time":"30","net.ipv4.tcp_keepalive_intvl":"30","net.ipv4.tcp_keepalive_probes":"5","net.ipv4.tcp_retries2":"9"}
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$'))",message="keys must be valid sysctl names (lower-case segments separated by '.' or '/')"
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^(net[./].+|fs[./]mqueue[./].+|kernel[./](sem|shmall|shmmax|shmmni|shm_rmid_forced|msgmax|msgmnb|msgmni))$'))",message="only namespaced sysctls may be set (net.*, fs.mqueue.*, kernel.sem and the kernel.shm*/kernel.msg* IPC limits): the others would change the node"
	// +optional
	Values map[string]SysctlValue `json:"values,omitempty"`
}

// SysctlValue is the value a sysctl is set to: letters, digits, spaces and
// the punctuation sysctl values use, never a shell metacharacter.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=256
// +kubebuilder:validation:Pattern=`^[A-Za-z0-9 ._:,/+-]+$`
type SysctlValue string

// `kubectl get hapolicies` shows what each policy does (columns of priority 0) and,
// with -o wide, which features are on and the topology keys. A printer column cannot
// depend on another field, so a feature that is off still shows its settings.
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`,description="Enforce or Audit"
// +kubebuilder:printcolumn:name="Anti-Affinity",type=string,JSONPath=`.spec.antiAffinity.type`,description="The anti-affinity type: Preferred or Required"
// +kubebuilder:printcolumn:name="Not-Ready-Seconds",type=integer,JSONPath=`.spec.tolerations.notReadySeconds`,description="The cap, in seconds, on the not-ready toleration"
// +kubebuilder:printcolumn:name="Unreachable-Seconds",type=integer,JSONPath=`.spec.tolerations.unreachableSeconds`,description="The cap, in seconds, on the unreachable toleration"
// +kubebuilder:printcolumn:name="Sysctl-Method",type=string,JSONPath=`.spec.sysctls.method`,description="How the sysctls are set; empty: the installation's default, Auto"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`,description="Time since the policy was created"
// +kubebuilder:printcolumn:name="Anti-Affinity-Enabled",type=boolean,JSONPath=`.spec.antiAffinity.enabled`,priority=1,description="Whether anti-affinity is injected"
// +kubebuilder:printcolumn:name="Topology-Key",type=string,JSONPath=`.spec.antiAffinity.topologyKey`,priority=1,description="The node label whose values the anti-affinity keeps replicas apart on"
// +kubebuilder:printcolumn:name="Zone-Spread-Enabled",type=boolean,JSONPath=`.spec.zoneSpread.enabled`,priority=1,description="Whether the zone spread is injected"
// +kubebuilder:printcolumn:name="Zone-Key",type=string,JSONPath=`.spec.zoneSpread.topologyKey`,priority=1,description="The node label whose values are the zones"
// +kubebuilder:printcolumn:name="Tolerations-Enabled",type=boolean,JSONPath=`.spec.tolerations.enabled`,priority=1,description="Whether the tolerations are capped"
// +kubebuilder:printcolumn:name="Sysctls-Enabled",type=boolean,JSONPath=`.spec.sysctls.enabled`,priority=1,description="Whether the sysctls are set"

// HAPolicy is a cluster-scoped policy that says how ha-injector makes the
// workloads of opted-in namespaces survive the loss of a node. A namespace opts
// in with the label ha-injector.io/policy=<name>.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=hap,categories=ha-injector
// +kubebuilder:subresource:status
type HAPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the policy. Every field has a default.
	// +kubebuilder:default={}
	// +optional
	Spec HAPolicySpec `json:"spec,omitempty"`

	// status holds the facts about the cluster that native mode's admission
	// policy reads with the policy (CEL cannot read nodes); serve keeps it.
	// +optional
	Status HAPolicyStatus `json:"status,omitzero"`
}

// HAPolicyStatus is what serve observed for the policy, in native mode.
type HAPolicyStatus struct {
	// topologyDomains maps each topology key the policy uses (its
	// anti-affinity's and its zone spread's) to the number of distinct values
	// of that node label on schedulable nodes. A key that is absent is
	// unknown, and nothing that depends on it is done.
	// +optional
	TopologyDomains map[string]int32 `json:"topologyDomains,omitempty"`

	// observedGeneration is the policy's generation that the facts were
	// written for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// HAPolicyList is a list of HAPolicy.
// +kubebuilder:object:root=true
type HAPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HAPolicy `json:"items"`
}
