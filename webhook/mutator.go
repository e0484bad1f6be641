package webhook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/webhook/patch"
)

// controlPlaneLabel marks nodes that do not run workloads in most clusters;
// they are not counted as topology domains.
const controlPlaneLabel = "node-role.kubernetes.io/control-plane"

// Mutator is the admission.Handler for one kind of workload.
type Mutator struct {
	// Kind is the kind this handler admits (Pod or Deployment).
	Kind policies.Kind
	// Cache reads namespaces (metadata only), policies and nodes (metadata
	// only) from the manager's informers.
	Cache client.Reader
	// APIReader reads from the API server directly; used once when the cache
	// has not seen an object yet (a namespace created a moment ago).
	APIReader client.Reader
	// SysctlImage is the installation's image of the ha-sysctl init container.
	SysctlImage string
	// AllowedSysctlImages are the images a policy may name for it (nil:
	// SysctlImage alone).
	AllowedSysctlImages []string
	// PodSecurity is the cluster's Pod Security default, resolved (never auto).
	PodSecurity policies.PodSecurityDefault
	// ReplicaSets, when set, holds the facts of every ReplicaSet; a miss is
	// read from APIReader. Without it ReplicaSets are read like namespaces,
	// from Cache, then APIReader.
	ReplicaSets *replicaSets
}

var _ admission.Handler = &Mutator{}

// Handle admits one object. It never denies: whatever goes wrong on
// ha-injector's side, the object is allowed unchanged with a warning. It
// reads the namespace, decodes the object, resolves the policy, gathers
// what the engine needs, runs the engine, builds the patch from the parts
// the engine may change, and answers.
func (m *Mutator) Handle(ctx context.Context, req admission.Request) (resp admission.Response) {
	log := logf.FromContext(ctx).WithValues("kind", m.Kind, "namespace", req.Namespace)
	policyName := ""
	defer func() {
		if r := recover(); r != nil {
			log.Error(fmt.Errorf("panic: %v", r), "recovered from a panic; admitting unchanged", "stack", string(debug.Stack()))
			resp = m.failOpen(policyName, "internal error, admitted unchanged")
		}
	}()

	if why, ok := m.admits(req); !ok {
		admissionsTotal.WithLabelValues(string(m.Kind), "", string(OutcomeSkipped)).Inc()
		return admission.Allowed(why)
	}
	ns, err := m.namespace(ctx, req.Namespace)
	if err != nil {
		log.Error(err, "reading the namespace")
		return m.failOpen("", fmt.Sprintf("namespace %q could not be read (%v), admitted unchanged", req.Namespace, shortError(err)))
	}
	policyName = ns.Labels[policies.PolicyLabel]
	obj, err := m.decode(req)
	if err != nil {
		log.Error(err, "decoding the object", "name", req.Name)
		return m.failOpen(policyName, fmt.Sprintf("the %s could not be decoded (%v), admitted unchanged", m.Kind, shortError(err)))
	}
	policy, early := m.resolvePolicy(ctx, req, obj, policyName)
	if early != nil {
		return *early
	}
	log = log.WithValues("name", objectName(req, obj), "policy", policyName)
	pctx, err := m.engineContext(ctx, log, req, ns, policy, obj)
	if err != nil {
		log.Error(err, "reading the stored Deployment or its ReplicaSets")
		return m.failOpen(policyName, fmt.Sprintf("the stored Deployment or its ReplicaSets could not be read (%v), admitted unchanged", shortError(err)))
	}
	mutation, err := policies.Mutate(pctx, obj)
	if err != nil {
		log.Error(err, "mutating")
		return m.failOpen(policyName, fmt.Sprintf("the %s could not be mutated (%v), admitted unchanged", m.Kind, shortError(err)))
	}
	jsonPatch, err := buildPatch(req, obj, mutation)
	if err != nil {
		log.Error(err, "building the patch")
		return m.failOpen(policyName, fmt.Sprintf("the %s could not be patched (%v), admitted unchanged", m.Kind, shortError(err)))
	}
	return m.answer(log, req, obj, policy, policyName, mutation, jsonPatch)
}

