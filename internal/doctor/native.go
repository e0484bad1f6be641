package doctor

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/installation"
	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
)

// nativePolicyMetric counts the API server's evaluations of each
// MutatingAdmissionPolicy, by binding and error type.
const nativePolicyMetric = "apiserver_mutating_admission_policy_check_total"

// checkMode says which admission mode the cluster runs: webhook (a
// MutatingWebhookConfiguration with ha-injector's pods webhook), native
// (ha-injector's MutatingAdmissionPolicy), both, or none. It returns the
// native policy, if any; the webhook checks run when a webhook configuration
// is found.
func (d *doctor) checkMode(ctx context.Context) *admissionregistrationv1.MutatingAdmissionPolicy {
	const name = "admission-mode"
	m, err := installation.FindNative(ctx, d.c)
	if err != nil {
		d.report.add(cannotRead(name, "mutatingadmissionpolicies", err))
		return nil
	}
	if m == nil {
		return nil
	}
	var v admissionregistrationv1.ValidatingAdmissionPolicy
	vErr := d.c.Get(ctx, client.ObjectKey{Name: m.Name}, &v)
	msg := "native: MutatingAdmissionPolicy " + m.Name + " applies the HAPolicies in the API server; serve only keeps its bindings and the facts it reads"
	switch {
	case vErr != nil && !isNotFound(vErr):
		d.report.add(cannotRead(name, "validatingadmissionpolicies", vErr))
	case vErr != nil:
		d.report.add(Check{Name: name, Status: Warn, Message: msg + "; its companion ValidatingAdmissionPolicy " + m.Name + " is missing: no warnings reach the people who create pods",
			Fix: "helm upgrade the release with admission.mode=native, or apply ha-injector compile's output again"})
	default:
		d.report.add(Check{Name: name, Status: OK, Message: msg})
	}
	return m
}

func isNotFound(err error) bool { return client.IgnoreNotFound(err) == nil }

// checkNativeBindings: every HAPolicy has both bindings, as serve writes them,
// and a status counted for its current generation; no binding is left of a
// policy that is gone; the API server's counts of the policy's evaluations
// show no error.
func (d *doctor) checkNativeBindings(ctx context.Context, m *admissionregistrationv1.MutatingAdmissionPolicy) {
	const name = "native-bindings"
	if d.policies == nil {
		return
	}
	o := native.Options{Name: m.Name}
	var mb admissionregistrationv1.MutatingAdmissionPolicyBindingList
	if err := d.c.List(ctx, &mb); err != nil {
		d.report.add(cannotRead(name, "mutatingadmissionpolicybindings", err))
		return
	}
	var vb admissionregistrationv1.ValidatingAdmissionPolicyBindingList
	if err := d.c.List(ctx, &vb); err != nil {
		d.report.add(cannotRead(name, "validatingadmissionpolicybindings", err))
		return
	}
	mutating := map[string]*admissionregistrationv1.MutatingAdmissionPolicyBinding{}
	for i := range mb.Items {
		if mb.Items[i].Spec.PolicyName == m.Name {
			mutating[mb.Items[i].Name] = &mb.Items[i]
		}
	}
	validating := map[string]*admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	for i := range vb.Items {
		if vb.Items[i].Spec.PolicyName == m.Name {
			validating[vb.Items[i].Name] = &vb.Items[i]
		}
	}
	var fails, warns []string
	names := slices.Sorted(maps.Keys(d.policies))
	for _, p := range names {
		wantM, wantV := native.Bindings(o, p)
		gotM, gotV := mutating[wantM.Name], validating[wantV.Name]
		switch {
		case gotM == nil:
			fails = append(fails, fmt.Sprintf("HAPolicy %s has no MutatingAdmissionPolicyBinding %s: the pods of its namespaces are not injected", p, wantM.Name))
		case !equality.Semantic.DeepEqual(gotM.Spec, wantM.Spec):
			fails = append(fails, fmt.Sprintf("MutatingAdmissionPolicyBinding %s is not as serve writes it (policy, parameters or namespaces changed)", wantM.Name))
		}
		switch {
		case gotV == nil:
			warns = append(warns, fmt.Sprintf("HAPolicy %s has no ValidatingAdmissionPolicyBinding %s: no warnings for its namespaces", p, wantV.Name))
		case slices.Contains(gotV.Spec.ValidationActions, admissionregistrationv1.Deny):
			fails = append(fails, fmt.Sprintf("ValidatingAdmissionPolicyBinding %s denies: pods that should only be warned about are refused", wantV.Name))
		case !equality.Semantic.DeepEqual(gotV.Spec, wantV.Spec):
			fails = append(fails, fmt.Sprintf("ValidatingAdmissionPolicyBinding %s is not as serve writes it", wantV.Name))
		}
		delete(mutating, wantM.Name)
		delete(validating, wantV.Name)
		pol := d.policies[p]
		if pol.Status.ObservedGeneration != pol.Generation || pol.Status.TopologyDomains == nil {
			warns = append(warns, fmt.Sprintf("HAPolicy %s: serve has not counted the topology domains of its current version (status.observedGeneration %d, generation %d): the zone spread is applied even on a cluster of one zone",
				p, pol.Status.ObservedGeneration, pol.Generation))
		}
	}
	for _, b := range slices.Sorted(maps.Keys(mutating)) {
		warns = append(warns, fmt.Sprintf("MutatingAdmissionPolicyBinding %s binds no existing HAPolicy", b))
	}
	metric := d.nativeMetric(ctx, m.Name)
	if metric.errors > 0 {
		fails = append(fails, fmt.Sprintf("the API server counted %d evaluations of %s that failed (%s): those pods were admitted without the injection", metric.errors, m.Name, metric.errorTypes))
	}
	msg := fmt.Sprintf("%d HAPolicies, each bound to %s", len(names), m.Name)
	if metric.read {
		msg += fmt.Sprintf("; the API server evaluated it %d times without an error", metric.ok)
	}
	fix := "serve writes the bindings: kubectl get deploy -A -l app.kubernetes.io/name=ha-injector, then its logs; or apply ha-injector compile --cluster's output"
	switch {
	case len(fails) > 0:
		d.report.add(Check{Name: name, Status: Fail, Message: listed(append(fails, warns...)), Fix: fix})
	case len(warns) > 0:
		d.report.add(Check{Name: name, Status: Warn, Message: listed(warns), Fix: fix})
	default:
		d.report.add(Check{Name: name, Status: OK, Message: msg})
	}
}

