package doctor

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/version"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/installation"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// sysctlContainer is the injected init container's name.
const sysctlContainer = "ha-sysctl"

// maxListed is how many objects a message names before "and N more".
const maxListed = 5

// listed joins items, naming at most maxListed.
func listed(items []string) string {
	if len(items) <= maxListed {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:maxListed], "; ") + fmt.Sprintf("; and %d more", len(items)-maxListed)
}

// eachOptedIn lists objects of the opted-in namespaces a page at a time: per namespace
// for one, cluster-wide (filtered) for more, so thousands of namespaces cost a few
// requests. each is called with every page's list.
func (d *doctor) eachOptedIn(ctx context.Context, newList func() client.ObjectList, each func(client.ObjectList)) error {
	var opts []client.ListOption
	if len(d.optedIn) == 1 {
		opts = append(opts, client.InNamespace(d.optedIn[0].Name))
	}
	cont := ""
	for {
		list := newList()
		page := append(opts, client.Limit(500))
		if cont != "" {
			page = append(page, client.Continue(cont))
		}
		if err := d.c.List(ctx, list, page...); err != nil {
			return err
		}
		each(list)
		if cont = list.GetContinue(); cont == "" {
			return nil
		}
	}
}

func (d *doctor) isOptedIn(namespace string) *corev1.Namespace {
	for i := range d.optedIn {
		if d.optedIn[i].Name == namespace {
			return &d.optedIn[i]
		}
	}
	return nil
}

// checkSysctlFailures: ReplicaSets that cannot create pods because of the injection,
// and pods whose ha-sysctl cannot pull its image or reported a failure.
func (d *doctor) checkSysctlFailures(ctx context.Context) {
	const name = "sysctl-failures"
	var fails, warns []string
	err := d.eachOptedIn(ctx, func() client.ObjectList { return &appsv1.ReplicaSetList{} }, func(l client.ObjectList) {
		for _, rs := range l.(*appsv1.ReplicaSetList).Items {
			if d.isOptedIn(rs.Namespace) == nil {
				continue
			}
			for _, c := range rs.Status.Conditions {
				if c.Type == appsv1.ReplicaSetReplicaFailure && c.Status == corev1.ConditionTrue && strings.Contains(c.Message, "sysctl") {
					fails = append(fails, fmt.Sprintf("ReplicaSet %s/%s cannot create pods: %s", rs.Namespace, rs.Name, c.Message))
				}
			}
		}
	})
	if err != nil {
		d.report.add(cannotRead(name, "replicasets", err))
		return
	}
	err = d.eachOptedIn(ctx, func() client.ObjectList { return &corev1.PodList{} }, func(l client.ObjectList) {
		for _, p := range l.(*corev1.PodList).Items {
			if d.isOptedIn(p.Namespace) == nil {
				continue
			}
			f, w := podSysctlProblems(&p)
			fails, warns = append(fails, f...), append(warns, w...)
		}
	})
	if err != nil {
		d.report.add(cannotRead(name, "pods", err))
		return
	}
	if dep := d.installDeployment(); dep != nil && len(dep.Spec.Template.Spec.ImagePullSecrets) > 0 {
		warns = append(warns, "the chart sets imagePullSecrets, which do not exist in the opted-in namespaces: the ha-sysctl image must be pullable there without them (public, mirrored, or node credentials)")
	}
	switch {
	case len(fails) > 0:
		d.report.add(Check{Name: name, Status: Fail, Message: listed(append(fails, warns...)),
			Fix: "an image the nodes cannot pull: set sysctlImage (chart) or spec.sysctls.image to a mirror; SysctlForbidden: the kubelet is older than the sysctl (see nodes) or needs --allowed-unsafe-sysctls"})
	case len(warns) > 0:
		d.report.add(Check{Name: name, Status: Warn, Message: listed(warns),
			Fix: "ha-sysctl never blocks a pod: what it could not set is in its termination message (kubectl get pod NAME -o jsonpath='{.status.initContainerStatuses[0].state}')"})
	default:
		d.report.add(Check{Name: name, Status: OK, Message: fmt.Sprintf("no ReplicaSet or pod in %d opted-in namespaces reports a failure of the injection", len(d.optedIn))})
	}
}