// admits reports whether the request is one the handler injects into: a Pod
// CREATE, or a Deployment CREATE or UPDATE, on the object itself. Anything
// else (a status or ephemeralcontainers update, a DELETE, a scale) is allowed
// untouched: an injection patch there would be refused by the API server and
// fail the user's request. The chart's rules send only those; one edited rule
// must not break a cluster.
func (m *Mutator) admits(req admission.Request) (string, bool) {
	if req.SubResource != "" {
		return fmt.Sprintf("subresource %s of a %s: nothing to inject", req.SubResource, m.Kind), false
	}
	switch {
	case req.Operation == admissionv1.Create:
		return "", true
	case req.Operation == admissionv1.Update && m.Kind == policies.KindDeployment:
		return "", true
	}
	return fmt.Sprintf("%s of a %s: nothing to inject", req.Operation, m.Kind), false
}

// engineContext gathers what the engine needs besides the object: the
// namespace, the policy (nil: the namespace no longer opts in), a Pod's
// owner, a Deployment UPDATE's stored template (and, for a rollback, its
// ReplicaSets' templates), and the cluster facts the policy needs.
func (m *Mutator) engineContext(ctx context.Context, log logr.Logger, req admission.Request, ns *metav1.PartialObjectMetadata, policy *v1alpha1.HAPolicy, obj runtime.Object) (policies.Context, error) {
	pctx := policies.Context{
		Policy:              policy,
		Namespace:           policies.Namespace{Name: req.Namespace, Labels: ns.Labels},
		SysctlImage:         m.SysctlImage,
		AllowedSysctlImages: m.AllowedSysctlImages,
		NotOptedIn:          policy == nil,
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		pctx.Owner = m.owner(ctx, log, req.Namespace, o)
	case *appsv1.Deployment:
		if err := m.update(ctx, req, o, &pctx); err != nil {
			return pctx, err
		}
	}
	if policy != nil {
		pctx.Cluster = m.cluster(ctx, log, policy, pctx.Owner)
	}
	pctx.Cluster.PodSecurity = m.PodSecurity
	return pctx, nil
}

// answer counts, logs and answers the admission: the patch when the object
// changed, warnings for what was decided when a person sent it.
func (m *Mutator) answer(log logr.Logger, req admission.Request, obj runtime.Object, policy *v1alpha1.HAPolicy, policyName string, mutation *policies.Mutation, jsonPatch []byte) admission.Response {
	if policy == nil {
		policy = &v1alpha1.HAPolicy{}
	}
	outcome := outcomeOf(policy, mutation, jsonPatch)
	m.count(policyName, outcome, mutation.Decisions)
	var warnings []string
	if !madeByController(obj) {
		warnings = warningsFor(mutation.Decisions)
	}
	// What could not be applied as written reaches the log even when no one
	// sees a warning (a controller's pods): it is why a pod lacks something.
	if fallbacks := fallbackLines(mutation.Decisions); len(fallbacks) > 0 {
		log.Info("policy not applied as written", "outcome", outcome, "decisions", fallbacks, "warned", len(warnings) > 0)
	}
	if log.V(1).Enabled() {
		lines := make([]string, len(mutation.Decisions))
		for i, d := range mutation.Decisions {
			lines[i] = d.String()
		}
		log.V(1).Info("decisions", "outcome", outcome, "decisions", lines, "dryRun", req.DryRun != nil && *req.DryRun)
	}
	answer := admission.Allowed("").WithWarnings(warnings...)
	if outcome != OutcomeMutated {
		return answer
	}
	log.V(1).Info("mutated", "features", policies.AppliedFeatures(mutation.Decisions))
	// The encoded patch is the answer (controller-runtime would encode the
	// operations again if they were passed as Patches).
	answer.Patch, answer.PatchType = jsonPatch, ptr.To(admissionv1.PatchTypeJSONPatch)
	return answer
}

func (m *Mutator) failOpen(policy, warning string) admission.Response {
	admissionsTotal.WithLabelValues(string(m.Kind), policy, string(OutcomeError)).Inc()
	return admission.Allowed("").WithWarnings(truncate(warningPrefix + warning))
}

// namespace reads the namespace's metadata from the cache, and from the API
// server when the cache has not seen it yet.
func (m *Mutator) namespace(ctx context.Context, name string) (*metav1.PartialObjectMetadata, error) {
	if name == "" {
		return nil, errors.New("the request names no namespace")
	}
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns, getWithFallback(ctx, m.Cache, m.APIReader, types.NamespacedName{Name: name}, ns)
}

func (m *Mutator) policy(ctx context.Context, name string) (*v1alpha1.HAPolicy, error) {
	p := &v1alpha1.HAPolicy{}
	return p, getWithFallback(ctx, m.Cache, m.APIReader, types.NamespacedName{Name: name}, p)
}

