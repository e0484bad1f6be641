package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/internal/installation"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// The probe Pod's name prefix and image (never pulled: it is only a dry run).
const (
	ProbePrefix = "ha-injector-doctor-"
	probeImage  = "registry.k8s.io/pause:3.10"
)

// probeGroup is the namespaces a single probe stands for: same policy, same Pod
// Security labels, so the webhook and Pod Security treat their pods alike.
type probeGroup struct {
	policy, level, version string
	namespaces             []string
}

func (g probeGroup) describe() string {
	level := g.level
	if level == "" {
		level = "cluster default"
	}
	if g.version != "" {
		level += "@" + g.version
	}
	s := fmt.Sprintf("namespace %s (policy %s, Pod Security %s", g.namespaces[0], g.policy, level)
	if n := len(g.namespaces) - 1; n > 0 {
		s += fmt.Sprintf("; stands for %d more like it", n)
	}
	return s + ")"
}

// groups splits the opted-in namespaces by (policy, Pod Security labels), in a
// stable order.
func groups(namespaces []corev1.Namespace) []probeGroup {
	byKey := map[[3]string]*probeGroup{}
	var keys [][3]string
	for _, ns := range namespaces {
		k := [3]string{ns.Labels[policies.PolicyLabel], ns.Labels[policies.PodSecurityEnforceLabel], ns.Labels[podSecurityVersionLabel]}
		g, ok := byKey[k]
		if !ok {
			g = &probeGroup{policy: k[0], level: k[1], version: k[2]}
			byKey[k] = g
			keys = append(keys, k)
		}
		g.namespaces = append(g.namespaces, ns.Name)
	}
	sort.Slice(keys, func(i, j int) bool { return strings.Join(keys[i][:], "\x00") < strings.Join(keys[j][:], "\x00") })
	out := make([]probeGroup, len(keys))
	for i, k := range keys {
		g := byKey[k]
		sort.Strings(g.namespaces)
		out[i] = *g
	}
	return out
}

const podSecurityVersionLabel = "pod-security.kubernetes.io/enforce-version"

// probe is the decisive check: a server-side dry-run create of a small Pod in one
// namespace of each group, as it is and opted out, through every admission plugin and
// webhook of the cluster.
func (d *doctor) probe(ctx context.Context) {
	for _, g := range groups(d.optedIn) {
		d.report.add(d.probeGroup(ctx, g))
	}
}

