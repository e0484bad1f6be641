package chart

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ha-injector/ha-injector/test/harness/chartrender"
)

// selfManaged are the values that turn on certs.mode=selfManaged.
const selfManaged = `{certManager: {enabled: false}, certs: {mode: selfManaged}}`

// webhookCAPolicy is the ValidatingAdmissionPolicy of a render that guards the webhook
// configuration, and its binding, decoded; it fails the test unless there is exactly one
// of each (the other validating policy a render has warns about HAPolicies).
func webhookCAPolicy(t *testing.T, r *chartrender.Result) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	t.Helper()
	policies := withSuffix(r.Find("ValidatingAdmissionPolicy"), "-webhook-ca")
	bindings := withSuffix(r.Find("ValidatingAdmissionPolicyBinding"), "-webhook-ca")
	require.Len(t, policies, 1)
	require.Len(t, bindings, 1)
	return typed[admissionregistrationv1.ValidatingAdmissionPolicy](t, policies[0]),
		typed[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, bindings[0])
}

// withSuffix are the objects whose name ends in suffix.
func withSuffix(objs []*unstructured.Unstructured, suffix string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if strings.HasSuffix(o.GetName(), suffix) {
			out = append(out, o)
		}
	}
	return out
}

// TestChartVapOnlyInSelfManagedMode: the policy guards the `update` the selfManaged
// mode grants; where the chart grants none (cert-manager's cainjector or the user
// writes the caBundle), it renders no policy.
func TestChartVapOnlyInSelfManagedMode(t *testing.T) {
	for _, values := range []string{
		``,
		`{certManager: {issuerRef: {name: corp-ca, kind: ClusterIssuer}}}`,
		`{certManager: {enabled: false}, certs: {mode: provided, provided: {secretName: s, caBundle: ` + caBundle + `}}}`,
	} {
		t.Run(values, func(t *testing.T) {
			r, err := render(t, values)
			require.NoError(t, err)
			assert.Empty(t, withSuffix(r.Find("ValidatingAdmissionPolicy"), "-webhook-ca"))
			assert.Empty(t, withSuffix(r.Find("ValidatingAdmissionPolicyBinding"), "-webhook-ca"))
			assert.Nil(t, r.Get("ClusterRole", release+"-webhook-ca"), "no write access to the webhook configuration to guard")
		})
	}
	t.Run(selfManaged, func(t *testing.T) {
		r, err := render(t, selfManaged)
		require.NoError(t, err)
		webhookCAPolicy(t, r)
	})
}