func getWithFallback(ctx context.Context, cache, api client.Reader, key types.NamespacedName, obj client.Object) error {
	err := cache.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) && api != nil {
		err = api.Get(ctx, key, obj)
	}
	return err
}

// cluster gathers the cluster facts the policy needs: the number of
// topology domains, only for a Required policy and a workload whose replica
// count is known (a Deployment, or a Pod whose ReplicaSet was found). "Schedulable" is
// approximated from node metadata: control-plane nodes (by their role label)
// do not count, cordoned or tainted workers still do.
func (m *Mutator) cluster(ctx context.Context, log logr.Logger, policy *v1alpha1.HAPolicy, owner *policies.Owner) policies.Cluster {
	key, needed := policies.NeedsTopologyDomains(policy, m.Kind, owner)
	if !needed {
		return policies.Cluster{}
	}
	domains, err := CountTopologyDomains(ctx, m.Cache, key)
	if err != nil {
		log.Error(err, "listing nodes; Required anti-affinity will not be downgraded")
		return policies.Cluster{}
	}
	return policies.Cluster{TopologyDomains: map[string]int{key: domains}}
}

// owner finds the ReplicaSet that controls a Pod (from the ReplicaSets
// index, one uncached read for a ReplicaSet created a moment ago). The
// Deployment controller copies the Deployment's annotations onto it, with the
// desired replica count, so the Pod webhook can honour a Deployment's opt-out
// and minReplicas. A StatefulSet gives its replica count. Anything else, or a
// lookup that fails, gives nil: unknown.
func (m *Mutator) owner(ctx context.Context, log logr.Logger, namespace string, pod *corev1.Pod) *policies.Owner {
	ref := metav1.GetControllerOf(pod)
	if ref == nil || !strings.HasPrefix(ref.APIVersion, "apps/") {
		return nil
	}
	if ref.Kind == "StatefulSet" {
		return m.statefulSet(ctx, log, namespace, ref.Name)
	}
	if ref.Kind != "ReplicaSet" {
		return nil
	}
	facts, err := m.replicaSet(ctx, namespace, ref.Name)
	if err != nil {
		log.V(1).Info("owner ReplicaSet not found; its Deployment's settings are unknown", "replicaSet", ref.Name, "error", err.Error())
		return nil
	}
	owner := &policies.Owner{Kind: "ReplicaSet", Name: ref.Name}
	if facts.inject != "" {
		owner.Annotations = map[string]string{policies.InjectAnnotation: facts.inject}
	}
	if facts.replicas >= 0 {
		owner.Replicas = ptr.To(facts.replicas)
	}
	return owner
}

// statefulSet reads the replica count of a Pod's StatefulSet, from the cache
// (one uncached read for one created a moment ago); nil when it cannot.
func (m *Mutator) statefulSet(ctx context.Context, log logr.Logger, namespace, name string) *policies.Owner {
	s := &appsv1.StatefulSet{}
	if err := getWithFallback(ctx, m.Cache, m.APIReader, types.NamespacedName{Namespace: namespace, Name: name}, s); err != nil {
		log.V(1).Info("owner StatefulSet not found; its replica count is unknown", "statefulSet", name, "error", err.Error())
		return nil
	}
	// Unset means 1, as the API server defaults it.
	return &policies.Owner{Kind: "StatefulSet", Name: name, Replicas: ptr.To(ptr.Deref(s.Spec.Replicas, 1))}
}

func (m *Mutator) replicaSet(ctx context.Context, namespace, name string) (replicaSetFacts, error) {
	if m.ReplicaSets != nil {
		if f, ok := m.ReplicaSets.get(namespace, name); ok {
			return f, nil
		}
	}
	rs := metadataOf(appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))
	key := types.NamespacedName{Namespace: namespace, Name: name}
	var err error
	if m.ReplicaSets != nil {
		err = m.APIReader.Get(ctx, key, rs)
	} else {
		err = getWithFallback(ctx, m.Cache, m.APIReader, key, rs)
	}
	if err != nil {
		return replicaSetFacts{}, err
	}
	_, f, _ := factsOf(rs)
	return f, nil
}

