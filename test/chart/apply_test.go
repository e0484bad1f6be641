package chart

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Stop()
	os.Exit(code)
}

// certManagerCRDs is cert-manager's own CRD folder in the module cache: the module whose
// API types the certs package uses ships them in deploy/crds.
func certManagerCRDs(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	require.NoError(t, err, "go list -m github.com/cert-manager/cert-manager")
	dir := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	require.DirExists(t, dir)
	return dir
}

// TestChartAppliesToAPIServer sends every object of each render to a real kube-apiserver
// as a server-side dry run, with cert-manager's real CRDs installed: the API server's
// validation of the Deployment, the webhook configuration, RBAC, the PDB, the HAPolicies
// (schema and CEL) and cert-manager's Issuers and Certificates (their OpenAPI schemas and
// CEL rules) accepts what the chart renders, with strict field validation.
func TestChartAppliesToAPIServer(t *testing.T) {
	cfg := testenv.Start(t)
	_, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{certManagerCRDs(t)}, ErrorIfPathMissing: true})
	require.NoError(t, err)
	c, err := client.New(cfg, client.Options{})
	require.NoError(t, err)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}

	for _, values := range []string{
		``,
		`{certManager: {enabled: false}, certs: {mode: selfManaged}}`,
		`{certManager: {issuerRef: {name: corp-ca, kind: ClusterIssuer}}}`,
		`{certManager: {enabled: false}, certs: {mode: provided, provided: {secretName: s, caBundle: ` + caBundle + `}}}`,
		`{webhook: {failurePolicy: Fail, excludeNamespaces: [monitoring]}, replicaCount: 1, policies: {strict: {antiAffinity: {type: Required}}}}`,
		`{networkPolicy: {enabled: true, apiServer: {cidrs: [10.0.0.1/32, "fd00::1/128"]}}}`,
		// The API server compiles the admission policies' CEL on create.
		`{admission: {mode: native}, sysctlImage: {allowed: [mirror.example/ha-injector]}, podSecurity: {defaultLevel: baseline}, networkPolicy: {enabled: true}}`,
	} {
		t.Run(values, func(t *testing.T) {
			r, err := render(t, values)
			require.NoError(t, err)
			require.NotEmpty(t, r.Documents)
			for _, d := range append(r.Documents, r.Hooks...) {
				obj := d.Object.DeepCopy()
				require.NoError(t, c.Create(ctx, obj, client.DryRunAll, client.FieldValidation("Strict")), "%s: %s %s", d.Source, obj.GetKind(), obj.GetName())
			}
			// A pod of the Deployment passes the API server's admission, its Priority plugin
			// included: system-cluster-critical is allowed outside kube-system.
			deployment := typed[appsv1.Deployment](t, r.Get("Deployment", release))
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: release + "-", Labels: deployment.Spec.Template.Labels}, Spec: deployment.Spec.Template.Spec}
			require.NoError(t, c.Create(ctx, pod, client.DryRunAll))
			if pod.Spec.PriorityClassName == "system-cluster-critical" {
				require.NotNil(t, pod.Spec.Priority)
				assert.Equal(t, int32(2000000000), *pod.Spec.Priority, "the API server resolved the priority class")
			}
		})
	}
}
