package webhook

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/ha-injector/ha-injector/facts"
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
	// Cache reads namespaces (metadata only), policies, nodes (metadata only)
	// and StatefulSets (their replica count) from the manager's informers.
	Cache client.Reader
	// APIReader reads from the API server directly: once when the cache has
	// not seen an object yet (a namespace created a moment ago), and a
	// rollback's ReplicaSet templates.
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

	facts     *facts.Gatherer
	factsOnce sync.Once
}

var _ admission.Handler = &Mutator{}

// Handle admits one object. It never denies: whatever goes wrong on
// ha-injector's side, the object is allowed unchanged with a warning. It
// reads the namespace, decodes the object, resolves the policy, gathers
// what the engine needs, runs the engine, builds the patch from the parts
// the injections own, and answers.
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
	g := m.gatherer()
	ns, err := g.Namespace(ctx, req.Namespace)
	if err != nil {
		log.Error(err, "reading the namespace")
		return m.failOpen("", fmt.Sprintf("namespace %q could not be read (%v), admitted unchanged", req.Namespace, shortError(err)))
	}
	policyName = ns.PolicyName
	obj, err := m.decode(req)
	if err != nil {
		log.Error(err, "decoding the object", "name", req.Name)
		return m.failOpen(policyName, fmt.Sprintf("the %s could not be decoded (%v), admitted unchanged", m.Kind, shortError(err)))
	}
	policy, early := m.resolvePolicy(ctx, log, g, req, ns, obj)
	if early != nil {
		return *early
	}
	log = log.WithValues("name", objectName(req, obj), "policy", policyName)
	old, err := m.old(req)
	if err == nil {
		var pctx policies.Context
		if pctx, err = g.Context(ctx, ns, policy, obj, old); err == nil {
			return m.mutate(log, req, obj, policy, policyName, pctx)
		}
	}
	log.Error(err, "reading the stored Deployment or its ReplicaSets")
	return m.failOpen(policyName, fmt.Sprintf("the stored Deployment or its ReplicaSets could not be read (%v), admitted unchanged", shortError(err)))
}

// mutate runs the engine, builds the patch and answers.
func (m *Mutator) mutate(log logr.Logger, req admission.Request, obj *policies.Object, policy *v1alpha1.HAPolicy, policyName string, pctx policies.Context) admission.Response {
	mutation := policies.MutateObject(pctx, obj)
	jsonPatch, err := buildPatch(req, obj, mutation)
	if err != nil {
		log.Error(err, "building the patch")
		return m.failOpen(policyName, fmt.Sprintf("the %s could not be patched (%v), admitted unchanged", m.Kind, shortError(err)))
	}
	return m.answer(log, req, obj, policy, policyName, mutation, jsonPatch)
}