// resolvePolicy finds the HAPolicy the namespace names, as the cache holds it
// (read only, not defaulted: the engine defaults its own copy). It returns
// nil for a Deployment in a namespace that no longer opts in (only Deployments
// ha-injector injected come here, through the chart's leaving-deployments
// webhook: their injection is taken back), and an early answer when there is
// nothing to do or the policy cannot be read.
func (m *Mutator) resolvePolicy(ctx context.Context, req admission.Request, obj runtime.Object, policyName string) (*v1alpha1.HAPolicy, *admission.Response) {
	log := logf.FromContext(ctx).WithValues("kind", m.Kind, "namespace", req.Namespace)
	if policyName == "" {
		if m.Kind != policies.KindDeployment {
			admissionsTotal.WithLabelValues(string(m.Kind), "", string(OutcomeSkipped)).Inc()
			resp := admission.Allowed("namespace not opted in")
			return nil, &resp
		}
		return nil, nil
	}
	policy, err := m.policy(ctx, policyName)
	if err != nil {
		// A typo or a cache miss must not strip HA settings: the recorded
		// injection stays as it is.
		log.Error(err, "reading the HAPolicy", "policy", policyName)
		warning := fmt.Sprintf("HAPolicy %q named by namespace %s could not be read (%v), admitted unchanged", policyName, req.Namespace, shortError(err))
		if d, ok := obj.(*appsv1.Deployment); ok {
			// Even without its policy, an UPDATE that only drops the
			// recorded injection (a re-applied manifest) keeps the stored
			// template: no rollout, nothing stripped.
			if resp, kept := m.keepStored(ctx, req, d, policyName, warning); kept {
				return nil, &resp
			}
		}
		resp := m.failOpen(policyName, warning)
		return nil, &resp
	}
	if err := policies.PolicyError(policy); err != nil {
		// Stored under an older CRD, or never checked: nothing of it is
		// applied. It is treated as a policy that cannot be read.
		log.Error(err, "refusing the HAPolicy", "policy", policyName)
		fallbacksTotal.WithLabelValues(string(m.Kind), string(policies.FallbackInvalidPolicy)).Inc()
		warning := fmt.Sprintf("admitted unchanged (ha-injector doctor lists every rule): %s", policySummary(err))
		if d, ok := obj.(*appsv1.Deployment); ok {
			if resp, kept := m.keepStored(ctx, req, d, policyName, warning); kept {
				return nil, &resp
			}
		}
		resp := m.failOpen(policyName, warning)
		return nil, &resp
	}
	// The policy is the cache's own (read only): the engine defaults a copy,
	// once per version, for a policy written before a field existed.
	return policy, nil
}

// keepStored answers a Deployment UPDATE whose policy cannot be read: when its
// pod template equals the stored one apart from ha-injector's recorded
// injection, with a patch back to the stored template (the engine needs no
// policy for that); otherwise kept is false.
func (m *Mutator) keepStored(ctx context.Context, req admission.Request, d *appsv1.Deployment, policyName, warning string) (resp admission.Response, kept bool) {
	old, err := oldDeployment(req)
	if err != nil || old == nil {
		return admission.Response{}, false
	}
	u := policies.NewUpdate(&old.Spec.Template, &d.Spec.Template)
	if u.TemplateChanged {
		return admission.Response{}, false
	}
	mutation, err := policies.Mutate(policies.Context{Namespace: policies.Namespace{Name: req.Namespace}, Update: u}, d)
	if err != nil {
		return admission.Response{}, false
	}
	jsonPatch, err := buildPatch(req, d, mutation)
	if err != nil {
		return admission.Response{}, false
	}
	admissionsTotal.WithLabelValues(string(m.Kind), policyName, string(OutcomeError)).Inc()
	answer := admission.Allowed("").WithWarnings(truncate(warningPrefix + strings.Replace(warning, "admitted unchanged", "the stored pod template kept", 1)))
	if jsonPatch != nil {
		answer.Patch, answer.PatchType = jsonPatch, ptr.To(admissionv1.PatchTypeJSONPatch)
	}
	return answer, true
}

// buildPatch encodes the patch from the request's object to the engine's
// result, built from the parts the engine may change (nil when nothing
// changed).
func buildPatch(req admission.Request, obj runtime.Object, mutation *policies.Mutation) ([]byte, error) {
	if !mutation.Changed {
		return nil, nil
	}
	ops, err := patch.Build(req.Object.Raw, obj, mutation.Object)
	if err != nil || len(ops) == 0 {
		return nil, err
	}
	return patch.Encode(ops)
}

