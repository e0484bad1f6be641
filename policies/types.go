package policies

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Names shared by the engine, the webhook, the chart and the docs.
const (
	// PolicyLabel on a Namespace opts it in and names its HAPolicy.
	PolicyLabel = "ha-injector.io/policy"
	// InjectAnnotation set to "false" on a Pod, a Deployment or a Deployment's
	// pod template opts that workload out.
	InjectAnnotation = "ha-injector.io/inject"
	// StatusAnnotation records, as JSON (a Record), what ha-injector did to
	// the object's pod template, with enough to undo it.
	StatusAnnotation = "ha-injector.io/status"
	// InjectedLabel marks a Deployment that carries an injection, on its
	// metadata (not the pod template), so the webhook is still called for it
	// once its namespace stops opting in, and can take the injection back.
	InjectedLabel = "ha-injector.io/injected"
	// SysctlContainerName is the name of the injected init container.
	SysctlContainerName = "ha-sysctl"

	// PodSecurityEnforceLabel is the Pod Security Admission label whose level
	// decides whether a privileged init container would be rejected.
	PodSecurityEnforceLabel = "pod-security.kubernetes.io/enforce"
	// PodSecurityEnforceVersionLabel pins the Pod Security version a
	// namespace enforces; older versions allow fewer sysctls.
	PodSecurityEnforceVersionLabel = "pod-security.kubernetes.io/enforce-version"

	// NotReadyTaint and UnreachableTaint are the NoExecute taints the node
	// lifecycle controller puts on a node that stops being Ready.
	NotReadyTaint    = "node.kubernetes.io/not-ready"
	UnreachableTaint = "node.kubernetes.io/unreachable"

	// mirrorPodAnnotation marks a static pod's mirror in the API server.
	mirrorPodAnnotation = "kubernetes.io/config.mirror"
	// templateHashLabel is set by the Deployment controller on each ReplicaSet's pods.
	templateHashLabel = "pod-template-hash"
)

// Kind is the kind of workload being mutated.
type Kind string

// The kinds of workload ha-injector mutates.
const (
	KindPod        Kind = "Pod"
	KindDeployment Kind = "Deployment"
)

// Namespace is what the engine needs to know about the workload's namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Cluster holds facts about the cluster that only the webhook can observe.
// The zero value means "unknown", and nothing that depends on it is done.
type Cluster struct {
	// TopologyDomains maps a topology key (a node label) to the number of
	// distinct values it has on schedulable nodes. A key that is absent is unknown.
	TopologyDomains map[string]int
	// PodSecurity is the cluster-wide Pod Security default (the API server's
	// AdmissionConfiguration, which the webhook cannot read: serve and preview
	// take it as --pod-security-default-level). A namespace without an enforce
	// label is held to it. The zero value is Kubernetes' own default: privileged.
	PodSecurity PodSecurityDefault
}

// The Pod Security levels.
const (
	PodSecurityPrivileged = "privileged"
	PodSecurityBaseline   = "baseline"
	PodSecurityRestricted = "restricted"
)

// PodSecurityDefault is the Pod Security level and version that the API server
// enforces on a namespace without the pod-security.kubernetes.io/enforce
// (or enforce-version) label.
type PodSecurityDefault struct {
	// Level is privileged, baseline or restricted; empty means privileged.
	Level string `json:"level,omitempty"`
	// Version is "latest" or "v1.N"; empty means latest.
	Version string `json:"version,omitempty"`
}

// DesiredReplicasAnnotation is set by the Deployment controller on each of its
// ReplicaSets to the Deployment's replica count.
const DesiredReplicasAnnotation = "deployment.kubernetes.io/desired-replicas"

// DesiredReplicas reads DesiredReplicasAnnotation from a ReplicaSet's annotations;
// ok is false when it is absent or not a number.
func DesiredReplicas(annotations map[string]string) (replicas int32, ok bool) {
	n, err := strconv.ParseInt(annotations[DesiredReplicasAnnotation], 10, 32)
	return int32(n), err == nil
}