// nativeCounts are the API server's counts of a policy's evaluations.
type nativeCounts struct {
	read       bool
	ok, errors int
	errorTypes string
}

// nativeMetric reads the API server's /metrics (which needs get on the
// nonResourceURL /metrics) for the policy's evaluations; read is false when
// it could not.
func (d *doctor) nativeMetric(ctx context.Context, policy string) nativeCounts {
	raw, err := d.cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nativeCounts{}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nativeCounts{}
	}
	out := nativeCounts{read: true}
	byType := map[string]int{}
	if f := families[nativePolicyMetric]; f != nil {
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["policy"] != policy || m.Counter == nil {
				continue
			}
			n := int(m.Counter.GetValue())
			if labels["error_type"] == "no_error" {
				out.ok += n
			} else {
				out.errors += n
				byType[labels["error_type"]] += n
			}
		}
	}
	var types []string
	for _, t := range slices.Sorted(maps.Keys(byType)) {
		types = append(types, fmt.Sprintf("%s: %d", t, byType[t]))
	}
	out.errorTypes = strings.Join(types, ", ")
	return out
}

// checkNativeServe: serve runs in native mode (a Deployment whose container
// runs serve --admission-mode=native --native-policy-name=NAME), with a
// replica available; and, switching from webhook mode, the Deployments that
// the webhook injected are named (doctor --workloads).
func (d *doctor) checkNativeServe(ctx context.Context, m *admissionregistrationv1.MutatingAdmissionPolicy) {
	const name = "native-serve"
	found, err := installation.NativeDeployment(ctx, d.c, m.Name)
	if err != nil {
		d.report.add(cannotRead(name, "deployments", err))
		return
	}
	if found == nil {
		d.report.add(Check{Name: name, Status: Warn, Message: "no Deployment runs serve --admission-mode=native for " + m.Name + ": pods are still injected, but new HAPolicies get no bindings and the zone counts are not kept",
			Fix: "helm upgrade the release with admission.mode=native; a GitOps install applies ha-injector compile's output for each new HAPolicy"})
		return
	}
	msg := fmt.Sprintf("Deployment %s/%s: %d replicas available", found.Namespace, found.Name, found.Status.AvailableReplicas)
	if found.Status.AvailableReplicas == 0 {
		d.report.add(Check{Name: name, Status: Warn, Message: msg + ": pods are still injected by the API server, but bindings and zone counts are not kept up to date",
			Fix: "kubectl -n " + found.Namespace + " describe deploy/" + found.Name + "; kubectl -n " + found.Namespace + " logs deploy/" + found.Name})
		return
	}
	d.report.add(Check{Name: name, Status: OK, Message: msg})
}

// checkWebhookInjected names, in native mode, the Deployments that webhook
// mode injected: their templates carry the injection (their pods match, and
// native mode adds what the policy says on top), which no one takes out or
// converges any more.
func (d *doctor) checkWebhookInjected(ctx context.Context) {
	const name = "webhook-injected"
	var list appsv1.DeploymentList
	if err := d.c.List(ctx, &list, client.MatchingLabels{policies.InjectedLabel: "true"}); err != nil {
		d.report.add(cannotRead(name, "deployments", err))
		return
	}
	var items []string
	for _, dep := range list.Items {
		items = append(items, dep.Namespace+"/"+dep.Name)
	}
	sort.Strings(items)
	if len(items) == 0 {
		d.report.add(Check{Name: name, Status: OK, Message: "no Deployment carries an injection of webhook mode"})
		return
	}
	msg := fmt.Sprintf("%d Deployments carry the injection webhook mode wrote into their templates (native mode leaves them as they are; their pods match)", len(items))
	if d.opts.Workloads {
		msg += ": " + strings.Join(items, ", ")
	} else {
		msg += ": " + listed(items)
	}
	d.report.add(Check{Name: name, Status: Warn, Message: msg,
		Fix: "re-create each template from your own manifest (kubectl replace -f FILE): it starts a rollout whose pods native mode injects; docs/native-mode.md, switching modes"})
}

// hasWebhookConfiguration reports whether a webhook configuration of
// ha-injector is there too (both modes installed at once).
func (d *doctor) hasWebhookConfiguration(ctx context.Context) bool {
	_, err := installation.Find(ctx, d.c, d.opts.ReleaseNamespace)
	return err == nil
}