// podSysctlProblems are a pod's failures (image pull, SysctlForbidden) and warnings
// (ha-sysctl's termination message) due to the injection.
func podSysctlProblems(p *corev1.Pod) (fails, warns []string) {
	where := "pod " + p.Namespace + "/" + p.Name
	if p.Status.Reason == "SysctlForbidden" {
		fails = append(fails, where+": "+p.Status.Message)
	}
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name != sysctlContainer {
			continue
		}
		if w := s.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff" || w.Reason == "InvalidImageName") {
			fails = append(fails, fmt.Sprintf("%s: %s cannot pull %s (%s)", where, sysctlContainer, s.Image, w.Reason))
		}
		for _, t := range []*corev1.ContainerStateTerminated{s.State.Terminated, s.LastTerminationState.Terminated} {
			if t != nil && strings.TrimSpace(t.Message) != "" {
				warns = append(warns, fmt.Sprintf("%s: %s reported: %s", where, sysctlContainer, strings.TrimSpace(t.Message)))
				break
			}
		}
	}
	return fails, warns
}

func (d *doctor) installDeployment() *appsv1.Deployment {
	if d.install == nil {
		return nil
	}
	return d.install.Deployment
}

// checkNodes: no kubelet is older than a sysctl that a policy puts in pods'
// securityContext (the keepalive ones are safe from 1.29 on; an older kubelet
// rejects the pod with SysctlForbidden).
func (d *doctor) checkNodes(ctx context.Context) {
	const name = "nodes"
	// The newest Kubernetes minor a policy in use needs, and which sysctl.
	need, needBy := 0, ""
	for _, ns := range d.optedIn {
		p := d.policies[ns.Labels[policies.PolicyLabel]].DeepCopy()
		p.Default()
		s := p.Spec.Sysctls
		if !enabled(s.Enabled) || s.Method == v1alpha1.SysctlInitContainer {
			continue
		}
		for _, n := range slices.Sorted(maps.Keys(s.Values)) {
			if since, safe := policies.SafeSysctlSince(n); safe && since > need {
				need, needBy = since, fmt.Sprintf("%s (policy %s)", n, p.Name)
			}
		}
	}
	var nodes corev1.NodeList
	if err := d.c.List(ctx, &nodes); err != nil {
		d.report.add(cannotRead(name, "nodes", err))
		return
	}
	var old []string
	for _, n := range nodes.Items {
		v, err := version.ParseGeneric(n.Status.NodeInfo.KubeletVersion)
		if err != nil || need == 0 {
			continue
		}
		if v.Major() == 1 && int(v.Minor()) < need {
			old = append(old, n.Name+" ("+n.Status.NodeInfo.KubeletVersion+")")
		}
	}
	switch {
	case len(old) > 0:
		d.report.add(Check{Name: name, Status: Fail, Message: fmt.Sprintf("kubelets older than 1.%d reject pods with %s in their securityContext (SysctlForbidden): %s", need, needBy, listed(old)),
			Fix: fmt.Sprintf("upgrade those nodes to 1.%d, or use spec.sysctls.method InitContainer for the namespaces that reach them", need)})
	case need == 0:
		d.report.add(Check{Name: name, Status: OK, Message: fmt.Sprintf("%d nodes; no policy in use puts sysctls in pods' securityContext", len(nodes.Items))})
	default:
		d.report.add(Check{Name: name, Status: OK, Message: fmt.Sprintf("%d nodes, every kubelet 1.%d or newer (needed by %s)", len(nodes.Items), need, needBy)})
	}
}