// update fills what the engine needs on a Deployment UPDATE: the stored pod
// template and, only when the update changes it, the templates of the
// Deployment's ReplicaSets that it could be rolling back to.
func (m *Mutator) update(ctx context.Context, req admission.Request, d *appsv1.Deployment, pctx *policies.Context) error {
	old, err := oldDeployment(req)
	if err != nil || old == nil {
		return err
	}
	pctx.Update = policies.NewUpdate(&old.Spec.Template, &d.Spec.Template)
	if !pctx.Update.TemplateChanged || m.APIReader == nil || old.UID == "" {
		return nil
	}
	pctx.Update.Revisions, err = m.rollbackCandidates(ctx, req.Namespace, old, &d.Spec.Template)
	return err
}

// defaultRevisionHistoryLimit is the API server's default of a Deployment's
// spec.revisionHistoryLimit.
const defaultRevisionHistoryLimit = 10

// rollbackCandidates returns the templates of the Deployment's ReplicaSets
// that tmpl could be a rollback to (what `kubectl rollout undo` sends is a
// ReplicaSet's template without its pod-template-hash label). Every template
// change of every Deployment comes here, so it reads as little as it can:
// the Deployment's own ReplicaSets from the metadata index (its controller
// reference), then in full, newest first, only those whose labels are tmpl's
// and at most revisionHistoryLimit + 1 of them (the Deployment controller
// keeps no more), each with a read of its own from the API server's watch
// cache: a ReplicaSet's template is large and only this reads it.
func (m *Mutator) rollbackCandidates(ctx context.Context, namespace string, d *appsv1.Deployment, tmpl *corev1.PodTemplateSpec) ([]corev1.PodTemplateSpec, error) {
	owned, err := m.ownedReplicaSets(ctx, namespace, d)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(owned, func(a, b ownedReplicaSet) int { return cmp.Compare(b.revision, a.revision) })
	limit := int(ptr.Deref(d.Spec.RevisionHistoryLimit, defaultRevisionHistoryLimit)) + 1
	want := templateLabelsHash(tmpl.Labels)
	var names []string
	for i, rs := range owned {
		if i < limit && rs.labels == want {
			names = append(names, rs.name)
		}
	}
	// A few at a time: each is one round trip to the API server.
	templates := make([]*corev1.PodTemplateSpec, len(names))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(rollbackReads)
	for i, name := range names {
		g.Go(func() error {
			full := &appsv1.ReplicaSet{}
			switch err := m.APIReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, full, fromWatchCache); {
			case apierrors.IsNotFound(err):
				return nil
			case err != nil:
				return err
			}
			templates[i] = &full.Spec.Template
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]corev1.PodTemplateSpec, 0, len(templates))
	for _, t := range templates {
		if t != nil {
			out = append(out, *t)
		}
	}
	return out, nil
}

// rollbackReads is how many ReplicaSets rollbackCandidates reads at once.
const rollbackReads = 4

// fromWatchCache reads an object as the API server's watch cache holds it
// (resourceVersion "0"), without a quorum read of etcd: a ReplicaSet a rollback
// returns to is an old one, and its template does not change.
var fromWatchCache = &client.GetOptions{Raw: &metav1.GetOptions{ResourceVersion: "0"}}

// ownedReplicaSets lists, as metadata, the ReplicaSets whose controller is d:
// from the ReplicaSets index, or else from the cache (those that match d's
// selector).
func (m *Mutator) ownedReplicaSets(ctx context.Context, namespace string, d *appsv1.Deployment) ([]ownedReplicaSet, error) {
	if m.ReplicaSets != nil {
		return m.ReplicaSets.owned(d.UID), nil
	}
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, err
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSetList"))
	if err := m.Cache.List(ctx, list, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: selector}); err != nil {
		return nil, err
	}
	var owned []ownedReplicaSet
	for i := range list.Items {
		if ref := metav1.GetControllerOfNoCopy(&list.Items[i]); ref != nil && ref.UID == d.UID {
			_, f, _ := factsOf(&list.Items[i])
			owned = append(owned, ownedReplicaSet{name: list.Items[i].Name, replicaSetFacts: f})
		}
	}
	return owned, nil
}

