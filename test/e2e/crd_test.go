package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

// TestHAPolicyThroughTheAPIServer checks the installed CRD as users meet it:
// an empty spec is defaulted by the server exactly as Default does, invalid
// policies are refused with the field named, `kubectl get hap` shows the mode,
// the anti-affinity type, the two toleration seconds and the sysctl method of each
// policy (not whether each feature is on), and the published OpenAPI schema carries
// the field documentation `kubectl explain` shows.
func TestHAPolicyThroughTheAPIServer(t *testing.T) {
	cfg := testenv.Start(t)
	ctx := context.Background()
	c, err := client.New(cfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)

	p := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "crd-defaults"}}
	require.NoError(t, c.Create(ctx, p))
	t.Cleanup(func() { _ = c.Delete(ctx, p) })
	want := v1alpha1.NewDefault()
	assert.Equal(t, want.Spec, p.Spec, "server-side defaults equal the Go defaults")

	invalid := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "crd-invalid"}}
	invalid.Spec.Sysctls.Values = map[string]v1alpha1.SysctlValue{"net.ipv4.TCP": "1; reboot"}
	err = c.Create(ctx, invalid)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.sysctls.values")

	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	custom := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "crd-columns"}, Spec: v1alpha1.HAPolicySpec{
		Mode:         v1alpha1.ModeAudit,
		AntiAffinity: v1alpha1.AntiAffinitySpec{Type: v1alpha1.AntiAffinityRequired},
		Tolerations:  v1alpha1.TolerationsSpec{NotReadySeconds: ptr.To[int64](45), UnreachableSeconds: ptr.To[int64](20)},
		Sysctls:      v1alpha1.SysctlsSpec{Method: v1alpha1.SysctlInitContainer},
	}}
	require.NoError(t, c.Create(ctx, custom))
	t.Cleanup(func() { _ = c.Delete(ctx, custom) })
	// What `kubectl get hapolicies` prints without -o wide: the columns of priority 0,
	// with the values of each policy (JSON numbers decode as float64).
	for name, want := range map[string]map[string]any{
		"crd-defaults": {"Name": "crd-defaults", "Mode": "Enforce", "Anti-Affinity": "Preferred", "Not-Ready-Seconds": float64(60), "Unreachable-Seconds": float64(30), "Sysctl-Method": nil},
		"crd-columns":  {"Name": "crd-columns", "Mode": "Audit", "Anti-Affinity": "Required", "Not-Ready-Seconds": float64(45), "Unreachable-Seconds": float64(20), "Sysctl-Method": "InitContainer"},
	} {
		raw, err := cs.RESTClient().Get().AbsPath("/apis/ha-injector.io/v1alpha1/hapolicies", name).
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		require.NoError(t, err)
		var table metav1.Table
		require.NoError(t, json.Unmarshal(raw, &table))
		require.Len(t, table.Rows, 1)
		var columns []string
		cells := map[string]any{}
		for i, col := range table.ColumnDefinitions {
			if col.Priority == 0 {
				columns = append(columns, col.Name)
				if col.Name != "Age" {
					cells[col.Name] = table.Rows[0].Cells[i]
				}
			}
		}
		assert.Equal(t, []string{"Name", "Mode", "Anti-Affinity", "Not-Ready-Seconds", "Unreachable-Seconds", "Sysctl-Method", "Age"}, columns)
		assert.Equal(t, want, cells, "the row of %s", name)
	}

	openapi, err := cs.RESTClient().Get().AbsPath("/openapi/v3/apis/ha-injector.io/v1alpha1").DoRaw(ctx)
	require.NoError(t, err)
	for _, doc := range []string{
		"HAPolicy is a cluster-scoped policy",
		"unreachableSeconds is the longest a pod may stay on a node",
		"method is how the sysctls are set",
	} {
		assert.True(t, strings.Contains(string(openapi), doc), "kubectl explain would lack %q", doc)
	}
}
