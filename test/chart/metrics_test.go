package chart

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// onlyAsksTheAPIServer is a rule that only creates TokenReviews and SubjectAccessReviews:
// questions to the API server (who is this token, may they get /metrics) that store
// nothing, which the secure metrics need.
func onlyAsksTheAPIServer(rule rbacv1.PolicyRule) bool {
	groups := []string{"authentication.k8s.io", "authorization.k8s.io"}
	resources := []string{"tokenreviews", "subjectaccessreviews"}
	return len(rule.APIGroups) > 0 && len(rule.Resources) > 0 && len(rule.NonResourceURLs) == 0 &&
		slices.Equal(rule.Verbs, []string{"create"}) &&
		!slices.ContainsFunc(rule.APIGroups, func(g string) bool { return !slices.Contains(groups, g) }) &&
		!slices.ContainsFunc(rule.Resources, func(r string) bool { return !slices.Contains(resources, r) })
}

func TestMetricsAreSecureByDefault(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values string
		secure bool
	}{
		{"by default: HTTPS, a token allowed to get /metrics, the RBAC for both sides", `metrics: {serviceMonitor: {enabled: true}}`, true},
		{"secure false: plain HTTP and no RBAC for it", `metrics: {secure: false, serviceMonitor: {enabled: true}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := render(t, tc.values)
			require.NoError(t, err)
			in := decode(t, r)
			assert.Equal(t, []string{map[bool]string{true: "true", false: "false"}[tc.secure]}, in.flags["metrics-secure"])

			sm := r.Get("ServiceMonitor", release)
			require.NotNil(t, sm)
			endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			require.Len(t, endpoints, 1)
			endpoint := endpoints[0].(map[string]any)
			assert.Equal(t, "metrics", endpoint["port"])
			auth := r.Get("ClusterRole", release+"-metrics-auth")
			reader := r.Get("ClusterRole", release+"-metrics-reader")
			if !tc.secure {
				assert.NotContains(t, endpoint, "scheme")
				assert.NotContains(t, endpoint, "bearerTokenFile")
				assert.NotContains(t, endpoint, "tlsConfig")
				assert.Nil(t, auth)
				assert.Nil(t, reader)
				assert.Nil(t, r.Get("ClusterRoleBinding", release+"-metrics-auth"))
				return
			}
			assert.Equal(t, "https", endpoint["scheme"])
			assert.Equal(t, "/var/run/secrets/kubernetes.io/serviceaccount/token", endpoint["bearerTokenFile"], "Prometheus's own ServiceAccount token")
			assert.Equal(t, map[string]any{"insecureSkipVerify": true}, endpoint["tlsConfig"], "the metrics certificate is self-signed")

			assert.ElementsMatch(t, []rbacv1.PolicyRule{
				{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
				{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
			}, typed[rbacv1.ClusterRole](t, auth).Rules)
			binding := typed[rbacv1.ClusterRoleBinding](t, r.Get("ClusterRoleBinding", release+"-metrics-auth"))
			assert.Equal(t, auth.GetName(), binding.RoleRef.Name)
			assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: in.deployment.Spec.Template.Spec.ServiceAccountName, Namespace: namespace}}, binding.Subjects)

			assert.Equal(t, []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}, typed[rbacv1.ClusterRole](t, reader).Rules)
			for _, u := range r.Find("ClusterRoleBinding") {
				assert.NotEqual(t, reader.GetName(), typed[rbacv1.ClusterRoleBinding](t, u).RoleRef.Name, "the chart binds metrics-reader to nobody: the user binds it to Prometheus")
			}
		})
	}
}
