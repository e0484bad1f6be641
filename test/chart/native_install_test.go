package chart

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	installations "github.com/ha-injector/ha-injector/internal/installation"
	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

const (
	// nativeRelease contains "ha-injector": it is the full name of the release's objects,
	// which meet no other test's on the shared API server.
	nativeRelease = "ha-injector-native"
	// nativePolicy is the release's one HAPolicy (not "default", which the lifecycle
	// test's release creates) and the namespace that opts into it.
	nativePolicy = "native-e2e"
)

// TestChartNativeModeEndToEnd installs the chart with Helm (the SDK's install, as `helm
// install` runs it) with admission.mode=auto against the real kube-apiserver, which
// serves MutatingAdmissionPolicy in admissionregistration.k8s.io/v1: auto picks native.
// It runs the ha-injector binary with the chart's Deployment's arguments and the chart's
// ServiceAccount's token, as the pod would: serve binds the release's HAPolicy and writes
// its status through the chart's RBAC, which refuses the same ServiceAccount any admission
// policy (and, as the chart says, cannot narrow the bindings it may write).
// Pods created in the opted-in namespace are injected by the API server; with serve
// stopped, the next pod still is, and an edited HAPolicy reaches the next pod.
func TestChartNativeModeEndToEnd(t *testing.T) {
	cfg := testenv.Start(t)
	ctx := context.Background()
	admin, err := client.New(cfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	chrt, err := chartrender.Load(repoRoot)
	require.NoError(t, err)

	helm := helmConfigurationIn(t, nativeRelease)
	t.Cleanup(func() {
		u := action.NewUninstall(helm)
		u.DisableHooks, u.IgnoreNotFound, u.WaitStrategy, u.Timeout = true, true, kube.HookOnlyStrategy, helmActionTimeout
		if _, err := u.Run(nativeRelease); err != nil {
			t.Logf("cleanup: uninstall %s: %v", nativeRelease, err)
		}
		// No garbage collector runs here to delete serve's bindings with their HAPolicy.
		for _, list := range []client.ObjectList{&admissionregistrationv1.MutatingAdmissionPolicyBindingList{}, &admissionregistrationv1.ValidatingAdmissionPolicyBindingList{}} {
			if err := admin.List(context.Background(), list, client.MatchingLabels{native.ManagedByLabel: nativePolicy}); err != nil {
				t.Logf("cleanup: listing bindings: %v", err)
				continue
			}
			var objs []client.Object
			switch l := list.(type) {
			case *admissionregistrationv1.MutatingAdmissionPolicyBindingList:
				for i := range l.Items {
					objs = append(objs, &l.Items[i])
				}
			case *admissionregistrationv1.ValidatingAdmissionPolicyBindingList:
				for i := range l.Items {
					objs = append(objs, &l.Items[i])
				}
			}
			for _, o := range objs {
				_ = admin.Delete(context.Background(), o)
			}
		}
	})

	// --- helm install, admission.mode=auto ---
	install := action.NewInstall(helm)
	install.ReleaseName, install.Namespace, install.CreateNamespace = nativeRelease, nativeRelease, true
	// The API server has the CRD (testenv installs crds/); no hook Job can run without a
	// kubelet; pods never get ready.
	install.SkipCRDs, install.DisableHooks, install.WaitStrategy, install.Timeout = true, true, kube.HookOnlyStrategy, helmActionTimeout
	values := parseValues(t, `{admission: {mode: auto}, defaultPolicy: {create: false}, policies: {`+nativePolicy+`: {}}}`)
	rel := runHelmAction(t, "install", func(ctx context.Context) (any, error) { return install.RunWithContext(ctx, chrt, values) })
	docs, err := chartrender.Split(rel.Manifest)
	require.NoError(t, err)
	kinds := map[string]int{}
	for _, d := range docs {
		kinds[d.Object.GetKind()]++
	}
	assert.Equal(t, 1, kinds["MutatingAdmissionPolicy"], "auto is native on a 1.36+ API server: %v", kinds)
	assert.Zero(t, kinds["MutatingWebhookConfiguration"], "no webhook configuration")
	assert.Zero(t, kinds["Certificate"]+kinds["Issuer"]+kinds["Secret"], "no certificate")
	var chartPolicy admissionregistrationv1.MutatingAdmissionPolicy
	require.NoError(t, admin.Get(ctx, client.ObjectKey{Name: nativeRelease}, &chartPolicy))
	o := native.Options{Name: nativeRelease}

	// --- the chart's ServiceAccount ---
	var dep appsv1.Deployment
	require.NoError(t, admin.Get(ctx, client.ObjectKey{Namespace: nativeRelease, Name: nativeRelease}, &dep))

	// preview --cluster and doctor find the installation: the policy, serve's Deployment,
	// the settings compiled in.
	found, err := installations.FindNative(ctx, admin)
	require.NoError(t, err)
	require.NotNil(t, found)
	assert.Equal(t, nativeRelease, found.Name)
	serveDep, err := installations.NativeDeployment(ctx, admin, found.Name)
	require.NoError(t, err)
	require.NotNil(t, serveDep, "the chart's Deployment is serve's in native mode")
	assert.Equal(t, dep.Name, serveDep.Name)
	settings, ok := native.SettingsOf(found)
	require.True(t, ok)
	assert.Equal(t, dep.Spec.Template.Spec.Containers[0].Image, settings.SysctlImage)
	sa := dep.Spec.Template.Spec.ServiceAccountName
	saCfg := serviceAccountConfig(ctx, t, cfg, nativeRelease, sa)
	asSA, err := client.New(saCfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)

	t.Run("the ServiceAccount may write bindings and no admission policy", func(t *testing.T) {
		m, v := native.Bindings(o, "other")
		require.NoError(t, asSA.Create(ctx, m, client.DryRunAll), "a binding as serve writes it")
		require.NoError(t, asSA.Create(ctx, v, client.DryRunAll))
		mine := native.Options{Name: nativeRelease + "-mine"}
		for name, write := range map[string]func() error{
			"create a MutatingAdmissionPolicy": func() error { return asSA.Create(ctx, native.MutatingPolicy(mine), client.DryRunAll) },
			"update the chart's MutatingAdmissionPolicy": func() error {
				cur := chartPolicy.DeepCopy()
				cur.Spec.MatchConstraints.NamespaceSelector = &metav1.LabelSelector{}
				return asSA.Update(ctx, cur, client.DryRunAll)
			},
			"create a ValidatingAdmissionPolicy": func() error { return asSA.Create(ctx, native.ValidatingPolicy(mine), client.DryRunAll) },
			"delete a binding":                   func() error { return asSA.Delete(ctx, m, client.DryRunAll) },
		} {
			err := write()
			require.Error(t, err, name)
			assert.True(t, apierrors.IsForbidden(err), "%s: %v", name, err)
		}
	})

	t.Run("no admission policy of the API confines the bindings it writes", func(t *testing.T) {
		// What the chart cannot prevent, held here because the chart and docs/install.md say
		// it: RBAC cannot name bindings that do not exist yet, and the API server evaluates
		// no admission policy created through its API on admission policies and their
		// bindings (k8s.io/apiserver pkg/admission/plugin/policy/generic, Dispatch:
		// isExcludedFromAPIHooks). A policy that denies every creation of a labelled
		// ConfigMap or binding denies the ConfigMap and lets the binding through.
		const label = "ha-injector.io/test-canary"
		canary := &admissionregistrationv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: nativeRelease + "-canary"},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr(admissionregistrationv1.Fail),
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{
					{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
					}},
					{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule: admissionregistrationv1.Rule{APIGroups: []string{admissionregistrationv1.GroupName}, APIVersions: []string{"v1"},
							Resources: []string{"mutatingadmissionpolicybindings", "validatingadmissionpolicybindings"}},
					}},
				}},
				MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "labelled", Expression: "'" + label + "' in object.metadata.?labels.orValue({})"}},
				Validations:     []admissionregistrationv1.Validation{{Expression: "false", Message: "the canary denies it"}},
			},
		}
		canaryBinding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: canary.Name},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: canary.Name,
				ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
		}
		require.NoError(t, admin.Create(ctx, canary))
		require.NoError(t, admin.Create(ctx, canaryBinding))
		t.Cleanup(func() {
			_ = admin.Delete(context.Background(), canaryBinding)
			_ = admin.Delete(context.Background(), canary)
		})
		labels := map[string]string{label: "true"}
		require.Eventually(t, func() bool {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: nativeRelease, Name: "canary", Labels: labels}}
			err := admin.Create(ctx, cm, client.DryRunAll)
			return err != nil && strings.Contains(err.Error(), "the canary denies it")
		}, 30*time.Second, 100*time.Millisecond, "the API server loaded the canary policy")
		// A binding that is not serve's (no ha-injector.io/binding-of label, another policy,
		// no parameters): the same policy does not see it.
		theirs := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: nativeRelease + "-not-ours", Labels: labels},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: canary.Name,
				ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Warn}},
		}
		assert.NoError(t, asSA.Create(ctx, theirs, client.DryRunAll), "the API server applied an admission policy to a binding: the chart can confine serve's bindings now")
	})

	// --- serve, as the chart's Deployment runs it, as its ServiceAccount ---
	serve := startServeAsDeployment(t, saCfg, &dep)
	var mb admissionregistrationv1.MutatingAdmissionPolicyBinding
	var vb admissionregistrationv1.ValidatingAdmissionPolicyBinding
	require.Eventually(t, func() bool {
		return admin.Get(ctx, client.ObjectKey{Name: native.BindingName(o, nativePolicy)}, &mb) == nil &&
			admin.Get(ctx, client.ObjectKey{Name: native.BindingName(o, nativePolicy)}, &vb) == nil
	}, 30*time.Second, 100*time.Millisecond, "serve binds the HAPolicy through the chart's RBAC\n%s", proc.Tail(serve.Log, 20))
	wantM, wantV := native.Bindings(o, nativePolicy)
	assert.Equal(t, wantM.Spec, mb.Spec)
	assert.Equal(t, wantV.Spec, vb.Spec)
	var hap v1alpha1.HAPolicy
	require.Eventually(t, func() bool {
		require.NoError(t, admin.Get(ctx, client.ObjectKey{Name: nativePolicy}, &hap))
		return hap.Status.ObservedGeneration == hap.Generation
	}, 30*time.Second, 100*time.Millisecond, "serve writes the HAPolicy's status\n%s", proc.Tail(serve.Log, 20))

	// --- pods in an opted-in namespace ---
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nativePolicy, Labels: map[string]string{policies.PolicyLabel: nativePolicy}}}
	require.NoError(t, admin.Create(ctx, ns))
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: name, Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.k8s.io/pause:3.10"}}}}
	}
	t.Cleanup(func() {
		_ = admin.DeleteAllOf(context.Background(), &corev1.Pod{}, client.InNamespace(ns.Name), client.GracePeriodSeconds(0))
	})
	unreachable := func(p *corev1.Pod) int64 {
		for _, tol := range p.Spec.Tolerations {
			if tol.Key == policies.UnreachableTaint {
				if tol.TolerationSeconds == nil {
					return -1
				}
				return *tol.TolerationSeconds
			}
		}
		return -1
	}
	// created creates a pod once a dry run shows the API server applies want (its policy
	// and bindings load asynchronously), and returns it as stored.
	created := func(name string, want int64) *corev1.Pod {
		t.Helper()
		require.Eventually(t, func() bool {
			p := pod(name)
			require.NoError(t, admin.Create(ctx, p, client.DryRunAll))
			return unreachable(p) == want
		}, 30*time.Second, 100*time.Millisecond, "the API server injects pod %s (unreachable %d s)", name, want)
		p := pod(name)
		require.NoError(t, admin.Create(ctx, p))
		return p
	}
	first := created("first", v1alpha1.DefaultUnreachable)
	assert.Contains(t, first.Annotations[policies.StatusAnnotation], `"native":true`)
	require.NotEmpty(t, first.Spec.InitContainers)
	assert.Equal(t, "ha-sysctl", first.Spec.InitContainers[0].Name)
	assert.Equal(t, dep.Spec.Template.Spec.Containers[0].Image, first.Spec.InitContainers[0].Image, "the chart's sysctl image, filled into the policy")

	// --- serve stopped: pods are still injected ---
	require.NoError(t, serve.Stop(30*time.Second))
	_, exitErr := serve.Exited()
	assert.NoError(t, exitErr, "serve exits 0 on SIGTERM\n%s", proc.Tail(serve.Log, 20))
	second := created("second", v1alpha1.DefaultUnreachable)
	assert.Contains(t, second.Annotations[policies.StatusAnnotation], `"policy":"`+nativePolicy+`"`)

	// --- an edited HAPolicy reaches the next pod, serve or no serve ---
	require.NoError(t, admin.Get(ctx, client.ObjectKey{Name: nativePolicy}, &hap))
	hap.Spec.Tolerations.UnreachableSeconds = ptr[int64](20)
	require.NoError(t, admin.Update(ctx, &hap))
	third := created("third", 20)
	assert.Contains(t, third.Annotations[policies.StatusAnnotation], `"native":true`)
}

