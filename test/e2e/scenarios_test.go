package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
	"github.com/ha-injector/ha-injector/webhook"
)

// effectiveSeconds is what the taint manager uses for a NoExecute taint: the first
// toleration in list order that matches it (nil: tolerated forever or not at all).
func effectiveSeconds(pod *corev1.Pod, taintKey string) *int64 {
	taint := &corev1.Taint{Key: taintKey, Effect: corev1.TaintEffectNoExecute}
	for _, tol := range pod.Spec.Tolerations {
		if tol.ToleratesTaint(klog.Background(), taint, false) {
			return tol.TolerationSeconds
		}
	}
	return nil
}

// checkInjected asserts the three injections of the default policy on a stored pod.
func checkInjected(t assert.TestingT, pod *corev1.Pod) bool {
	ok := assert.Contains(t, pod.Annotations, policies.StatusAnnotation, pod.Name)
	ok = assert.Equal(t, ptr.To[int64](60), effectiveSeconds(pod, policies.NotReadyTaint), pod.Name) && ok
	ok = assert.Equal(t, ptr.To[int64](30), effectiveSeconds(pod, policies.UnreachableTaint), pod.Name) && ok
	n := 0
	for _, c := range pod.Spec.InitContainers {
		if c.Name == policies.SysctlContainerName {
			n++
		}
	}
	return assert.Equal(t, 1, n, "%s: one %s init container", pod.Name, policies.SysctlContainerName) && ok
}

// TestNamespaceWithoutTheLabelIsUntouched: the chart's namespaceSelector keeps the
// webhook out of namespaces that did not opt in; the API server never calls it.
func TestNamespaceWithoutTheLabelIsUntouched(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	dep := workloads.Deployment(namespace(t, f, nil), "web-server")
	require.NoError(t, f.client.Create(ctx, dep))
	var got appsv1.Deployment
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(dep), &got))
	assert.Nil(t, got.Spec.Template.Spec.Affinity)
	assert.Empty(t, got.Spec.Template.Spec.InitContainers)
	assert.Empty(t, got.Spec.Template.Spec.Tolerations)
	assert.NotContains(t, got.Annotations, policies.StatusAnnotation)
	assert.Empty(t, f.warnings.Take())
}

// TestPodFromTheMutatedTemplateIsLeftAsIs: the ReplicaSet controller creates pods from
// the Deployment's mutated template; the Pod webhook must find nothing to do (no
// duplicate toleration, term or init container). envtest runs no controllers, so the
// ReplicaSet and its Pod are created here exactly as the controllers would; a control
// copy of the pod in a namespace without the webhook shows what an empty patch stores.
func TestPodFromTheMutatedTemplateIsLeftAsIs(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	dep := workloads.Deployment(ns, "web-server")
	require.NoError(t, f.client.Create(ctx, dep))
	f.warnings.Take()

	hash := "7d4b9c6f5"
	tmpl := dep.Spec.Template.DeepCopy()
	tmpl.Labels["pod-template-hash"] = hash
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-server-" + hash, Annotations: map[string]string{"deployment.kubernetes.io/desired-replicas": "3"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: *tmpl},
	}
	require.NoError(t, f.client.Create(ctx, rs))
	podFrom := func(ns string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: rs.Name + "-x2k9p", Labels: tmpl.Labels, Annotations: tmpl.Annotations,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}},
			Spec: *tmpl.Spec.DeepCopy(),
		}
	}
	pod := podFrom(ns)
	require.NoError(t, f.client.Create(ctx, pod))
	assert.Empty(t, f.warnings.Take(), "controller-made pods get no warnings")

	control := podFrom(namespace(t, f, nil))
	control.OwnerReferences = nil
	require.NoError(t, f.client.Create(ctx, control))
	assert.Equal(t, control.Spec, pod.Spec, "the webhook changed nothing in the pod")
	assert.NotEmpty(t, pod.Annotations[policies.StatusAnnotation], "every pod of a Deployment carries its template's record")
	assert.Equal(t, control.Annotations[policies.StatusAnnotation], pod.Annotations[policies.StatusAnnotation], "the Pod webhook left the template's record as it was")
	perKey := map[string]int{}
	for _, tol := range pod.Spec.Tolerations {
		perKey[tol.Key]++
	}
	assert.Equal(t, map[string]int{policies.NotReadyTaint: 1, policies.UnreachableTaint: 1}, perKey, "exactly one toleration per key")
	assert.Len(t, pod.Spec.InitContainers, 1)
	assert.Len(t, pod.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1)
}

