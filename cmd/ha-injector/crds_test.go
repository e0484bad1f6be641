package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/internal/crds"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

const crdName = "hapolicies.ha-injector.io"

// TestCRDsApplyUpgradesTheCRDAsTheHooksServiceAccount runs `ha-injector crds apply` as
// the chart's hook runs it: authenticated as the hook's ServiceAccount with exactly the
// rendered RBAC, against a CRD that an older install left behind. The CRD comes back as
// the chart's crds/ file has it; the stored HAPolicies stay.
func TestCRDsApplyUpgradesTheCRDAsTheHooksServiceAccount(t *testing.T) {
	restCfg := testenv.Start(t)
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	require.NoError(t, apiextensionsv1.AddToScheme(scheme))
	require.NoError(t, v1alpha1.AddToScheme(scheme))
	admin, err := client.New(restCfg, client.Options{Scheme: scheme})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The hook's objects, from the chart, in a namespace of this test's own.
	ns := uniqueName("crds-hook")
	require.NoError(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	chart, err := chartrender.Load(root)
	require.NoError(t, err)
	r, err := chartrender.Render(chart, nil, chartrender.Options{ReleaseName: ns, Namespace: ns})
	require.NoError(t, err)
	sa := ""
	for _, h := range r.Hooks {
		switch h.Object.GetKind() {
		case "ClusterRole", "ClusterRoleBinding", "ServiceAccount":
			obj := h.Object.DeepCopy()
			require.NoError(t, admin.Create(ctx, obj), "%s %s", obj.GetKind(), obj.GetName())
			t.Cleanup(func() { _ = admin.Delete(context.Background(), obj) })
			if obj.GetKind() == "ServiceAccount" {
				sa = obj.GetName()
			}
		}
	}
	require.NotEmpty(t, sa)
	user, err := testenv.Environment().AddUser(envtest.User{Name: "system:serviceaccount:" + ns + ":" + sa, Groups: []string{"system:serviceaccounts"}}, restCfg)
	require.NoError(t, err)
	kubeconfig := writeKubeconfig(t, restCfg.Host, user.Config())
	crdFile := filepath.Join(root, chartrender.ChartDir, "crds", "ha-injector.io_hapolicies.yaml")

	// What an older chart left: other short names and description, a policy stored.
	var crd apiextensionsv1.CustomResourceDefinition
	require.NoError(t, admin.Get(ctx, client.ObjectKey{Name: crdName}, &crd))
	want := crd.DeepCopy()
	crd.Spec.Names.ShortNames = []string{"old"}
	crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Description = "an older version"
	require.NoError(t, admin.Update(ctx, &crd))
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("kept")}}
	require.NoError(t, admin.Create(ctx, policy))
	t.Cleanup(func() { _ = admin.Delete(context.Background(), policy) })

	for range 2 { // a second run changes nothing and succeeds
		res := runCLI(t, "", "crds", "apply", "-f", crdFile, "--kubeconfig", kubeconfig)
		require.Equal(t, 0, res.code, res.stderr)
		assert.Equal(t, "customresourcedefinition "+crdName+" applied\n", res.stdout)
	}
	require.NoError(t, admin.Get(ctx, client.ObjectKey{Name: crdName}, &crd))
	assert.Equal(t, want.Spec.Names.ShortNames, crd.Spec.Names.ShortNames)
	assert.Equal(t, want.Spec.Versions[0].Schema.OpenAPIV3Schema.Description, crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Description)
	assert.True(t, slices.ContainsFunc(crd.ManagedFields, func(m metav1.ManagedFieldsEntry) bool { return m.Manager == crds.FieldOwner }),
		"applied server-side by %s", crds.FieldOwner)
	require.NoError(t, admin.Get(ctx, client.ObjectKeyFromObject(policy), policy), "the stored HAPolicy is kept")

	// The ServiceAccount may touch nothing else: another CRD is refused by the API server.
	other := filepath.Join(t.TempDir(), "other.yaml")
	data, err := os.ReadFile(crdFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(other, []byte(strings.ReplaceAll(string(data), "hapolicies", "otherpolicies")), 0o600))
	res := runCLI(t, "", "crds", "apply", "-f", other, "--kubeconfig", kubeconfig)
	assert.Equal(t, 1, res.code, res.stderr)
	assert.Contains(t, res.stderr, "forbidden")
}

func TestCRDsApplyRefusesWhatIsNotAnHAPolicyCRD(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct{ yaml, message string }{
		"another kind":       {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n", "document 1: v1 ConfigMap is not an apiextensions.k8s.io/v1 CustomResourceDefinition"},
		"another group":      {"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: things.example.com}\nspec: {group: example.com}\n", `document 1: CustomResourceDefinition things.example.com is of group "example.com", not ha-injector.io`},
		"an unknown field":   {"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: x.ha-injector.io}\nspec: {group: ha-injector.io, grup: x}\n", `unknown field "grup"`},
		"no document at all": {"# nothing\n", "no CustomResourceDefinition"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(dir, name+".yaml")
			require.NoError(t, os.WriteFile(file, []byte(tc.yaml), 0o600))
			// No cluster is contacted: the kubeconfig does not even exist.
			res := runCLI(t, "", "crds", "apply", "-f", file, "--kubeconfig", filepath.Join(dir, "none"))
			assert.Equal(t, 2, res.code, res.stderr)
			assert.Contains(t, res.stderr, tc.message)
			assert.NotContains(t, res.stderr, "--help", "an input error, not a usage error")
		})
	}
	res := runCLI(t, "", "crds", "apply")
	assert.Equal(t, 2, res.code)
	assert.Contains(t, res.stderr, "-f FILE is required")
}
