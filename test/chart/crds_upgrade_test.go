package chart

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ha-injector/ha-injector/test/harness/chartrender"
)

// TestCRDUpgradeHook: Helm never updates what crds/ holds, so the chart applies it itself
// before each install and upgrade, with a ServiceAccount that may touch that CRD only.
// cmd/ha-injector's TestCRDsApplyUpgradesTheCRDAsTheHooksServiceAccount runs the command
// as that ServiceAccount against a real API server.
func TestCRDUpgradeHook(t *testing.T) {
	r, err := render(t, ``)
	require.NoError(t, err)
	in := decode(t, r)
	var kinds []string
	for _, h := range r.Hooks {
		kinds = append(kinds, h.Object.GetKind())
		annotations := h.Object.GetAnnotations()
		assert.Equal(t, "pre-install,pre-upgrade", annotations["helm.sh/hook"], h.Object.GetKind())
		// helm uninstall never deletes a hook's objects: a failed hook's would outlive
		// the release (TestHelmInstallWithAnUnpullableImage runs it).
		assert.Equal(t, "before-hook-creation,hook-succeeded,hook-failed", annotations["helm.sh/hook-delete-policy"], "%s: nothing is left behind, whether the hook succeeded or failed", h.Object.GetKind())
	}
	assert.Equal(t, []string{"ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Job"}, kinds, "the Job runs last (hook weight), after what it needs (Helm's install order)")

	// The ConfigMap carries the chart's crds/ file as it is.
	crd, err := os.ReadFile(filepath.Join(repoRoot, chartrender.ChartDir, "crds", "ha-injector.io_hapolicies.yaml"))
	require.NoError(t, err)
	cm := typed[corev1.ConfigMap](t, hook(t, r, "ConfigMap"))
	assert.Equal(t, strings.TrimSpace(string(crd)), strings.TrimSpace(cm.Data["hapolicies.yaml"]))

	role := typed[rbacv1.ClusterRole](t, hook(t, r, "ClusterRole"))
	assert.Equal(t, []rbacv1.PolicyRule{{
		APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"},
		ResourceNames: []string{"hapolicies.ha-injector.io"}, Verbs: []string{"get", "patch"},
	}}, role.Rules, "that one CRD, nothing else")
	binding := typed[rbacv1.ClusterRoleBinding](t, hook(t, r, "ClusterRoleBinding"))
	sa := hook(t, r, "ServiceAccount")
	assert.Equal(t, role.Name, binding.RoleRef.Name)
	require.Len(t, binding.Subjects, 1)
	assert.Equal(t, sa.GetName(), binding.Subjects[0].Name)
	assert.Equal(t, namespace, binding.Subjects[0].Namespace)

	job := typed[batchv1.Job](t, hook(t, r, "Job"))
	podLabels := labels.Set(job.Spec.Template.Labels)
	assert.False(t, labels.SelectorFromSet(in.service.Spec.Selector).Matches(podLabels), "the webhook's Service does not send admissions to the Job's pod")
	assert.False(t, labels.SelectorFromSet(in.deployment.Spec.Selector.MatchLabels).Matches(podLabels), "nor does anything select it as a webhook replica (PDB, NetworkPolicy)")
	assert.Empty(t, podLabels["ha-injector.io/component"], "doctor does not take it for the webhook")
	spec := job.Spec.Template.Spec
	assert.Equal(t, sa.GetName(), spec.ServiceAccountName)
	assert.Equal(t, corev1.RestartPolicyNever, spec.RestartPolicy)
	require.Len(t, spec.Containers, 1)
	c := spec.Containers[0]
	assert.Equal(t, in.container.Image, c.Image, "the chart's own image")
	require.Len(t, c.VolumeMounts, 1)
	assert.Equal(t, []string{"crds", "apply", "-f", c.VolumeMounts[0].MountPath + "/hapolicies.yaml"}, c.Args)
	require.Len(t, spec.Volumes, 1)
	assert.Equal(t, cm.Name, spec.Volumes[0].ConfigMap.Name)
	assert.True(t, *spec.SecurityContext.RunAsNonRoot)
	assert.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	assert.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	assert.Equal(t, corev1.TerminationMessageFallbackToLogsOnError, c.TerminationMessagePolicy, "a failed apply's error is in the pod's status, where doctor reads it")
	assert.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)

	r, err = render(t, `crds: {upgrade: false}`)
	require.NoError(t, err)
	assert.Empty(t, r.Hooks, "crds.upgrade=false: no hook at all")
}

func hook(t *testing.T, r *chartrender.Result, kind string) *unstructured.Unstructured {
	t.Helper()
	for _, h := range r.Hooks {
		if h.Object.GetKind() == kind {
			return h.Object
		}
	}
	t.Fatalf("no %s hook", kind)
	return nil
}

// TestUpgradeWithReusedValuesOfAnOlderRelease renders the chart as `helm upgrade
// --reuse-values` does from a release that predates the newer values: with the old
// release's values in place of values.yaml, which lack them. Every template must read
// them with their defaults: the CRD hook runs, metrics are secure with the RBAC they need.
func TestUpgradeWithReusedValuesOfAnOlderRelease(t *testing.T) {
	chart, err := chartrender.Load(repoRoot)
	require.NoError(t, err)
	old := maps.Clone(chart.Values)
	for _, added := range []string{"crds", "networkPolicy", "prometheusRule"} {
		delete(old, added)
	}
	metrics := maps.Clone(old["metrics"].(map[string]any))
	delete(metrics, "secure")
	old["metrics"] = metrics
	chart.Values = old

	r, err := chartrender.Render(chart, nil, chartrender.Options{})
	require.NoError(t, err)
	in := decode(t, r)
	assert.Equal(t, "true", in.flag("metrics-secure"))
	assert.NotNil(t, r.Get("ClusterRole", release+"-metrics-reader"), "the RBAC secure metrics need")
	assert.NotEmpty(t, r.Hooks, "the CRD hook runs")
	assert.Empty(t, r.Find("NetworkPolicy"))
	assert.Empty(t, r.Find("PrometheusRule"))
}
