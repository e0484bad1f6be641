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
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

// TestHAPolicyThroughTheAPIServer checks the installed CRD as users meet it:
// an empty spec is defaulted by the server exactly as Default does, invalid
// policies are refused with the field named, `kubectl get hap` has the mode
// and the three features as columns, and the published OpenAPI schema carries
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
	raw, err := cs.RESTClient().Get().AbsPath("/apis/ha-injector.io/v1alpha1/hapolicies").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
	require.NoError(t, err)
	var table metav1.Table
	require.NoError(t, json.Unmarshal(raw, &table))
	var columns []string
	for _, col := range table.ColumnDefinitions {
		if col.Priority == 0 {
			columns = append(columns, col.Name)
		}
	}
	assert.Equal(t, []string{"Name", "Mode", "Anti-Affinity", "Tolerations", "Sysctls", "Age"}, columns)

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
