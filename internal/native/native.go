// Package native turns native mode's program (policies.CompileNative) into
// the objects the API server runs: a MutatingAdmissionPolicy whose parameters
// are HAPolicies, a companion ValidatingAdmissionPolicy whose Warn action
// gives the warnings the webhook gives, and per HAPolicy one binding of each,
// selecting the namespaces labelled with its name.
package native

import (
	"encoding/json"
	"slices"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Options say what to compile.
type Options struct {
	// Name is the name of both admission policies (the chart's full name);
	// bindings are named after it and the HAPolicy.
	Name string
	// Settings are the installation's (serve's flags in webhook mode).
	Settings policies.NativeSettings
	// ExcludeNamespaces are never mutated, whatever their labels: the system
	// namespaces and ha-injector's own, as the webhook's namespaceSelector.
	ExcludeNamespaces []string
}

// ManagedByLabel marks the bindings ha-injector writes, so that serve finds
// the ones whose HAPolicy is gone.
const ManagedByLabel = "ha-injector.io/binding-of"

// DefaultExcludeNamespaces are the system namespaces no mode ever mutates.
var DefaultExcludeNamespaces = []string{"kube-system", "kube-node-lease", "kube-public"}

// MutatingPolicy is native mode's MutatingAdmissionPolicy.
func MutatingPolicy(o Options) *admissionregistrationv1.MutatingAdmissionPolicy {
	p := policies.CompileNative(o.Settings)
	return &admissionregistrationv1.MutatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "MutatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Annotations: map[string]string{SettingsAnnotation: SettingsJSON(o.Settings)}},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			ParamKind:        paramKind(),
			MatchConstraints: matchConstraints(o),
			Variables:        variables(p.Variables),
			MatchConditions:  matchConditions(p.MatchConditions),
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: p.Patch},
			}},
			// A pod is never refused for ha-injector's sake: an expression that
			// fails leaves it as it came, as the webhook's failurePolicy Ignore.
			FailurePolicy: ptr.To(admissionregistrationv1.Ignore),
			// Mutating again changes nothing, so running again after a later
			// mutation keeps the result right. It is not free: the API server
			// re-runs an invoked policy once a mutation changed the object, its
			// own included, so each injected pod costs two evaluations (make
			// bench counts them).
			ReinvocationPolicy: admissionregistrationv1.IfNeededReinvocationPolicy,
		},
	}
}

// SettingsAnnotation, on the MutatingAdmissionPolicy, holds the installation's
// settings compiled into it (SettingsJSON), so that `preview --cluster` and
// `doctor` read them back instead of parsing CEL.
const SettingsAnnotation = "ha-injector.io/native-settings"

// SettingsJSON is the value of SettingsAnnotation for settings s.
func SettingsJSON(s policies.NativeSettings) string {
	b, _ := json.Marshal(s) // strings only: it cannot fail
	return string(b)
}

// SettingsOf reads back the settings compiled into m; ok is false when m
// carries no SettingsAnnotation or it does not decode.
func SettingsOf(m *admissionregistrationv1.MutatingAdmissionPolicy) (s policies.NativeSettings, ok bool) {
	raw, found := m.Annotations[SettingsAnnotation]
	if !found || json.Unmarshal([]byte(raw), &s) != nil {
		return policies.NativeSettings{}, false
	}
	return s, true
}

// ValidatingPolicy is native mode's companion ValidatingAdmissionPolicy: it
// denies nothing; its bindings' Warn action turns the program's warnings into
// the admission warnings kubectl prints, for the pods a person creates (a
// controller's pods get none, as from the webhook).
func ValidatingPolicy(o Options) *admissionregistrationv1.ValidatingAdmissionPolicy {
	p := policies.CompileNative(o.Settings)
	conditions := append(matchConditions(p.MatchConditions), admissionregistrationv1.MatchCondition{
		Name:       "made-by-a-person",
		Expression: `!object.metadata.?ownerReferences.orValue([]).exists(r, r.?controller.orValue(false))`,
	})
	validations := make([]admissionregistrationv1.Validation, len(p.Warnings))
	for i, w := range p.Warnings {
		validations[i] = admissionregistrationv1.Validation{
			Expression:        "!(" + w.Condition + ")",
			MessageExpression: "'ha-injector: ' + " + w.Message,
		}
	}
	return &admissionregistrationv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: o.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			ParamKind:        paramKind(),
			MatchConstraints: matchConstraints(o),
			Variables:        variables(p.Variables),
			MatchConditions:  conditions,
			Validations:      validations,
			FailurePolicy:    ptr.To(admissionregistrationv1.Ignore),
		},
	}
}

