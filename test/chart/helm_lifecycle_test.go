package chart

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

const (
	// lifecycleRelease contains "ha-injector", so it is also the full name of the release's
	// objects: none collides with what other tests of the package create on the shared API
	// server (they use the release "ha-injector").
	lifecycleRelease   = "ha-injector-lifecycle"
	lifecycleNamespace = "ha-injector-lifecycle"
	// helmActionTimeout bounds each Helm action.
	helmActionTimeout = 60 * time.Second
	hapolicyCRD       = "hapolicies.ha-injector.io"
)

// TestHelmInstallUpgradeUninstall installs the chart with Helm itself (the Helm v4 SDK's
// install, upgrade and uninstall actions, as `helm install/upgrade/uninstall` run them),
// against the real kube-apiserver with cert-manager's CRDs: the chart's objects are
// created with Helm's ownership annotations, an upgrade changes and prunes them, and an
// uninstall deletes them but leaves the HAPolicy CRD and the users' HAPolicies.
//
// The package's other tests create no pods or Deployments in namespaces labelled
// ha-injector.io/policy, so the webhook configuration installed here (whose Service has no
// pods: there is no kubelet) is never called by them; it is removed at the end either way.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	cfg := testenv.Start(t)
	// The chart renders cert-manager Issuers and Certificates by default.
	_, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{certManagerCRDs(t)}, ErrorIfPathMissing: true})
	require.NoError(t, err)
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	require.NoError(t, err)
	ctx := context.Background()

	// The helm CLI names its field manager "helm"; the SDK's default is the program's name
	// (here chart.test).
	previousManager := kube.ManagedFieldsManager
	kube.ManagedFieldsManager = "helm"
	t.Cleanup(func() { kube.ManagedFieldsManager = previousManager })

	helm := helmConfiguration(t)
	chrt, err := chartrender.Load(repoRoot)
	require.NoError(t, err)

	// A failed run still removes the release, so its webhook configuration does not outlive
	// this test on the shared API server.
	t.Cleanup(func() {
		u := action.NewUninstall(helm)
		u.DisableHooks, u.IgnoreNotFound, u.WaitStrategy, u.Timeout = true, true, kube.HookOnlyStrategy, helmActionTimeout
		if _, err := u.Run(lifecycleRelease); err != nil {
			t.Logf("cleanup: uninstall %s: %v", lifecycleRelease, err)
		}
	})

	deployment := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: lifecycleNamespace, Name: lifecycleRelease}}
	service := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: lifecycleNamespace, Name: lifecycleRelease}}
	webhooks := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: lifecycleRelease}}
	defaultPolicy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	strictPolicy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "strict"}}
	crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: hapolicyCRD}}

	// Every test binary's API server already has the HAPolicy CRD (test/harness/controlplane
	// installs charts/ha-injector/crds), as a cluster would after a first install. Helm 3
	// skipped a crds/ CRD that existed; Helm 4 server-side applies crds/ on every install
	// (never on upgrade), so it takes a share of the CRD's fields, and a field another
	// manager set to a different value would fail the install with a conflict.
	crdExisted := lifecycleGet(t, c, crd)

	// --- install ---
	install := action.NewInstall(helm)
	install.ReleaseName = lifecycleRelease
	install.Namespace = lifecycleNamespace
	install.CreateNamespace = true
	// No hooks: there is no kubelet, so a hook Job (the chart's CRD upgrade Job, when
	// crds.upgrade is on) could never complete, and Helm would wait for it until the timeout.
	install.DisableHooks = true
	// No waiting for readiness either (`helm install` without --wait): pods never run.
	install.WaitStrategy = kube.HookOnlyStrategy
	install.Timeout = helmActionTimeout
	rel := runHelmAction(t, "install", func(ctx context.Context) (any, error) { return install.RunWithContext(ctx, chrt, nil) })
	assert.Equal(t, 1, rel.Version)
	assert.Equal(t, "ssa", rel.ApplyMethod, "Helm 4 installs with server-side apply")
	checkHooksNotRun(t, c, rel)

	require.True(t, lifecycleGet(t, c, crd), "the HAPolicy CRD exists")
	assert.True(t, crdEstablished(crd), "the HAPolicy CRD is established")
	t.Logf("the HAPolicy CRD existed before the install: %v; its field managers after it: %v", crdExisted, fieldManagers(crd))
	assert.Contains(t, fieldManagers(crd), "helm/Apply", "Helm 4 applied the chart's crds/ file")
	checkReleaseObjects(t, c, rel, true)
	require.True(t, lifecycleGet(t, c, defaultPolicy), "HAPolicy default")
	helmOwned(t, defaultPolicy)
	require.True(t, lifecycleGet(t, c, deployment), "Deployment")
	helmOwned(t, deployment)
	assert.Equal(t, int32(2), *deployment.Spec.Replicas)
	assert.Contains(t, fieldManagers(deployment), "helm/Apply", "Helm 4 server-side applies the objects as the field manager helm")
	require.True(t, lifecycleGet(t, c, service), "Service")
	helmOwned(t, service)
	require.True(t, lifecycleGet(t, c, webhooks), "MutatingWebhookConfiguration")
	helmOwned(t, webhooks)
	for _, w := range webhooks.Webhooks {
		require.NotNil(t, w.ClientConfig.Service, w.Name)
		assert.Equal(t, lifecycleNamespace, w.ClientConfig.Service.Namespace, w.Name)
		assert.Equal(t, lifecycleRelease, w.ClientConfig.Service.Name, w.Name)
	}
	assert.False(t, lifecycleGet(t, c, strictPolicy), "no HAPolicy strict before the upgrade")
	assert.Equal(t, 1, len(helmReleaseSecrets(t, c)), "Helm stores revision 1 as a Secret in the release namespace")

	// --- upgrade: more replicas and one more policy ---
	upgrade := func(values map[string]any) *releasev1.Release {
		t.Helper()
		u := action.NewUpgrade(helm)
		u.Namespace = lifecycleNamespace
		u.DisableHooks = true
		u.WaitStrategy = kube.HookOnlyStrategy
		u.Timeout = helmActionTimeout
		return runHelmAction(t, "upgrade", func(ctx context.Context) (any, error) {
			return u.RunWithContext(ctx, lifecycleRelease, chrt, values)
		})
	}
	rel = upgrade(parseValues(t, `{replicaCount: 3, policies: {strict: {antiAffinity: {type: Required}}}}`))
	assert.Equal(t, 2, rel.Version)
	assert.Equal(t, "ssa", rel.ApplyMethod)
	checkReleaseObjects(t, c, rel, true)
	require.True(t, lifecycleGet(t, c, deployment))
	assert.Equal(t, int32(3), *deployment.Spec.Replicas)
	require.True(t, lifecycleGet(t, c, strictPolicy), "HAPolicy strict")
	helmOwned(t, strictPolicy)
	assert.Equal(t, v1alpha1.AntiAffinityType("Required"), strictPolicy.Spec.AntiAffinity.Type)

	// --- upgrade without the policy: Helm deletes what the release no longer renders. The
	// values are given again: an upgrade with no values at all reuses the last ones. ---
	rel = upgrade(parseValues(t, `{replicaCount: 3}`))
	assert.Equal(t, 3, rel.Version)
	checkReleaseObjects(t, c, rel, true)
	assert.False(t, lifecycleGet(t, c, strictPolicy), "the upgrade pruned HAPolicy strict")
	require.True(t, lifecycleGet(t, c, deployment))
	assert.Equal(t, int32(3), *deployment.Spec.Replicas)
	assert.True(t, lifecycleGet(t, c, defaultPolicy), "HAPolicy default is kept")
	assert.Equal(t, 3, len(helmReleaseSecrets(t, c)), "one Secret per revision")

	// --- a user's HAPolicy, not the chart's ---
	mine := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "mine"}}
	require.NoError(t, c.Create(ctx, mine))
	t.Cleanup(func() {
		if err := c.Delete(context.Background(), mine); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting HAPolicy mine: %v", err)
		}
	})

	// --- uninstall ---
	uninstall := action.NewUninstall(helm)
	uninstall.DisableHooks = true
	// Deletions complete without a kubelet or controllers: Helm waits for them.
	uninstall.WaitStrategy = kube.StatusWatcherStrategy
	uninstall.Timeout = helmActionTimeout
	start := time.Now()
	res, err := uninstall.Run(lifecycleRelease)
	require.NoError(t, err, "helm uninstall")
	t.Logf("helm uninstall in %v", time.Since(start).Round(time.Millisecond))
	assert.Empty(t, res.Info, "Helm kept nothing (resource policy, ownership)")

	checkReleaseObjects(t, c, rel, false)
	assert.False(t, lifecycleGet(t, c, deployment), "uninstall deleted the Deployment")
	assert.False(t, lifecycleGet(t, c, service), "uninstall deleted the Service")
	assert.False(t, lifecycleGet(t, c, webhooks), "uninstall deleted the MutatingWebhookConfiguration")
	assert.False(t, lifecycleGet(t, c, defaultPolicy), "uninstall deleted the chart's HAPolicy default")
	// Helm never deletes what crds/ installed: the CRD, and so every HAPolicy that is not
	// the release's, survives an uninstall.
	assert.True(t, lifecycleGet(t, c, crd), "the HAPolicy CRD survives the uninstall")
	assert.True(t, lifecycleGet(t, c, mine), "a user's HAPolicy survives the uninstall")
	assert.Empty(t, helmReleaseSecrets(t, c), "uninstall purged the release's history")
}