// oldDeployment decodes the stored Deployment of an UPDATE; nil for any other request.
func oldDeployment(req admission.Request) (*appsv1.Deployment, error) {
	if req.Operation != admissionv1.Update || len(req.OldObject.Raw) == 0 {
		return nil, nil
	}
	old := &appsv1.Deployment{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(req.OldObject.Raw, old); err != nil {
		return nil, fmt.Errorf("decoding the old object: %w", err)
	}
	return old, nil
}

// CountTopologyDomains counts the distinct values of the label key on the
// nodes that run workloads (the webhook, and preview --cluster). Node metadata
// carries no spec, so control-plane nodes are recognised by their role label,
// not by their taints.
func CountTopologyDomains(ctx context.Context, r client.Reader, key string) (int, error) {
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	// Read-only: the cached objects need not be copied.
	if err := r.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		return 0, err
	}
	domains := map[string]bool{}
	for _, n := range nodes.Items {
		if _, cp := n.Labels[controlPlaneLabel]; cp {
			continue
		}
		if v, ok := n.Labels[key]; ok {
			domains[v] = true
		}
	}
	return len(domains), nil
}

// decode turns the request's object into its Go type. Field names are
// matched case-sensitively, as the API server does.
func (m *Mutator) decode(req admission.Request) (runtime.Object, error) {
	if len(req.Object.Raw) == 0 {
		return nil, errors.New("the request carries no object")
	}
	if req.Kind.Kind != "" && req.Kind.Kind != string(m.Kind) {
		return nil, fmt.Errorf("the request is for a %s, this endpoint admits %ss", req.Kind.Kind, m.Kind)
	}
	var obj runtime.Object
	switch m.Kind {
	case policies.KindPod:
		obj = &corev1.Pod{}
	case policies.KindDeployment:
		obj = &appsv1.Deployment{}
	default:
		return nil, fmt.Errorf("unsupported kind %q", m.Kind)
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

func outcomeOf(policy *v1alpha1.HAPolicy, m *policies.Mutation, jsonPatch []byte) Outcome {
	switch {
	case policy.Spec.Mode == v1alpha1.ModeAudit:
		return OutcomeAudit
	case len(jsonPatch) > 0:
		// Also a skipped workload whose earlier injection was taken back.
		return OutcomeMutated
	}
	for _, d := range m.Decisions {
		if d.Feature == policies.FeatureWorkload && d.Action == policies.Skipped {
			return OutcomeSkipped
		}
	}
	return OutcomeUnchanged
}

// count counts the admission, the features injected and, whatever the
// outcome (an Audit policy's included), each kind of fallback once.
func (m *Mutator) count(policy string, outcome Outcome, decisions []policies.Decision) {
	admissionsTotal.WithLabelValues(string(m.Kind), policy, string(outcome)).Inc()
	if outcome == OutcomeMutated {
		for _, f := range policies.AppliedFeatures(decisions) {
			injectionsTotal.WithLabelValues(string(m.Kind), string(f)).Inc()
		}
	}
	seen := map[policies.Fallback]bool{}
	for _, d := range decisions {
		if d.Fallback != "" && !seen[d.Fallback] {
			seen[d.Fallback] = true
			fallbacksTotal.WithLabelValues(string(m.Kind), string(d.Fallback)).Inc()
		}
	}
}

// policySummary is a one-line account of why a policy is refused.
func policySummary(err error) string {
	var invalid *policies.InvalidPolicyError
	if errors.As(err, &invalid) {
		return invalid.Summary()
	}
	return err.Error()
}

// fallbackLines are the decisions that say the policy was not applied as
// written.
func fallbackLines(decisions []policies.Decision) []string {
	var lines []string
	for _, d := range decisions {
		if d.Fallback != "" {
			lines = append(lines, d.String())
		}
	}
	return lines
}

// madeByController reports whether a controller (a ReplicaSet, a Job...)
// created the object. Warnings to a controller only end up in its log, once
// per pod; the decisions are in the webhook's log and the status annotation.
func madeByController(obj runtime.Object) bool {
	o, ok := obj.(client.Object)
	return ok && metav1.GetControllerOfNoCopy(o) != nil
}

// objectName is the name, or the generateName prefix of a Pod made by a controller.
func objectName(req admission.Request, obj runtime.Object) string {
	if req.Name != "" {
		return req.Name
	}
	if o, ok := obj.(client.Object); ok && o.GetGenerateName() != "" {
		return o.GetGenerateName() + "*"
	}
	return ""
}

func shortError(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return string(status.Status().Reason)
	}
	return err.Error()
}