// TestChartVapGuardsTheReleaseServiceAccountAndWebhookConfiguration checks, for each way
// of naming things, that the policy applies to the requests of the ServiceAccount the
// chart's bindings name (and only to them), on the webhook configuration the chart
// renders (and only on it), denies rather than warns, and fails closed.
func TestChartVapGuardsTheReleaseServiceAccountAndWebhookConfiguration(t *testing.T) {
	cases := []struct {
		name, release, namespace, values string
		// wantSA is the ServiceAccount's name; the rendered one when empty.
		wantSA string
	}{
		{name: "the defaults", release: release, namespace: namespace},
		{name: "another release and namespace", release: "webhooks", namespace: "platform"},
		{name: "a fullnameOverride", release: release, namespace: namespace, values: `{fullnameOverride: injector}`},
		{name: "a ServiceAccount name", release: release, namespace: namespace, values: `{serviceAccount: {name: ha-sa}}`},
		{name: "a ServiceAccount of the user's", release: release, namespace: namespace, values: `{serviceAccount: {create: false, name: theirs}}`, wantSA: "theirs"},
	}
	c, err := chartrender.Load(repoRoot)
	require.NoError(t, err)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			values := parseValues(t, selfManaged)
			for k, v := range parseValues(t, tc.values) {
				values[k] = v
			}
			r, err := chartrender.Render(c, values, chartrender.Options{ReleaseName: tc.release, Namespace: tc.namespace})
			require.NoError(t, err)
			policy, binding := webhookCAPolicy(t, r)
			hooks := r.Find("MutatingWebhookConfiguration")
			require.Len(t, hooks, 1)
			sa := tc.wantSA
			if sa == "" {
				accounts := r.Find("ServiceAccount")
				require.Len(t, accounts, 1)
				sa = typed[corev1.ServiceAccount](t, accounts[0]).Name
			}
			user := "system:serviceaccount:" + tc.namespace + ":" + sa
			grant := r.Get("ClusterRoleBinding", hooks[0].GetName()+"-webhook-ca")
			require.NotNil(t, grant, "the binding of the update the policy guards")
			subjects, _, err := unstructured.NestedSlice(grant.Object, "subjects")
			require.NoError(t, err)
			assert.Equal(t, []any{map[string]any{"kind": "ServiceAccount", "name": sa, "namespace": tc.namespace}}, subjects, "the policy's user is the one RBAC grants the update to")

			assert.Equal(t, hooks[0].GetLabels(), policy.Labels, "the chart's labels")
			assert.Equal(t, hooks[0].GetLabels(), binding.Labels)
			assert.Equal(t, hooks[0].GetName()+"-webhook-ca", policy.Name)
			require.Len(t, policy.Spec.MatchConditions, 1)
			assert.Equal(t, "request.userInfo.username == '"+user+"'", policy.Spec.MatchConditions[0].Expression)
			require.NotNil(t, policy.Spec.MatchConstraints)
			assert.Equal(t, []admissionregistrationv1.NamedRuleWithOperations{{
				ResourceNames: []string{hooks[0].GetName()},
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update, admissionregistrationv1.Delete},
					Rule: admissionregistrationv1.Rule{
						APIGroups:   []string{admissionregistrationv1.GroupName},
						APIVersions: []string{"v1"},
						Resources:   []string{"mutatingwebhookconfigurations"},
					},
				},
			}}, policy.Spec.MatchConstraints.ResourceRules)
			assert.Nil(t, policy.Spec.ParamKind)
			assert.Equal(t, ptr(admissionregistrationv1.Fail), policy.Spec.FailurePolicy)
			var messages []string
			for _, v := range policy.Spec.Validations {
				messages = append(messages, v.Message)
			}
			assert.Contains(t, messages, "ha-injector's ServiceAccount may change only the caBundle of its webhook configuration")
			assert.Contains(t, messages, "ha-injector's ServiceAccount may not delete its webhook configuration")

			assert.Equal(t, policy.Name, binding.Name)
			assert.Equal(t, policy.Name, binding.Spec.PolicyName)
			assert.Equal(t, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}, binding.Spec.ValidationActions)
			assert.Nil(t, binding.Spec.MatchResources, "the policy's constraints are the scope")
			assert.Nil(t, binding.Spec.ParamRef)
		})
	}
}

// TestChartVapComparesEveryWebhookField keeps the policy's list of fields in step with
// k8s.io/api: a field the policy does not name is a field the ServiceAccount could
// change, so a new one in MutatingWebhook or WebhookClientConfig fails here until it
// is added to templates/validatingadmissionpolicy.yaml. Only the caBundle goes unnamed.
func TestChartVapComparesEveryWebhookField(t *testing.T) {
	r, err := render(t, selfManaged)
	require.NoError(t, err)
	policy, _ := webhookCAPolicy(t, r)
	var all strings.Builder
	for _, v := range policy.Spec.Validations {
		all.WriteString(v.Expression + "\n")
	}
	expr := all.String()
	assert.NotContains(t, expr, "caBundle", "the one field the ServiceAccount may change")
	assert.Contains(t, expr, "object.?webhooks.orValue([]).map(w, w.name) == oldObject.?webhooks.orValue([]).map(o, o.name)", "the same webhooks in the same order")

	hookFields := jsonFields(reflect.TypeFor[admissionregistrationv1.MutatingWebhook]())
	require.Contains(t, hookFields, "namespaceSelector", "the reflection reads the JSON names")
	for _, f := range hookFields {
		switch f {
		case "name": // compared as the list of names above
		case "clientConfig":
			for _, cf := range jsonFields(reflect.TypeFor[admissionregistrationv1.WebhookClientConfig]()) {
				if cf == "caBundle" {
					continue
				}
				assert.Contains(t, expr, "w.?clientConfig.?"+cf+" == o.?clientConfig.?"+cf, "clientConfig.%s", cf)
			}
		default:
			if !strings.Contains(expr, "w.?"+f+" == o.?"+f) {
				assert.Contains(t, expr, "w.?"+f+".orValue([]) == o.?"+f+".orValue([])", f)
			}
		}
	}
	for _, f := range []string{"labels", "annotations"} {
		assert.Contains(t, expr, "object.metadata.?"+f+".orValue({}) == oldObject.metadata.?"+f+".orValue({})")
	}
	for _, f := range []string{"finalizers", "ownerReferences"} {
		assert.Contains(t, expr, "object.metadata.?"+f+".orValue([]) == oldObject.metadata.?"+f+".orValue([])")
	}
}

// jsonFields returns the JSON names of a struct's fields.
func jsonFields(typ reflect.Type) []string {
	var names []string
	for i := range typ.NumField() {
		if name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}