// helmConfiguration is what `helm --kubeconfig <shared API server> -n <namespace>` uses:
// releases stored as Secrets in the release namespace (Helm's default driver), Helm's
// logs in the test's output.
func helmConfiguration(t *testing.T) *action.Configuration {
	t.Helper()
	return helmConfigurationIn(t, lifecycleNamespace)
}

// helmConfigurationIn is helmConfiguration with -n ns.
func helmConfigurationIn(t *testing.T, ns string) *action.Configuration {
	t.Helper()
	kubeconfig, cacheDir := testenv.Kubeconfig(t), t.TempDir()
	getter := genericclioptions.NewConfigFlags(false)
	getter.KubeConfig, getter.CacheDir, getter.Namespace = &kubeconfig, &cacheDir, &ns
	helm := action.NewConfiguration(action.ConfigurationSetLogger(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))
	require.NoError(t, helm.Init(getter, ns, "secret"))
	return helm
}

// runHelmAction runs one Helm action, bounded, and returns the release it deployed.
func runHelmAction(t *testing.T, what string, run func(context.Context) (any, error)) *releasev1.Release {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), helmActionTimeout)
	defer cancel()
	start := time.Now()
	r, err := run(ctx)
	require.NoError(t, err, "helm %s", what)
	rel, ok := r.(*releasev1.Release)
	require.True(t, ok, "helm %s returned a %T", what, r)
	require.Equal(t, rcommon.StatusDeployed, rel.Info.Status, "helm %s: %s", what, rel.Info.Description)
	t.Logf("helm %s: revision %d in %v", what, rel.Version, time.Since(start).Round(time.Millisecond))
	return rel
}