// TestPodSecurityRestrictedAdmitsThePod: in a namespace enforcing "restricted" a
// privileged init container would be refused; the pod is admitted with the safe
// sysctls in its securityContext and the client sees why the rest was dropped.
func TestPodSecurityRestrictedAdmitsThePod(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default", policies.PodSecurityEnforceLabel: "restricted"})
	pod := newPod(ns, "web")
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	require.NoError(t, f.client.Create(ctx, pod), "Pod Security restricted accepts the mutated pod")
	assert.Empty(t, pod.Spec.InitContainers, "no privileged init container")
	assert.Len(t, pod.Spec.SecurityContext.Sysctls, 3, "the safe sysctls went into the securityContext")
	assert.Equal(t, ptr.To[int64](30), effectiveSeconds(pod, policies.UnreachableTaint))
	assert.Contains(t, strings.Join(f.warnings.Take(), "\n"), "dropped net.ipv4.tcp_retries2=9", "kubectl shows the user what was left out")
}

// TestPolicyEditsApplyToTheNextAdmission: the webhook reads policies from its cache,
// which follows edits; no restart is needed.
func TestPolicyEditsApplyToTheNextAdmission(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "editable"}}
	require.NoError(t, f.client.Create(ctx, policy))
	t.Cleanup(func() { _ = f.client.Delete(ctx, policy) })
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "editable"})

	dryRun := func(i int) *corev1.Pod {
		pod := newPod(ns, fmt.Sprintf("web-%d", i))
		require.NoError(t, f.client.Create(ctx, pod, client.DryRunAll))
		return pod
	}
	// The policy was created a moment ago: the webhook's API fallback finds it.
	assert.Equal(t, ptr.To[int64](60), effectiveSeconds(dryRun(0), policies.NotReadyTaint))

	policy.Spec.Tolerations.NotReadySeconds = ptr.To[int64](12)
	require.NoError(t, f.client.Update(ctx, policy))
	var seen *int64
	for i, deadline := 1, time.Now().Add(20*time.Second); time.Now().Before(deadline); i++ {
		if seen = effectiveSeconds(dryRun(i), policies.NotReadyTaint); seen != nil && *seen == 12 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	assert.Equal(t, ptr.To[int64](12), seen, "the edited policy is used")
}

// meshWebhook is a second mutating webhook, like a service mesh's injector, that runs
// after ha-injector and puts its own init container and a long unreachable toleration
// in front of the pod's.
func meshWebhook(t *testing.T, ca *certs.CA) *httptest.Server {
	t.Helper()
	kp, _, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(kp.Cert, kp.Key)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		if err := json.Unmarshal(review.Request.Object.Raw, &pod); err == nil {
			pod.Spec.InitContainers = append([]corev1.Container{{Name: "mesh-init", Image: "registry.example/mesh:1"}}, pod.Spec.InitContainers...)
			pod.Spec.Tolerations = append([]corev1.Toleration{{Key: policies.UnreachableTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](600)}}, pod.Spec.Tolerations...)
			mutated, _ := json.Marshal(pod)
			ops, err := jsonpatch.CreatePatch(review.Request.Object.Raw, mutated)
			if err == nil {
				resp.Patch, _ = json.Marshal(ops)
				resp.PatchType = ptr.To(admissionv1.PatchTypeJSONPatch)
			}
		}
		review.Response, review.Request = resp, nil
		_ = json.NewEncoder(w).Encode(review)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// installWebhookConfiguration creates cfg and removes it when the test ends.