// checkPrivilegedTemplates: Deployments whose pod template still carries the privileged
// ha-sysctl init container ha-injector injected, in namespaces whose Pod Security level
// now rejects privileged containers (raised after the injection). The webhook removes it
// from each new pod; the template keeps it until its next change.
func (d *doctor) checkPrivilegedTemplates(ctx context.Context) {
	const name = "privileged-templates"
	ps := d.settings().PodSecurity
	var items []string
	err := d.eachOptedIn(ctx, func() client.ObjectList { return &appsv1.DeploymentList{} }, func(l client.ObjectList) {
		for i := range l.(*appsv1.DeploymentList).Items {
			dep := &l.(*appsv1.DeploymentList).Items[i]
			ns := d.isOptedIn(dep.Namespace)
			if ns == nil || !policies.CarriesSysctlContainer(&dep.Spec.Template) ||
				policies.PrivilegedAllowed(policies.Namespace{Name: ns.Name, Labels: ns.Labels}, ps) {
				continue
			}
			items = append(items, dep.Namespace+"/Deployment "+dep.Name)
		}
	})
	if err != nil {
		d.report.add(cannotRead(name, "deployments", err))
		return
	}
	if len(items) == 0 {
		return
	}
	sort.Strings(items)
	c := Check{Name: name, Status: Warn,
		Message: fmt.Sprintf("%d Deployments carry the privileged %s init container in their pod template, in namespaces whose Pod Security level now rejects it: %s", len(items), policies.SysctlContainerName, listed(items)),
		Fix:     "the webhook removes it from each new pod (with a warning and ha_injector_fallbacks_total{reason=\"pod-security\"}); restart them (kubectl -n NAMESPACE rollout restart deployment/NAME) to take it out of the template too"}
	if d.opts.Workloads {
		c.Items = items
	}
	d.report.add(c)
}

// checkWorkloads: the workloads of opted-in namespaces whose injection is not what the
// current policy would give (not injected, injected from an older policy, or by other
// cluster facts): a restart would change them. The webhook never restarts them itself.
func (d *doctor) checkWorkloads(ctx context.Context) {
	const name = "workloads"
	g := d.gatherer()
	// The engine's context for obj, as the webhook would gather it; nil for an
	// object the webhook would not inject (its namespace's policy is in Audit).
	contextFor := func(obj runtime.Object) *policies.Context {
		o, err := policies.ObjectOf(obj)
		if err != nil {
			return nil
		}
		ns := d.isOptedIn(o.Meta.Namespace)
		if ns == nil {
			return nil
		}
		p := d.policies[ns.Labels[policies.PolicyLabel]]
		if p == nil || p.Spec.Mode == v1alpha1.ModeAudit {
			return nil
		}
		c, err := g.Context(ctx, &facts.Namespace{Name: ns.Name, Labels: ns.Labels, PolicyName: p.Name}, p, o, nil)
		if err != nil {
			return nil
		}
		return &c
	}
	var items []string
	perNamespace := map[string]int{}
	note := func(namespace, what, why string) {
		items = append(items, fmt.Sprintf("%s/%s: %s", namespace, what, why))
		perNamespace[namespace]++
	}
	err := d.eachOptedIn(ctx, func() client.ObjectList { return &appsv1.DeploymentList{} }, func(l client.ObjectList) {
		for i := range l.(*appsv1.DeploymentList).Items {
			dep := &l.(*appsv1.DeploymentList).Items[i]
			pctx := contextFor(dep)
			if pctx == nil {
				continue
			}
			// A restart changes the template (kubectl.kubernetes.io/restartedAt): the
			// webhook then undoes its recorded injection and applies the policy.
			m, err := policies.Mutate(*pctx, dep)
			if err != nil {
				continue
			}
			after := m.Object.(*appsv1.Deployment).Spec.Template.Annotations[policies.StatusAnnotation]
			if why := recordChange(dep.Spec.Template.Annotations, after, pctx.Policy); why != "" {
				note(dep.Namespace, "Deployment "+dep.Name, why)
			}
		}
	})
	if err != nil {
		d.report.add(cannotRead(name, "deployments", err))
		return
	}
	controllers := map[string]string{}
	err = d.eachOptedIn(ctx, func() client.ObjectList { return &corev1.PodList{} }, func(l client.ObjectList) {
		for i := range l.(*corev1.PodList).Items {
			pod := &l.(*corev1.PodList).Items[i]
			ref := metav1.GetControllerOf(pod)
			// A Deployment's pods follow its template (above); finished pods never restart.
			if ref != nil && ref.Kind == "ReplicaSet" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				continue
			}
			pctx := contextFor(pod)
			if pctx == nil {
				continue
			}
			m, err := policies.Mutate(*pctx, pod)
			if err != nil {
				continue
			}
			after := m.Object.(*corev1.Pod).Annotations[policies.StatusAnnotation]
			why := recordChange(pod.Annotations, after, pctx.Policy)
			if why == "" {
				continue
			}
			what := "Pod " + pod.Name
			if ref != nil {
				what = ref.Kind + " " + ref.Name
			}
			// One line per controller, however many of its pods.
			if key := pod.Namespace + "/" + what; controllers[key] == "" {
				controllers[key] = why
				note(pod.Namespace, what, why)
			}
		}
	})
	if err != nil {
		d.report.add(cannotRead(name, "pods", err))
		return
	}
	if len(items) == 0 {
		d.report.add(Check{Name: name, Status: OK, Message: fmt.Sprintf("every workload in %d opted-in namespaces carries the current policy's injection", len(d.optedIn))})
		return
	}
	sort.Strings(items)
	var counts []string
	for ns, n := range perNamespace {
		counts = append(counts, fmt.Sprintf("%s %d", ns, n))
	}
	sort.Strings(counts)
	c := Check{Name: name, Status: Warn,
		Message: fmt.Sprintf("%d workloads would change at their next restart (not injected, or injected from an older policy): %s", len(items), strings.Join(counts, ", ")),
		Fix:     "restart them when convenient (kubectl -n NAMESPACE rollout restart deployment/NAME): the webhook never restarts a workload itself; --workloads lists them"}
	if d.opts.Workloads {
		c.Items = items
	}
	d.report.add(c)
}