// BindingName is the name of both bindings of an HAPolicy.
func BindingName(o Options, policy string) string { return o.Name + "-" + policy }

// Bindings are the bindings of the HAPolicy named policy: the namespaces
// labelled ha-injector.io/policy=policy, with the HAPolicy as the parameters.
// A missing HAPolicy leaves pods alone, as the webhook does.
func Bindings(o Options, policy string) (*admissionregistrationv1.MutatingAdmissionPolicyBinding, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	meta := metav1.ObjectMeta{Name: BindingName(o, policy), Labels: map[string]string{ManagedByLabel: policy}}
	// As the API server stores it (its defaults written out), so that a stored binding
	// compares equal to the one serve would write and is not rewritten on every pass.
	resources := &admissionregistrationv1.MatchResources{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{policies.PolicyLabel: policy}},
		ObjectSelector:    &metav1.LabelSelector{},
		MatchPolicy:       ptr.To(admissionregistrationv1.Equivalent),
	}
	ref := &admissionregistrationv1.ParamRef{Name: policy, ParameterNotFoundAction: ptr.To(admissionregistrationv1.AllowAction)}
	m := &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "MutatingAdmissionPolicyBinding"},
		ObjectMeta: meta,
		Spec:       admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{PolicyName: o.Name, ParamRef: ref, MatchResources: resources},
	}
	v := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: *meta.DeepCopy(),
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName: o.Name, ParamRef: ref.DeepCopy(), MatchResources: resources.DeepCopy(),
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Warn, admissionregistrationv1.Audit},
		},
	}
	return m, v
}

func paramKind() *admissionregistrationv1.ParamKind {
	return &admissionregistrationv1.ParamKind{APIVersion: v1alpha1.GroupVersion.String(), Kind: "HAPolicy"}
}

// matchConstraints: Pod CREATE, in namespaces that opt in, never the excluded ones.
func matchConstraints(o Options) *admissionregistrationv1.MatchResources {
	exclude := slices.Clone(o.ExcludeNamespaces)
	for _, ns := range DefaultExcludeNamespaces {
		if !slices.Contains(exclude, ns) {
			exclude = append(exclude, ns)
		}
	}
	return &admissionregistrationv1.MatchResources{
		NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: policies.PolicyLabel, Operator: metav1.LabelSelectorOpExists},
			{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: exclude},
		}},
		ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
			RuleWithOperations: admissionregistrationv1.RuleWithOperations{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
					Scope: ptr.To(admissionregistrationv1.NamespacedScope),
				},
			},
		}},
		MatchPolicy: ptr.To(admissionregistrationv1.Equivalent),
	}
}

func variables(list []policies.NativeExpression) []admissionregistrationv1.Variable {
	out := make([]admissionregistrationv1.Variable, len(list))
	for i, v := range list {
		out[i] = admissionregistrationv1.Variable{Name: v.Name, Expression: v.Expression}
	}
	return out
}

func matchConditions(list []policies.NativeExpression) []admissionregistrationv1.MatchCondition {
	out := make([]admissionregistrationv1.MatchCondition, len(list))
	for i, c := range list {
		out[i] = admissionregistrationv1.MatchCondition{Name: c.Name, Expression: c.Expression}
	}
	return out
}

// ManagedBySelector selects the bindings ha-injector writes.
func ManagedBySelector() labels.Selector {
	s, _ := labels.Parse(ManagedByLabel)
	return s
}

// Objects are what native mode installs for the HAPolicies named, in the
// order to apply them: both admission policies, then each HAPolicy's two
// bindings.
func Objects(o Options, policyNames []string) []client.Object {
	out := []client.Object{MutatingPolicy(o), ValidatingPolicy(o)}
	for _, name := range policyNames {
		m, v := Bindings(o, name)
		out = append(out, m, v)
	}
	return out
}