func installWebhookConfiguration(t *testing.T, c client.Client, cfg *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, c.Create(ctx, cfg))
	t.Cleanup(func() { _ = c.Delete(ctx, cfg) })
}

// waitFor retries check (bounded): webhook configuration changes reach the API
// server's admission chain asynchronously.
func waitFor(t *testing.T, what string, check func(i int) bool) {
	t.Helper()
	for i, deadline := 0, time.Now().Add(30*time.Second); time.Now().Before(deadline); i++ {
		if check(i) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestReinvocationKeepsThePodCorrect: a webhook that runs after ha-injector adds a 600 s
// unreachable toleration in front of ours; the API server reinvokes ha-injector
// (reinvocationPolicy IfNeeded, from the chart) and the stored pod is still evicted
// after 30 s, with one ha-sysctl init container next to the mesh's.
func TestReinvocationKeepsThePodCorrect(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	mesh := meshWebhook(t, f.webhook.CA)
	installWebhookConfiguration(t, f.client, &admissionregistrationv1.MutatingWebhookConfiguration{
		// Named after ha-injector's configuration, so the API server calls it second.
		ObjectMeta: metav1.ObjectMeta{Name: "zz-e2e-mesh"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "mesh.e2e.example",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(mesh.URL + "/inject"), CABundle: f.webhook.CA.PEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"e2e-mesh": "true"}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
		}},
	})
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default", "e2e-mesh": "true"})
	var pod *corev1.Pod
	waitFor(t, "the mesh webhook to take effect", func(i int) bool {
		pod = newPod(ns, fmt.Sprintf("web-%d", i))
		require.NoError(t, f.client.Create(ctx, pod))
		return len(pod.Spec.InitContainers) > 0 && pod.Spec.InitContainers[0].Name == "mesh-init"
	})
	checkInjected(t, pod)
	for _, tol := range pod.Spec.Tolerations {
		if tol.Key == policies.UnreachableTaint && tol.TolerationSeconds != nil {
			assert.LessOrEqual(t, *tol.TolerationSeconds, int64(30), "the mesh's 600 s toleration was shortened on reinvocation")
		}
	}
	assert.Equal(t, "mesh-init", pod.Spec.InitContainers[0].Name)
}

// TestWebhookDownFailurePolicies: with the webhook unreachable, the chart's default
// failurePolicy Ignore lets pods through unchanged; with failurePolicy Fail pods in
// opted-in namespaces are refused, but kube-system stays exempt even when labelled.
func TestWebhookDownFailurePolicies(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	// The webhook is "down": something accepts connections on its port and hangs up
	// before TLS, so every call fails; counting the connections shows it was called.
	down, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = down.Close() })
	var calls atomic.Int32
	go func() {
		for {
			conn, err := down.Accept()
			if err != nil {
				return
			}
			calls.Add(1)
			_ = conn.Close()
		}
	}()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	chart, err := chartrender.Load(root)
	require.NoError(t, err)

	for _, failurePolicy := range []string{"Ignore", "Fail"} {
		t.Run(failurePolicy, func(t *testing.T) {
			r, err := chartrender.Render(chart, localwebhook.ProvidedValues(map[string]any{
				"webhook": map[string]any{"failurePolicy": failurePolicy},
			}), chartrender.Options{})
			require.NoError(t, err)
			cfg, err := r.LocalWebhookConfiguration("https://"+down.Addr().String(), f.webhook.CA.PEM)
			require.NoError(t, err)
			// A second installation whose server is down, limited to this test's namespaces.
			scope := "e2e-down-" + strings.ToLower(failurePolicy)
			cfg.Name = "ha-injector-" + scope
			for i := range cfg.Webhooks {
				sel := cfg.Webhooks[i].NamespaceSelector
				sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{Key: scope, Operator: metav1.LabelSelectorOpExists})
			}
			if failurePolicy == "Fail" {
				// kube-system labelled as if it had opted in, and in this installation's scope,
				// before the configuration is installed, so the API server has seen the labels
				// by the time the configuration is in effect.
				var kubeSystem corev1.Namespace
				require.NoError(t, f.client.Get(ctx, client.ObjectKey{Name: metav1.NamespaceSystem}, &kubeSystem))
				before := kubeSystem.DeepCopy()
				kubeSystem.Labels[policies.PolicyLabel] = "default"
				kubeSystem.Labels[scope] = ""
				require.NoError(t, f.client.Patch(ctx, &kubeSystem, client.MergeFrom(before)))
				t.Cleanup(func() {
					var now corev1.Namespace
					if f.client.Get(ctx, client.ObjectKey{Name: metav1.NamespaceSystem}, &now) == nil {
						patched := now.DeepCopy()
						delete(patched.Labels, policies.PolicyLabel)
						delete(patched.Labels, scope)
						_ = f.client.Patch(ctx, patched, client.MergeFrom(&now))
					}
				})
			}
			installWebhookConfiguration(t, f.client, cfg)
			ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default", scope: ""})

			if failurePolicy == "Ignore" {
				calls.Store(0)
				waitFor(t, "the unreachable webhook to be called", func(i int) bool {
					pod := newPod(ns, fmt.Sprintf("web-%d", i))
					require.NoError(t, f.client.Create(ctx, pod, client.DryRunAll), "failurePolicy Ignore never blocks a pod")
					return calls.Load() > 0
				})
				return
			}
			waitFor(t, "the unreachable webhook to refuse pods", func(i int) bool {
				return f.client.Create(ctx, newPod(ns, fmt.Sprintf("web-%d", i)), client.DryRunAll) != nil
			})
			before := calls.Load()
			require.NoError(t, f.client.Create(ctx, newPod(metav1.NamespaceSystem, "e2e-exempt"), client.DryRunAll), "kube-system is exempt even with failurePolicy Fail")
			assert.Equal(t, before, calls.Load(), "the API server did not even call the webhook for kube-system")
		})
	}
}