// recordChange says why the injection recorded in before (annotations) differs from
// the record after, or "" when it does not.
func recordChange(before map[string]string, after string, policy *v1alpha1.HAPolicy) string {
	if before[policies.StatusAnnotation] == after {
		return ""
	}
	old := policies.ReadRecord(before)
	switch {
	case after == "":
		return "its injection would be removed"
	case old == nil:
		return "not injected"
	case old.Policy != policy.Name:
		return "injected from policy " + old.Policy + ", the namespace now names " + policy.Name
	default:
		neu := policies.ReadRecord(map[string]string{policies.StatusAnnotation: after})
		if neu != nil && neu.Hash != old.Hash {
			return "injected from an older version of policy " + policy.Name
		}
		return "injected differently than today (the node count or Pod Security changed)"
	}
}

// gatherer gathers the engine's facts as the webhook does, from the cluster
// (each namespace, policy, owner and domain count read once) with the
// webhook's settings.
func (d *doctor) gatherer() *facts.Gatherer {
	if d.facts == nil {
		d.facts = &facts.Gatherer{Source: facts.Memo(&facts.Reader{Cache: d.c, API: d.c}), Settings: d.settings()}
	}
	return d.facts
}

// settings are the webhook's: from its Deployment's arguments, serve's
// defaults for the rest (an auto Pod Security level resolved as serve
// resolves it; privileged when that fails).
// Read once, after the webhook's Deployment was found (checkWebhookConfiguration).
func (d *doctor) settings() facts.Settings {
	if d.resolved != nil {
		return *d.resolved
	}
	var s installation.Settings
	if d.install != nil {
		s = d.install.Settings
	}
	out, err := s.Facts(d.cfg, d.opts.DefaultSysctlImage)
	if err != nil {
		out.PodSecurity.Level = policies.PodSecurityPrivileged
	}
	d.resolved = &out
	return out
}

// allowedSysctlImages is the webhook's --allowed-sysctl-images, or --sysctl-image
// alone.
func (d *doctor) allowedSysctlImages() []string {
	s := d.settings()
	if s.AllowedSysctlImages != nil {
		return s.AllowedSysctlImages
	}
	return []string{s.SysctlImage}
}