// serviceAccountConfig is a connection to the API server authenticated with a token the
// API server issues for the ServiceAccount (TokenRequest), as its pods get one.
func serviceAccountConfig(ctx context.Context, t *testing.T, cfg *rest.Config, ns, name string) *rest.Config {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr[int64](3600)},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	out := rest.AnonymousClientConfig(cfg)
	out.BearerToken = tr.Status.Token
	return out
}

// startServeAsDeployment runs the ha-injector binary with the arguments of the
// Deployment's container, its probes and metrics on free ports of 127.0.0.1, connected
// as saCfg, and waits until it is ready (bounded: 40 s). The caller stops it; a cleanup
// stops it otherwise.
func startServeAsDeployment(t *testing.T, saCfg *rest.Config, dep *appsv1.Deployment) *proc.Process {
	t.Helper()
	bin := testenv.Binary(t)
	dir := t.TempDir()
	kubeconfig := clientcmdConfig(saCfg)
	path := filepath.Join(dir, "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(kubeconfig, path))
	ports, err := proc.FreePorts(2)
	require.NoError(t, err)
	args := []string{"--kubeconfig=" + path}
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		switch {
		case strings.HasPrefix(a, "--health-probe-bind-address="):
			a = fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", ports[0])
		case strings.HasPrefix(a, "--metrics-bind-address="):
			a = fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", ports[1])
		}
		args = append(args, a)
	}
	require.Equal(t, "serve", args[1], "the container runs serve")
	args[0], args[1] = args[1], args[0]
	serve, err := proc.Start("serve", filepath.Join(dir, "serve.log"), bin, nil, args...)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = serve.Stop(30 * time.Second)
		if t.Failed() {
			t.Logf("serve's log:\n%s", proc.Tail(serve.Log, 40))
		}
	})
	require.NoError(t, proc.WaitHTTP(context.Background(), nil, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[0]), 40*time.Second, serve.Alive), proc.Tail(serve.Log, 20))
	return serve
}

// clientcmdConfig is cfg (a server, its CA and a bearer token) as a kubeconfig.
func clientcmdConfig(cfg *rest.Config) clientcmdapi.Config {
	c := clientcmdapi.NewConfig()
	c.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	c.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	c.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	c.CurrentContext = "c"
	return *c
}