func (d *doctor) probeGroup(ctx context.Context, g probeGroup) Check {
	const name = "probe"
	ns := g.namespaces[0]
	where := g.describe()
	review, err := d.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods"}},
	}, metav1.CreateOptions{})
	if err == nil && !review.Status.Allowed {
		return Check{Name: name, Status: Warn, Message: "cannot probe " + where + ": this user may not create pods there (the dry run needs create on pods)",
			Fix: "run doctor as a user with create pods in the opted-in namespaces, or pass --namespace"}
	}
	injected, warnings, err := d.dryRun(ctx, probePod(ns, false))
	if err != nil {
		msg := shortErr(err)
		if webhookCallFailed(msg) {
			return Check{Name: name, Status: Fail, Message: "the webhook did not answer for " + where + ": " + msg,
				Fix: "see webhook-pods and serving-certificate above; with failurePolicy Fail, pods are rejected meanwhile"}
		}
		if _, _, plainErr := d.dryRun(ctx, probePod(ns, true)); plainErr != nil {
			return Check{Name: name, Status: Warn, Message: "cannot probe " + where + ": even a pod opted out of the injection is rejected: " + shortErr(plainErr),
				Fix: "nothing ha-injector can change: the probe pod (pause, non-root, restricted-compliant) is refused by another rule of this cluster, or by a webhook that does not support dry runs; the message names which"}
		}
		return Check{Name: name, Status: Fail, Message: "in " + where + ", a pod with the injection is rejected while the same pod without it is admitted: " + msg,
			Fix: "the rule quoted refuses what ha-injector injects (a privileged ha-sysctl init container, sysctls): allow it for the " + installation.PodsWebhook + " injection, or use a policy with spec.sysctls.method PodSecurityContext, or label the namespace with the Pod Security level it enforces"}
	}
	policy := d.policies[g.policy]
	ours := ownWarnings(warnings)
	if policy != nil && policy.Spec.Mode == v1alpha1.ModeAudit {
		if len(ours) == 0 && d.native != nil {
			return Check{Name: name, Status: Fail, Message: "in " + where + " (Audit), the probe pod was admitted without the warnings of ValidatingAdmissionPolicy " + d.native.Name + ": no binding for the namespace's HAPolicy, or an expression failed (see native-bindings)",
				Fix: "kubectl get validatingadmissionpolicybindings; the API server's log names a failed expression"}
		}
		if len(ours) == 0 {
			return Check{Name: name, Status: Fail, Message: "in " + where + " (Audit), the probe pod was admitted without the webhook's warnings: the webhook was not called, or did not answer and failurePolicy Ignore let the pod through",
				Fix: "see webhook-pods and serving-certificate above; the API server's log says \"failed calling webhook\""}
		}
		who := "the webhook answered"
		if d.native != nil {
			who = "the API server answered (native mode)"
		}
		return Check{Name: name, Status: OK, Message: fmt.Sprintf("in %s (Audit), %s with %d warnings of what it would inject", where, who, len(ours))}
	}
	record := policies.ReadRecord(injected.Annotations)
	if record == nil && d.native != nil {
		return Check{Name: name, Status: Fail, Message: "in " + where + ", the probe pod was admitted without the injection (no " + policies.StatusAnnotation + "): MutatingAdmissionPolicy " + d.native.Name + " did not apply (no binding for the namespace's HAPolicy, or an expression failed: see native-bindings)",
			Fix: "kubectl get mutatingadmissionpolicybindings; the API server's log names a failed expression"}
	}
	if record == nil {
		msg := "in " + where + ", the probe pod was admitted without the injection (no " + policies.StatusAnnotation + "): the webhook was not called, or did not answer and failurePolicy Ignore let the pod through"
		if len(ours) > 0 {
			msg = "in " + where + ", the webhook admitted the probe pod unchanged: " + strings.Join(ours, "; ")
		}
		return Check{Name: name, Status: Fail, Message: msg,
			Fix: "see webhook-pods and serving-certificate above; the API server's log says \"failed calling webhook\""}
	}
	applied := make([]string, len(record.Applied))
	for i, f := range record.Applied {
		applied[i] = string(f)
	}
	what := strings.Join(applied, ", ")
	if what == "" {
		what = "nothing applies to the probe pod"
	}
	by := ""
	if record.Native {
		by = " by the API server (native mode)"
	}
	return Check{Name: name, Status: OK, Message: fmt.Sprintf("in %s, a dry-run pod is injected%s (%s) and admitted", where, by, what)}
}

// webhookCallFailed reports whether an admission error says the API server could not
// call one of ha-injector's webhooks (failurePolicy Fail).
func webhookCallFailed(msg string) bool {
	return strings.Contains(msg, "failed calling webhook") && strings.Contains(msg, installation.WebhookSuffix)
}

// ownWarnings are the warnings the webhook wrote, or in native mode the companion
// ValidatingAdmissionPolicy (the API server puts "Validation failed for
// ValidatingAdmissionPolicy 'NAME' with binding 'BINDING': " before its message).
func ownWarnings(warnings []string) []string {
	var out []string
	for _, w := range warnings {
		if strings.HasPrefix(w, "ha-injector:") || strings.Contains(w, "': ha-injector: ") {
			out = append(out, w)
		}
	}
	return out
}

// probePod is a Pod that Pod Security "restricted" admits as it is, with small
// resources (a ResourceQuota or a policy requiring limits admits it too); optOut adds
// the opt-out annotation.
func probePod(namespace string, optOut bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: ProbePrefix,
			Namespace:    namespace,
			Labels:       map[string]string{"app.kubernetes.io/name": "ha-injector-doctor"},
		},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{
				Name:  "probe",
				Image: probeImage,
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	if optOut {
		p.Annotations = map[string]string{policies.InjectAnnotation: "false"}
	}
	return p
}

// dryRun creates pod with dryRun=All and returns what the API server would store and
// the warnings it sent.
func (d *doctor) dryRun(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, []string, error) {
	w := &warnings{}
	cfg := rest.CopyConfig(d.cfg)
	cfg.WarningHandler = w
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	out, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return out, w.list(), err
}

// warnings collects the Warning headers of one client's responses.
type warnings struct {
	mu   sync.Mutex
	seen []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, text)
}

func (w *warnings) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.seen...)
}