// TestCertificateRotationUnderLoad: the serving certificate is replaced on disk (as
// kubelet does when cert-manager renews the Secret) while pods are being created; every
// pod is still mutated (with failurePolicy Ignore a failed call would show as a pod
// without the injections), and the new certificate is served.
func TestCertificateRotationUnderLoad(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})

	var created, failed atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				pod := newPod(ns, fmt.Sprintf("web-%d-%d", w, i))
				if err := f.client.Create(ctx, pod); err != nil {
					failed.Add(1)
					continue
				}
				created.Add(1)
				if !checkInjected(t, pod) {
					failed.Add(1)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	kp, serial, err := f.webhook.CA.Issue([]string{"127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	require.NoError(t, kp.WriteFiles(f.webhook.Dir, "tls.crt", "tls.key"))
	served := func() bool {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(f.webhook.CA.PEM)
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", f.webhook.Server.Config.WebhookPort), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		if err != nil {
			return false
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(serial) == 0
	}
	for deadline := time.Now().Add(20 * time.Second); !served() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // keep the load on after the switch
	close(stop)
	wg.Wait()
	assert.True(t, served(), "the rotated certificate is served without a restart")
	assert.Zero(t, failed.Load(), "no pod failed or missed its injections across the rotation")
	assert.Greater(t, created.Load(), int32(10))
}

// TestManyPodsAtOnce: 500 pods created concurrently through the API server are all
// stored, and all carry the injections.
func TestManyPodsAtOnce(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	fast := rest.CopyConfig(f.restConfig)
	fast.QPS, fast.Burst = 1000, 1000
	c, err := client.New(fast, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)

	const total, workers = 500, 25
	next := atomic.Int32{}
	errs := make(chan error, total)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= total; i = next.Add(1) {
				errs <- c.Create(ctx, newPod(ns, fmt.Sprintf("web-%03d", i)))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var pods corev1.PodList
	require.NoError(t, c.List(ctx, &pods, client.InNamespace(ns)))
	require.Len(t, pods.Items, total)
	bad := 0
	for i := range pods.Items {
		if !checkInjected(t, &pods.Items[i]) {
			bad++
		}
	}
	assert.Zero(t, bad)
}
