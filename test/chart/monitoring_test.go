package chart

import (
	"regexp"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestNetworkPolicyIsOptIn(t *testing.T) {
	r, err := render(t, ``)
	require.NoError(t, err)
	assert.Empty(t, r.Find("NetworkPolicy"), "off by default: it needs a network plugin that enforces it")

	r, err = render(t, `{networkPolicy: {enabled: true, apiServer: {cidrs: [10.0.0.1/32]}}}`)
	require.NoError(t, err)
	in := decode(t, r)
	np := typed[networkingv1.NetworkPolicy](t, r.Get("NetworkPolicy", release))
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	require.NoError(t, err)
	assert.True(t, sel.Matches(labels.Set(in.deployment.Spec.Template.Labels)), "it selects the webhook pods")
	assert.ElementsMatch(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, np.Spec.PolicyTypes)

	// Which port is open to whom.
	openTo := map[int32][]networkingv1.NetworkPolicyPeer{}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			assert.Equal(t, corev1.ProtocolTCP, *p.Protocol)
			openTo[p.Port.IntVal] = rule.From
		}
	}
	require.Len(t, openTo, 3, "the webhook, health and metrics ports, nothing else")
	assert.Empty(t, openTo[in.containerPort("https")], "the webhook port from anywhere: the API server's address is unknown")
	assert.Empty(t, openTo[in.containerPort("healthz")], "the kubelet's probes")
	metrics := openTo[in.containerPort("metrics")]
	require.Len(t, metrics, 1)
	nsSel, err := metav1.LabelSelectorAsSelector(metrics[0].NamespaceSelector)
	require.NoError(t, err)
	assert.True(t, nsSel.Matches(labels.Set{corev1.LabelMetadataName: "monitoring"}))
	assert.False(t, nsSel.Matches(labels.Set{corev1.LabelMetadataName: "team-a"}), "metrics only from the monitoring namespace")

	require.Len(t, np.Spec.Egress, 1, "egress only to the API server")
	var ports []intstr.IntOrString
	for _, p := range np.Spec.Egress[0].Ports {
		ports = append(ports, *p.Port)
	}
	assert.Equal(t, []intstr.IntOrString{intstr.FromInt32(443), intstr.FromInt32(6443)}, ports)
	require.Len(t, np.Spec.Egress[0].To, 1)
	assert.Equal(t, "10.0.0.1/32", np.Spec.Egress[0].To[0].IPBlock.CIDR)
}

func TestPrometheusRuleIsOptIn(t *testing.T) {
	r, err := render(t, ``)
	require.NoError(t, err)
	assert.Empty(t, r.Find("PrometheusRule"))

	r, err = render(t, `{prometheusRule: {enabled: true, labels: {release: prometheus}}, webhook: {timeoutSeconds: 10}}`)
	require.NoError(t, err)
	// Decoded strictly with the Prometheus Operator's own types: no misspelt field.
	rule := typed[monitoringv1.PrometheusRule](t, r.Get("PrometheusRule", release))
	assert.Equal(t, "prometheus", rule.Labels["release"])
	require.Len(t, rule.Spec.Groups, 1)
	alerts := map[string]monitoringv1.Rule{}
	for _, a := range rule.Spec.Groups[0].Rules {
		alerts[a.Alert] = a
		assert.NotEmpty(t, a.Labels["severity"], a.Alert)
		assert.NotEmpty(t, a.Annotations["summary"], a.Alert)
		assert.NotEmpty(t, a.Annotations["description"], a.Alert)
		assert.Equal(t, strings.Count(a.Expr.StrVal, "("), strings.Count(a.Expr.StrVal, ")"), "balanced parentheses: %s", a.Expr.StrVal)
		assert.Equal(t, strings.Count(a.Expr.StrVal, "{"), strings.Count(a.Expr.StrVal, "}"), "balanced braces: %s", a.Expr.StrVal)
	}
	require.ElementsMatch(t, []string{"HAInjectorWebhookFailOpen", "HAInjectorAdmittedWithoutInjection", "HAInjectorWebhookSlow", "HAInjectorMetricsNotScraped", "HAInjectorNoReadyReplica"}, keys(alerts))

	failOpen := alerts["HAInjectorWebhookFailOpen"].Expr.StrVal
	assert.Contains(t, failOpen, "apiserver_admission_webhook_fail_open_count{")
	// Every webhook of the chart, and no other, is selected by the alerts on the API
	// server's metrics (PromQL regular expressions are anchored).
	names := nameMatcher(t, failOpen)
	in := decode(t, r)
	for _, h := range in.webhooks.Webhooks {
		assert.True(t, names.MatchString(h.Name), "%s is watched", h.Name)
	}
	assert.False(t, names.MatchString("pods.other.io"))
	assert.False(t, names.MatchString("podsXha-injectorXio"), "the dots are literal")

	slow := alerts["HAInjectorWebhookSlow"].Expr.StrVal
	assert.Contains(t, slow, `type="admit", le="2.5"}`)
	assert.True(t, strings.HasSuffix(slow, "> 0.01"), slow)
	assert.Equal(t, nameMatcher(t, slow).String(), names.String())
	assert.Contains(t, alerts["HAInjectorWebhookSlow"].Annotations["summary"], "timeout 10 s")

	// Either counter may have no series yet (they appear at their first increment): each
	// side falls back to 0, so one alone fires.
	own := alerts["HAInjectorAdmittedWithoutInjection"].Expr.StrVal
	for _, metric := range []string{`ha_injector_admissions_total{namespace="ha-injector", outcome="error"}`, `ha_injector_large_requests_shed_total{namespace="ha-injector"}`} {
		assert.Contains(t, own, "(sum(increase("+metric+"[10m])) or vector(0))")
	}
	assert.Contains(t, alerts["HAInjectorMetricsNotScraped"].Expr.StrVal, `up{namespace="ha-injector", service="ha-injector"} == 0`)
	assert.Contains(t, alerts["HAInjectorNoReadyReplica"].Expr.StrVal, `kube_deployment_status_replicas_available{namespace="ha-injector", deployment="ha-injector"}`)
}

// nameMatcher compiles the name=~"..." matcher of a PromQL expression as Prometheus
// does: anchored at both ends, with PromQL's string escapes undone.
func nameMatcher(t testing.TB, expr string) *regexp.Regexp {
	t.Helper()
	m := regexp.MustCompile(`name=~"((?:[^"\\]|\\.)*)"`).FindStringSubmatch(expr)
	require.NotNil(t, m, "no name=~ matcher in %s", expr)
	return regexp.MustCompile("^(?:" + strings.ReplaceAll(m[1], `\\`, `\`) + ")$")
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
