package webhook

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

// The messages of the chart's ValidatingAdmissionPolicy (templates/validatingadmissionpolicy.yaml).
const (
	vapUpdateMessage = "ha-injector's ServiceAccount may change only the caBundle of its webhook configuration"
	vapDeleteMessage = "ha-injector's ServiceAccount may not delete its webhook configuration"
)

// chartAsServiceAccount renders the chart for certs.mode=selfManaged under the setup's
// names, creates its RBAC and its ValidatingAdmissionPolicy with the policy's binding,
// and returns a connection authenticated as the chart's ServiceAccount, with its user
// name and the render.
func chartAsServiceAccount(t *testing.T, restCfg *rest.Config, s selfManagedSetup) (*rest.Config, string, *chartrender.Result) {
	t.Helper()
	ctx := context.Background()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	chart, err := chartrender.Load(root)
	require.NoError(t, err)
	rendered, err := chartrender.Render(chart, map[string]any{
		"fullnameOverride": s.webhookConfig,
		"certManager":      map[string]any{"enabled": false},
		"certs":            map[string]any{"mode": "selfManaged"},
	}, chartrender.Options{ReleaseName: s.webhookConfig, Namespace: s.secret.Namespace})
	require.NoError(t, err)
	var sa string
	for _, d := range rendered.Documents {
		switch d.Object.GetKind() {
		case "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			obj := d.Object.DeepCopy()
			require.NoError(t, s.admin.Create(ctx, obj), "%s %s", obj.GetKind(), obj.GetName())
			if strings.HasPrefix(obj.GetKind(), "ValidatingAdmissionPolicy") {
				// Cluster-wide, unlike the namespaced objects of the setup.
				t.Cleanup(func() { _ = s.admin.Delete(context.Background(), obj) })
			}
		case "ServiceAccount":
			sa = d.Object.GetName()
		}
	}
	require.NotEmpty(t, sa)
	user := fmt.Sprintf("system:serviceaccount:%s:%s", s.secret.Namespace, sa)
	authn, err := testenv.Environment().AddUser(envtest.User{Name: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + s.secret.Namespace}}, restCfg)
	require.NoError(t, err)
	return authn.Config(), user, rendered
}

// updateAs reads the webhook configuration as the admin, changes it and writes it back
// through c, retrying when another writer (the rotator) got there first.
func updateAs(c client.Client, s selfManagedSetup, change func(*admissionregistrationv1.MutatingWebhookConfiguration), opts ...client.UpdateOption) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var wc admissionregistrationv1.MutatingWebhookConfiguration
		if err := s.admin.Get(context.Background(), types.NamespacedName{Name: s.webhookConfig}, &wc); err != nil {
			return err
		}
		change(&wc)
		return c.Update(context.Background(), &wc, opts...)
	})
}

// narrowNamespaces changes the namespaceSelector of a webhook: what a compromised pod
// would do to reach every namespace. The change narrows it, so should the policy let it
// through, no other test sharing the API server is sent to this webhook.
func narrowNamespaces(i int) func(*admissionregistrationv1.MutatingWebhookConfiguration) {
	return func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
		wc.Webhooks[i].NamespaceSelector.MatchLabels["ha-injector-test-narrowed"] = "true"
	}
}

// requireDeniedByPolicy checks err is the policy's denial, not RBAC's or a CEL error.
func requireDeniedByPolicy(t *testing.T, err error, message string) {
	t.Helper()
	require.Error(t, err, "the policy let the change through")
	assert.True(t, apierrors.IsForbidden(err), "%v", err)
	assert.Contains(t, err.Error(), "ValidatingAdmissionPolicy")
	assert.Contains(t, err.Error(), message)
}