// gatherer reads the engine's facts from the cache, the API reader and the
// ReplicaSets index, with the installation's settings; what it cannot read
// and can do without is logged. It is made once, from the fields.
func (m *Mutator) gatherer() *facts.Gatherer {
	m.factsOnce.Do(func() {
		r := &facts.Reader{Cache: m.Cache, API: m.APIReader}
		if m.ReplicaSets != nil {
			r.ReplicaSets = m.ReplicaSets
		}
		m.facts = &facts.Gatherer{
			Source:   r,
			Settings: facts.Settings{SysctlImage: m.SysctlImage, AllowedSysctlImages: m.AllowedSysctlImages, PodSecurity: m.PodSecurity},
			Unknown: func(ctx context.Context, what string, err error) {
				logf.FromContext(ctx).V(1).Info("not read; the engine does without it", "what", what, "error", err.Error())
			},
		}
	})
	return m.facts
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

// answer counts, logs and answers the admission: the patch when the object
// changed, warnings for what was decided when a person sent it.
func (m *Mutator) answer(log logr.Logger, req admission.Request, obj *policies.Object, policy *v1alpha1.HAPolicy, policyName string, mutation *policies.Mutation, jsonPatch []byte) admission.Response {
	if policy == nil {
		policy = &v1alpha1.HAPolicy{}
	}
	outcome := outcomeOf(policy, mutation, jsonPatch)
	m.count(policyName, outcome, mutation.Decisions)
	var warnings []string
	if obj.Controller() == nil {
		// Warnings to a controller (a ReplicaSet, a Job...) only end up in
		// its log, once per pod.
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

// resolvePolicy finds the HAPolicy the namespace names, as the cache holds it
// (read only, not defaulted: the engine defaults its own copy). It returns
// nil for a Deployment in a namespace that no longer opts in (only Deployments
// ha-injector injected come here, through the chart's leaving-deployments
// webhook: their injection is taken back), and an early answer when there is
// nothing to do, or the policy cannot be read or breaks a rule of its CRD.
func (m *Mutator) resolvePolicy(ctx context.Context, log logr.Logger, g *facts.Gatherer, req admission.Request, ns *facts.Namespace, obj *policies.Object) (*v1alpha1.HAPolicy, *admission.Response) {
	policy, err := g.Policy(ctx, ns)
	switch {
	case err == nil && policy == nil && m.Kind != policies.KindDeployment:
		admissionsTotal.WithLabelValues(string(m.Kind), "", string(OutcomeSkipped)).Inc()
		resp := admission.Allowed("namespace not opted in")
		return nil, &resp
	case err == nil:
		// The policy is the cache's own (read only): the engine defaults a
		// copy, once per version, for a policy written before a field existed.
		return policy, nil
	}
	var warning string
	var invalid *policies.InvalidPolicyError
	if errors.As(err, &invalid) {
		// Stored under an older CRD, or never checked: nothing of it is
		// applied. It is treated as a policy that cannot be read.
		log.Error(err, "refusing the HAPolicy", "policy", ns.PolicyName)
		fallbacksTotal.WithLabelValues(string(m.Kind), string(policies.FallbackInvalidPolicy)).Inc()
		warning = "admitted unchanged (ha-injector doctor lists every rule): " + invalid.Summary()
	} else {
		// A typo or a cache miss must not strip HA settings: the recorded
		// injection stays as it is.
		log.Error(err, "reading the HAPolicy", "policy", ns.PolicyName)
		warning = fmt.Sprintf("HAPolicy %q named by namespace %s could not be read (%v), admitted unchanged", ns.PolicyName, req.Namespace, shortError(errors.Unwrap(err)))
	}
	// Even without its policy, an UPDATE that only drops the recorded
	// injection (a re-applied manifest) keeps the stored template: no
	// rollout, nothing stripped.
	if resp, kept := m.keepStored(req, obj, ns.PolicyName, warning); kept {
		return nil, &resp
	}
	resp := m.failOpen(ns.PolicyName, warning)
	return nil, &resp
}

// keepStored answers a Deployment UPDATE whose policy cannot be used: when its
// pod template equals the stored one apart from ha-injector's recorded
// injection, with a patch back to the stored template (the engine needs no
// policy for that); otherwise kept is false.
func (m *Mutator) keepStored(req admission.Request, obj *policies.Object, policyName, warning string) (resp admission.Response, kept bool) {
	old, err := m.old(req)
	if err != nil || old == nil {
		return admission.Response{}, false
	}
	u := policies.NewUpdate(old.Template, obj.Template)
	if u.TemplateChanged {
		return admission.Response{}, false
	}
	mutation := policies.MutateObject(policies.Context{Namespace: policies.Namespace{Name: req.Namespace}, Update: u}, obj)
	jsonPatch, err := buildPatch(req, obj, mutation)
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
// result, built from the parts the injections own (nil when nothing changed).
func buildPatch(req admission.Request, obj *policies.Object, mutation *policies.Mutation) ([]byte, error) {
	if !mutation.Changed {
		return nil, nil
	}
	ops, err := patch.BuildObject(req.Object.Raw, obj, mutation.Object)
	if err != nil || len(ops) == 0 {
		return nil, err
	}
	return patch.Encode(ops)
}

// old decodes the stored Deployment of an UPDATE; nil for any other request.
func (m *Mutator) old(req admission.Request) (*policies.Object, error) {
	if req.Operation != admissionv1.Update || m.Kind != policies.KindDeployment || len(req.OldObject.Raw) == 0 {
		return nil, nil
	}
	old, err := policies.Decode(m.Kind, req.OldObject.Raw)
	if err != nil {
		return nil, fmt.Errorf("decoding the old object: %w", err)
	}
	return old, nil
}

// decode turns the request's object into its Go type. Field names are
// matched case-sensitively, as the API server does.
func (m *Mutator) decode(req admission.Request) (*policies.Object, error) {
	if len(req.Object.Raw) == 0 {
		return nil, errors.New("the request carries no object")
	}
	if req.Kind.Kind != "" && req.Kind.Kind != string(m.Kind) {
		return nil, fmt.Errorf("the request is for a %s, this endpoint admits %ss", req.Kind.Kind, m.Kind)
	}
	return policies.Decode(m.Kind, req.Object.Raw)
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

// objectName is the name, or the generateName prefix of a Pod made by a controller.
func objectName(req admission.Request, obj *policies.Object) string {
	if req.Name != "" {
		return req.Name
	}
	if obj.Meta.GenerateName != "" {
		return obj.Meta.GenerateName + "*"
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
