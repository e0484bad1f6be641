package doctor_test

import (
	"bufio"
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

// TestAlertsSelectTheAPIServersFailOpenSeries stops the webhook, lets the API server fail
// open on a pod, and reads the API server's own /metrics: the series the chart's
// PrometheusRule alerts on exist under the names and labels its expressions select.
func TestAlertsSelectTheAPIServersFailOpenSeries(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	alerts := renderedAlerts(t)

	f.stopWebhook(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", GenerateName: "fail-open-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	require.NoError(t, f.c.Create(ctx, pod, client.DryRunAll), "failurePolicy Ignore admits it")

	cs, err := kubernetes.NewForConfig(f.cfg)
	require.NoError(t, err)
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	require.NoError(t, err)

	for alert, wantValue := range map[string]bool{"HAInjectorWebhookFailOpen": true, "HAInjectorWebhookSlow": false} {
		expr := alerts[alert]
		metric := regexp.MustCompile(`(apiserver_[a-z_]+)\{`).FindStringSubmatch(expr)
		require.NotNil(t, metric, "%s: no API server metric in %s", alert, expr)
		names := regexp.MustCompile(`name=~"((?:[^"\\]|\\.)*)"`).FindStringSubmatch(expr)
		require.NotNil(t, names, expr)
		nameRE := regexp.MustCompile("^(?:" + strings.ReplaceAll(names[1], `\\`, `\`) + ")$")

		found := false
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, metric[1]+"{") || !strings.Contains(line, `type="admit"`) {
				continue
			}
			name := regexp.MustCompile(`name="([^"]*)"`).FindStringSubmatch(line)
			if name != nil && name[1] == "pods.ha-injector.io" {
				assert.True(t, nameRE.MatchString(name[1]), "%s selects %s", alert, name[1])
				if wantValue {
					assert.False(t, strings.HasSuffix(line, " 0"), "the fail-open was counted: %s", line)
				}
				found = true
			}
		}
		assert.True(t, found, "%s: the API server has a %s series for pods.ha-injector.io with type=\"admit\"", alert, metric[1])
	}
	// The slow-call alert reads the 2.5 s bucket: the API server's histogram has it.
	assert.Contains(t, alerts["HAInjectorWebhookSlow"], `le="2.5"`)
	assert.Regexp(t, `(?m)^apiserver_admission_webhook_admission_duration_seconds_bucket\{[^}]*name="pods.ha-injector.io"[^}]*type="admit"[^}]*le="2.5"\}`, string(raw))
}

// renderedAlerts are the expressions of the chart's PrometheusRule, by alert.
func renderedAlerts(t *testing.T) map[string]string {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	chart, err := chartrender.Load(root)
	require.NoError(t, err)
	r, err := chartrender.Render(chart, map[string]any{"prometheusRule": map[string]any{"enabled": true}}, chartrender.Options{})
	require.NoError(t, err)
	objs := r.Find("PrometheusRule")
	require.Len(t, objs, 1)
	var rule monitoringv1.PrometheusRule
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(objs[0].Object, &rule, true))
	out := map[string]string{}
	for _, g := range rule.Spec.Groups {
		for _, a := range g.Rules {
			out[a.Alert] = a.Expr.StrVal
		}
	}
	return out
}