// Owner is what the cluster knows about the controller of a Pod. For a
// ReplicaSet made by a Deployment it carries the Deployment's decisions: the
// Deployment controller copies the Deployment's annotations (an opt-out
// among them) onto the ReplicaSet, with its desired replica count.
type Owner struct {
	Kind        string            `json:"kind"`
	Name        string            `json:"name"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Replicas is the desired replica count, nil when unknown.
	Replicas *int32 `json:"replicas,omitempty"`
}

// Context is everything the engine needs besides the workload itself.
type Context struct {
	// Policy is the HAPolicy to apply. It is defaulted on a copy, so a policy
	// read from a client or a file can be passed as it is.
	Policy    *v1alpha1.HAPolicy
	Namespace Namespace
	Cluster   Cluster
	// Owner is, for a Pod, its controller as the webhook found it; nil when
	// unknown (always, in preview).
	Owner *Owner
	// NotOptedIn says the namespace no longer carries the PolicyLabel: a
	// Deployment that ha-injector injected earlier (it carries the
	// InjectedLabel) has that injection removed, and nothing is applied.
	NotOptedIn bool
	// Update is, on a Deployment UPDATE, the stored pod template the new one
	// is compared with (NewUpdate); nil for anything else.
	Update *Update
	// SysctlImage is the installation's image for the ha-sysctl init
	// container: ha-injector's own, which holds /ha-sysctl. A policy that
	// names no image gets it. Empty: no init container can be injected.
	SysctlImage string
	// AllowedSysctlImages are the images a policy may name for the ha-sysctl
	// init container (serve --allowed-sysctl-images); an entry without a tag
	// or digest allows every tag and digest of its repository. Nil means
	// SysctlImage alone.
	AllowedSysctlImages []string
}

// allowedSysctlImages is AllowedSysctlImages, or SysctlImage alone when unset.
func (c Context) allowedSysctlImages() []string {
	if c.AllowedSysctlImages == nil && c.SysctlImage != "" {
		return []string{c.SysctlImage}
	}
	return c.AllowedSysctlImages
}

// Update is what the engine knows of a Deployment UPDATE's stored object.
type Update struct {
	// Old is the pod template as stored.
	Old *corev1.PodTemplateSpec
	// TemplateChanged is TemplateChanged(Old, the updated template), computed
	// once by NewUpdate for the webhook (which reads Revisions only then) and
	// the engine.
	TemplateChanged bool
	// Revisions are, when the update changes the pod template, the templates
	// of the Deployment's ReplicaSets: a template equal to one of them (what
	// `kubectl rollout undo` sends) is left exactly as sent.
	Revisions []corev1.PodTemplateSpec
}

// NewUpdate compares the pod template of a Deployment UPDATE with the stored
// one.
func NewUpdate(old, updated *corev1.PodTemplateSpec) *Update {
	return &Update{Old: old, TemplateChanged: TemplateChanged(old, updated)}
}

// Feature names one of the things ha-injector injects.
type Feature string

// FeatureWorkload is a decision about the whole workload (opted out, a
// DaemonSet's pod...); each injection names its own feature.
const FeatureWorkload Feature = "workload"

// Action is what happened to a feature.
type Action string

// The actions a decision reports.
const (
	// Applied: the feature changed the template (under Audit: would have).
	Applied Action = "applied"
	// Kept: the template already had what the feature would add, or the
	// workload made its own choice, which ha-injector does not override.
	Kept Action = "kept"
	// Skipped: the feature does not apply to this workload.
	Skipped Action = "skipped"
	// Noted: nothing to change, but something the user should know.
	Noted Action = "note"
)

// Fallback names why the engine did something other than the policy asked.
type Fallback string

// The fallbacks, counted by the webhook's metrics.
const (
	// FallbackPodSecurity: the namespace enforces a Pod Security level that
	// rejects privileged containers, so sysctls went to the securityContext or
	// were dropped.
	FallbackPodSecurity Fallback = "pod-security"
	// FallbackDowngrade: Required anti-affinity became Preferred because there
	// are fewer topology domains than replicas, or the replica count is unknown.
	FallbackDowngrade Fallback = "downgrade"
	// FallbackInvalidPolicy: the HAPolicy breaks a rule of the CRD schema, so
	// nothing of it was applied.
	FallbackInvalidPolicy Fallback = "invalid-policy"
	// FallbackImageNotAllowed: the policy names an image for the ha-sysctl init
	// container that the installation does not allow, so no init container was
	// injected (the safe sysctls went to the securityContext).
	FallbackImageNotAllowed Fallback = "image-not-allowed"
	// FallbackNotNamespaced: a sysctl of the policy is not one the kubelet
	// treats as namespaced (or is malformed), so it was not set.
	FallbackNotNamespaced Fallback = "not-namespaced"
)

// Decision is one thing the engine decided, with a short human reason.
type Decision struct {
	Feature  Feature  `json:"feature"`
	Action   Action   `json:"action"`
	Reason   string   `json:"reason"`
	Fallback Fallback `json:"fallback,omitempty"`
	// Audit is set when the policy is in Audit mode: an Applied decision
	// then says what would have been applied.
	Audit bool `json:"audit,omitempty"`
}

// String renders the decision as one line, e.g.
// "tolerations: applied: node.kubernetes.io/not-ready shortened 300s -> 30s".
func (d Decision) String() string {
	action := string(d.Action)
	if d.Audit && d.Action == Applied {
		action = "would apply"
	}
	return fmt.Sprintf("%s: %s: %s", d.Feature, action, d.Reason)
}

// Result is the outcome of MutateTemplate.
type Result struct {
	// Template is the new pod template; under Audit, or when nothing applied,
	// it equals the input.
	Template corev1.PodTemplateSpec
	// Decisions lists what was decided, feature by feature.
	Decisions []Decision
	// Changed is true when Template differs from the input.
	Changed bool
	// Record is what the template now carries in its StatusAnnotation; nil
	// when nothing is injected (under Audit: always nil).
	Record *Record
	// Undone is true when an earlier injection was taken out before the
	// policy was applied again.
	Undone bool
}