// checkReleaseObjects checks every object of the release's manifest (what Helm recorded
// it applied) on the API server: present and owned by the release, or gone.
func checkReleaseObjects(t *testing.T, c client.Client, rel *releasev1.Release, present bool) {
	t.Helper()
	docs, err := chartrender.Split(rel.Manifest)
	require.NoError(t, err)
	require.NotEmpty(t, docs)
	for _, d := range docs {
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(d.Object.GroupVersionKind())
		if d.Object.GetNamespace() != "" {
			obj.SetNamespace(d.Object.GetNamespace())
		} else if namespaced, err := c.IsObjectNamespaced(obj); assert.NoError(t, err) && namespaced {
			obj.SetNamespace(rel.Namespace)
		}
		obj.SetName(d.Object.GetName())
		if present {
			if assert.True(t, lifecycleGet(t, c, obj), "%s: %s %s not found", d.Source, obj.GetKind(), obj.GetName()) {
				helmOwned(t, obj)
			}
		} else {
			assert.False(t, lifecycleGet(t, c, obj), "%s: %s %s still exists", d.Source, obj.GetKind(), obj.GetName())
		}
	}
}

// checkHooksNotRun checks that the release's hooks were rendered and recorded, but that
// none of their objects was created (DisableHooks).
func checkHooksNotRun(t *testing.T, c client.Client, rel *releasev1.Release) {
	t.Helper()
	for _, h := range rel.Hooks {
		docs, err := chartrender.Split(h.Manifest)
		require.NoError(t, err)
		for _, d := range docs {
			obj := &unstructured.Unstructured{}
			obj.SetGroupVersionKind(d.Object.GroupVersionKind())
			if namespaced, err := c.IsObjectNamespaced(obj); assert.NoError(t, err) && namespaced {
				obj.SetNamespace(rel.Namespace)
			}
			obj.SetName(d.Object.GetName())
			assert.False(t, lifecycleGet(t, c, obj), "hook %s: %s %s was created", h.Path, obj.GetKind(), obj.GetName())
		}
	}
	t.Logf("%d hooks rendered, none run", len(rel.Hooks))
}

// lifecycleGet reads obj (by its name and namespace) into obj: false when it does not exist.
func lifecycleGet(t *testing.T, c client.Client, obj client.Object) bool {
	t.Helper()
	err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(t, err, "get %T %s", obj, obj.GetName())
	return true
}

// helmOwned checks the labels and annotations by which Helm knows the object is the release's.
func helmOwned(t *testing.T, obj client.Object) {
	t.Helper()
	assert.Equal(t, "Helm", obj.GetLabels()["app.kubernetes.io/managed-by"], "%T %s", obj, obj.GetName())
	assert.Equal(t, lifecycleRelease, obj.GetAnnotations()["meta.helm.sh/release-name"], "%T %s", obj, obj.GetName())
	assert.Equal(t, lifecycleNamespace, obj.GetAnnotations()["meta.helm.sh/release-namespace"], "%T %s", obj, obj.GetName())
}

// fieldManagers lists an object's field managers as manager/operation.
func fieldManagers(obj client.Object) []string {
	var out []string
	for _, m := range obj.GetManagedFields() {
		out = append(out, m.Manager+"/"+string(m.Operation))
	}
	return out
}

func crdEstablished(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, cond := range crd.Status.Conditions {
		if cond.Type == apiextensionsv1.Established {
			return cond.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}

// helmReleaseSecrets are the Secrets in which Helm stores the release's revisions.
func helmReleaseSecrets(t *testing.T, c client.Client) []corev1.Secret {
	t.Helper()
	var secrets corev1.SecretList
	require.NoError(t, c.List(context.Background(), &secrets, client.InNamespace(lifecycleNamespace),
		client.MatchingLabels{"owner": "helm", "name": lifecycleRelease}))
	return secrets.Items
}