// TestSelfManagedVapLetsTheServiceAccountChangeOnlyTheCABundle installs the chart's
// RBAC and ValidatingAdmissionPolicy for certs.mode=selfManaged and runs `serve` as the
// chart's ServiceAccount: the rotation still fills the Secret and writes the caBundle,
// but the ServiceAccount's `update` on its webhook configuration can change nothing
// else (the selectors, where the API server sends requests, the rules, ...), whereas
// an administrator still can.
func TestSelfManagedVapLetsTheServiceAccountChangeOnlyTheCABundle(t *testing.T) {
	t.Parallel()
	restCfg := testenv.Start(t)
	port := freePort(t)
	s := newSelfManagedSetup(t, restCfg, port)
	ctx := context.Background()
	userCfg, user, rendered := chartAsServiceAccount(t, restCfg, s)
	// The chart's validating policies: the one guarding the webhook configuration in
	// selfManaged mode, and the warnings about HAPolicies it always renders.
	vaps := rendered.Find("ValidatingAdmissionPolicy")
	require.Len(t, vaps, 2, "the webhook configuration's guard and the HAPolicy warnings")
	require.Len(t, rendered.Find("ValidatingAdmissionPolicyBinding"), 2)
	guard := slices.IndexFunc(vaps, func(u *unstructured.Unstructured) bool { return strings.HasSuffix(u.GetName(), "-webhook-ca") })
	require.GreaterOrEqual(t, guard, 0, "the guard of the webhook configuration")
	userClient, err := client.New(userCfg, client.Options{Scheme: Scheme})
	require.NoError(t, err)

	// The API server loads a new policy asynchronously: wait until it denies (a dry run,
	// so nothing changes before it does).
	eventually(t, 30*time.Second, "the policy denies the ServiceAccount a namespaceSelector change", func() error {
		err := updateAs(userClient, s, narrowNamespaces(0), client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), vapUpdateMessage) {
			return fmt.Errorf("the change was not denied by the policy: %v", err)
		}
		return nil
	})
	// A misspelt field is no error to the API server (w.?namspaceSelector would compare
	// nothing); kube-controller-manager, not running here, type-checks policies and
	// reports warnings in their status. Run the same checker against this API server's
	// schemas, with a misspelt canary to show that it sees them.
	// Both policies are checked. The HAPolicy warnings' fields are not typed by this
	// checker (a misspelt one goes unseen, tried); their words and defaults are held by
	// test/chart's TestChartWarnsAboutHAPolicies through the API server instead.
	dc, err := discovery.NewDiscoveryClientForConfig(restCfg)
	require.NoError(t, err)
	checker := &validating.TypeChecker{SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: dc}, RestMapper: s.admin.RESTMapper()}
	for _, u := range vaps {
		var v admissionregistrationv1.ValidatingAdmissionPolicy
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v))
		assert.Empty(t, checker.Check(&v), "type-checking warnings of %s", v.Name)
	}
	var vap admissionregistrationv1.ValidatingAdmissionPolicy
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(vaps[guard].Object, &vap))
	canary := checker.CheckExpression(checker.CreateContext(&vap), "object.webhooks.all(w, w.?namspaceSelector == w.?namespaceSelector)")
	assert.Contains(t, canary.String(), "namspaceSelector", "the checker knows the fields of a webhook")

	// The rotation, as the ServiceAccount, goes through the policy.
	cfg := selfManagedConfig(t, userCfg, s, port)
	r := startReplica(t, cfg)
	playKubelet(t, s.admin, s.secret, cfg.CertPath)
	secret := waitFilled(t, s)
	waitReady(t, r, 40*time.Second)
	ca := secret.Data[certs.CACertKey]
	_, err = servedCert(r.addr(), ca, mainDNSName)
	require.NoError(t, err)

	type change = func(*admissionregistrationv1.MutatingWebhookConfiguration)
	denied := []struct {
		name   string
		change change
	}{
		{"change the namespaceSelector of the first webhook", narrowNamespaces(0)},
		{"change the namespaceSelector of the second webhook", narrowNamespaces(1)},
		{"change a namespaceSelector together with the caBundle", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			narrowNamespaces(0)(wc)
			for i := range wc.Webhooks {
				wc.Webhooks[i].ClientConfig.CABundle = append(bytes.Clone(ca), ca...)
			}
		}},
		{"set an objectSelector", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[1].ObjectSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
		}},
		{"change the URL the API server calls", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].ClientConfig.URL = ptr.To(fmt.Sprintf("https://localhost:%d%s", port+1, PodPath))
		}},
		{"replace the URL by a Service", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].ClientConfig.URL = nil
			wc.Webhooks[0].ClientConfig.Service = &admissionregistrationv1.ServiceReference{Namespace: s.secret.Namespace, Name: "elsewhere", Path: ptr.To(PodPath)}
		}},
		{"add an operation to a rule", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].Rules[0].Operations = append(wc.Webhooks[0].Rules[0].Operations, admissionregistrationv1.Update)
		}},
		{"add a rule", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].Rules = append(wc.Webhooks[0].Rules, admissionregistrationv1.RuleWithOperations{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}},
			})
		}},
		{"change the failurePolicy", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].FailurePolicy = ptr.To(admissionregistrationv1.Ignore)
		}},
		{"change the matchPolicy", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].MatchPolicy = ptr.To(admissionregistrationv1.Exact)
		}},
		{"change the sideEffects", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].SideEffects = ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun)
		}},
		{"change the timeoutSeconds", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].TimeoutSeconds = ptr.To[int32](6)
		}},
		{"change the admissionReviewVersions", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].AdmissionReviewVersions = []string{"v1", "v1beta1"}
		}},
		{"change the reinvocationPolicy", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].ReinvocationPolicy = ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy)
		}},
		{"add a matchCondition", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0].MatchConditions = []admissionregistrationv1.MatchCondition{{Name: "narrower", Expression: "request.name != 'x'"}}
		}},
		{"add a webhook", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			extra := *wc.Webhooks[0].DeepCopy()
			extra.Name = "extra.ha-injector.io"
			extra.NamespaceSelector.MatchLabels["ha-injector-test-narrowed"] = "true"
			wc.Webhooks = append(wc.Webhooks, extra)
		}},
		{"remove a webhook", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks = wc.Webhooks[:1]
		}},
		{"reorder the webhooks", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[0], wc.Webhooks[1] = wc.Webhooks[1], wc.Webhooks[0]
		}},
		{"rename a webhook", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Webhooks[1].Name = "renamed.ha-injector.io"
		}},
		{"add a label", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Labels = map[string]string{"ha-injector-test": "label"}
		}},
		{"add an annotation", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			// cainjector would copy the CA of a Certificate the pod chose.
			wc.Annotations = map[string]string{"cert-manager.io/inject-ca-from": s.secret.Namespace + "/other"}
		}},
		{"add a finalizer", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			wc.Finalizers = append(wc.Finalizers, "ha-injector.io/test")
		}},
		{"add an owner", func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			// The garbage collector deletes what an owner it cannot find owned.
			wc.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Namespace", Name: "gone", UID: "00000000-0000-0000-0000-000000000000"}}
		}},
	}
	for _, tc := range denied {
		t.Run("the ServiceAccount may not "+tc.name, func(t *testing.T) {
			requireDeniedByPolicy(t, updateAs(userClient, s, tc.change), vapUpdateMessage)
		})
	}

	t.Run("the ServiceAccount may change the caBundle alone", func(t *testing.T) {
		require.NoError(t, updateAs(userClient, s, func(wc *admissionregistrationv1.MutatingWebhookConfiguration) {
			for i := range wc.Webhooks {
				wc.Webhooks[i].ClientConfig.CABundle = append(bytes.Clone(ca), ca...)
			}
		}))
	})

	t.Run("the ServiceAccount may not delete it, even with RBAC allowing it", func(t *testing.T) {
		grant := []client.Object{
			&rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: s.webhookConfig + "-test-delete"},
				Rules: []rbacv1.PolicyRule{{
					APIGroups: []string{admissionregistrationv1.GroupName}, Resources: []string{"mutatingwebhookconfigurations"},
					ResourceNames: []string{s.webhookConfig}, Verbs: []string{"delete"},
				}},
			},
			&rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: s.webhookConfig + "-test-delete"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: s.webhookConfig + "-test-delete"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
			},
		}
		for _, obj := range grant {
			require.NoError(t, s.admin.Create(ctx, obj))
			t.Cleanup(func() { _ = s.admin.Delete(context.Background(), obj) })
		}
		// RBAC's cache sees the grant a moment later; until then RBAC denies. A dry run,
		// so a policy that failed would not remove the configuration.
		var err error
		eventually(t, 10*time.Second, "the deletion is denied by the policy rather than RBAC", func() error {
			wc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: s.webhookConfig}}
			err = userClient.Delete(ctx, wc, client.DryRunAll)
			if err != nil && strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
				return nil
			}
			return fmt.Errorf("not denied by the policy: %v", err)
		})
		requireDeniedByPolicy(t, err, vapDeleteMessage)
	})

	t.Run("an administrator may still change the namespaceSelector", func(t *testing.T) {
		require.NoError(t, updateAs(s.admin, s, narrowNamespaces(0)))
		var wc admissionregistrationv1.MutatingWebhookConfiguration
		require.NoError(t, s.admin.Get(ctx, types.NamespacedName{Name: s.webhookConfig}, &wc))
		assert.Equal(t, "true", wc.Webhooks[0].NamespaceSelector.MatchLabels["ha-injector-test-narrowed"])
	})
}
