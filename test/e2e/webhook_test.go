package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
	"github.com/ha-injector/ha-injector/webhook"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if err := shared.webhook.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	testenv.Stop()
	os.Exit(code)
}

type fixture struct {
	client     client.Client
	warnings   *controlplane.Warnings
	restConfig *rest.Config
	// webhook is `serve` running in this process, its CA and its certificate's folder.
	webhook *localwebhook.Fixture
}

var (
	namespaces atomic.Int32
	setupOnce  sync.Once
	shared     *fixture
	setupErr   error
)

// setup starts the API server, installs a webhook configuration pointing at
// `serve` running in this process, and creates the policies.
func setup(t *testing.T) *fixture {
	t.Helper()
	cfg := testenv.Start(t)
	setupOnce.Do(func() { shared, setupErr = install(cfg) })
	require.NoError(t, setupErr)
	shared.warnings.Take()
	return shared
}

func install(restCfg *rest.Config) (*fixture, error) {
	w := &controlplane.Warnings{}
	clientCfg := rest.CopyConfig(restCfg)
	clientCfg.WarningHandler = w
	c, err := client.New(clientCfg, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return nil, err
	}
	// What the chart installs, with the webhooks pointed at this process, and an Audit
	// policy next to the default one.
	wh, err := localwebhook.Serve(context.Background(), restCfg, localwebhook.Options{
		CAName: "ha-injector-e2e-ca",
		Values: map[string]any{"policies": map[string]any{"audit": map[string]any{"mode": "Audit"}}},
	})
	if err != nil {
		return nil, err
	}
	return &fixture{client: c, warnings: w, restConfig: clientCfg, webhook: wh}, nil
}

func createNamespace(ctx context.Context, c client.Client, name string, labels map[string]string) error {
	return c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
}

func newPod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
}

func namespace(t *testing.T, f *fixture, labels map[string]string) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = fmt.Sprintf("%s-%d", name, namespaces.Add(1))
	require.NoError(t, createNamespace(context.Background(), f.client, name, labels))
	return name
}

func tolerationSeconds(pod *corev1.Pod) map[string][]int64 {
	out := map[string][]int64{}
	for _, tol := range pod.Spec.Tolerations {
		if tol.TolerationSeconds != nil {
			out[tol.Key] = append(out[tol.Key], *tol.TolerationSeconds)
		}
	}
	return out
}

func TestDeploymentIsMutatedThroughTheAPIServer(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	dep := workloads.Deployment(ns, "web-server")
	require.NoError(t, f.client.Create(ctx, dep))
	assert.NotEmpty(t, f.warnings.Take(), "kubectl would print the decisions")

	var got appsv1.Deployment
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(dep), &got))
	spec := got.Spec.Template.Spec
	require.NotNil(t, spec.Affinity)
	terms := spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
	require.Len(t, terms, 1)
	assert.Equal(t, []string{"pod-template-hash"}, terms[0].PodAffinityTerm.MatchLabelKeys)
	assert.Equal(t, "kubernetes.io/hostname", terms[0].PodAffinityTerm.TopologyKey)
	require.NotEmpty(t, spec.InitContainers)
	assert.Equal(t, policies.SysctlContainerName, spec.InitContainers[0].Name)
	assert.True(t, *spec.InitContainers[0].SecurityContext.Privileged)
	var status policies.Record
	require.NoError(t, json.Unmarshal([]byte(got.Annotations[policies.StatusAnnotation]), &status))
	assert.Equal(t, []policies.Feature{policies.FeatureAntiAffinity, policies.FeatureTolerations, policies.FeatureSysctls}, status.Applied)

	// An update that changes the image goes through the webhook again and
	// changes nothing else: the template stays compliant, nothing is duplicated.
	got.Spec.Template.Spec.Containers[0].Image = "nginx:1.28"
	require.NoError(t, f.client.Update(ctx, &got))
	var updated appsv1.Deployment
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(dep), &updated))
	assert.Equal(t, "nginx:1.28", updated.Spec.Template.Spec.Containers[0].Image)
	assert.Len(t, updated.Spec.Template.Spec.InitContainers, 1)
	assert.Len(t, updated.Spec.Template.Spec.Tolerations, 2)
	assert.Len(t, updated.Spec.Template.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1)
}

// TestPodTolerationsAreShortenedAfterDefaultTolerationSeconds: the API
// server's DefaultTolerationSeconds plugin adds 300s tolerations before the
// webhook runs; they must come back shortened, one per key.
func TestPodTolerationsAreShortenedAfterDefaultTolerationSeconds(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	pod := newPod(ns, "web")
	require.NoError(t, f.client.Create(ctx, pod))

	var got corev1.Pod
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(pod), &got))
	assert.Equal(t, map[string][]int64{policies.NotReadyTaint: {60}, policies.UnreachableTaint: {30}}, tolerationSeconds(&got))
	assert.Equal(t, policies.SysctlContainerName, got.Spec.InitContainers[0].Name)

	// Without the webhook the same pod gets 300s: the control case.
	plain := namespace(t, f, nil)
	control := newPod(plain, "web")
	require.NoError(t, f.client.Create(ctx, control))
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(control), &got))
	assert.Equal(t, map[string][]int64{policies.NotReadyTaint: {300}, policies.UnreachableTaint: {300}}, tolerationSeconds(&got))
	assert.Empty(t, got.Spec.InitContainers)
	assert.NotContains(t, got.Annotations, policies.StatusAnnotation)
}

// TestPodSecurityBaselineAdmitsTheFallback: Pod Security admission runs
// after the webhook; a privileged init container would be rejected, so the
// webhook must have used the securityContext instead.
func TestPodSecurityBaselineAdmitsTheFallback(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default", policies.PodSecurityEnforceLabel: "baseline"})
	pod := newPod(ns, "web")
	require.NoError(t, f.client.Create(ctx, pod), "Pod Security baseline must accept the mutated pod")

	var got corev1.Pod
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(pod), &got))
	assert.Empty(t, got.Spec.InitContainers)
	require.NotNil(t, got.Spec.SecurityContext)
	assert.Len(t, got.Spec.SecurityContext.Sysctls, 3)
	assert.Contains(t, strings.Join(f.warnings.Take(), "\n"), "dropped net.ipv4.tcp_retries2=9")
}

func TestAuditModeOnlyWarns(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "audit"})
	pod := newPod(ns, "web")
	require.NoError(t, f.client.Create(ctx, pod))
	warned := strings.Join(f.warnings.Take(), "\n")
	assert.Contains(t, warned, "would apply: node.kubernetes.io/not-ready shortened 300s -> 60s")

	var got corev1.Pod
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(pod), &got))
	assert.Empty(t, got.Spec.InitContainers)
	assert.NotContains(t, got.Annotations, policies.StatusAnnotation)
	assert.Equal(t, map[string][]int64{policies.NotReadyTaint: {300}, policies.UnreachableTaint: {300}}, tolerationSeconds(&got))
}

func TestFailsOpenOnAnUnknownPolicy(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "no-such-policy"})
	pod := newPod(ns, "web")
	require.NoError(t, f.client.Create(ctx, pod), "ha-injector's own trouble never blocks a deploy")
	assert.Contains(t, strings.Join(f.warnings.Take(), "\n"), `HAPolicy "no-such-policy"`)
	var got corev1.Pod
	require.NoError(t, f.client.Get(ctx, client.ObjectKeyFromObject(pod), &got))
	assert.Empty(t, got.Spec.InitContainers)
}

func TestOptOutAndDryRun(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})

	optedOut := newPod(ns, "opted-out")
	optedOut.Annotations = map[string]string{policies.InjectAnnotation: "false"}
	require.NoError(t, f.client.Create(ctx, optedOut))
	assert.Empty(t, optedOut.Spec.InitContainers)
	assert.NotContains(t, optedOut.Annotations, policies.StatusAnnotation)

	dry := newPod(ns, "dry")
	require.NoError(t, f.client.Create(ctx, dry, client.DryRunAll))
	assert.Equal(t, policies.SysctlContainerName, dry.Spec.InitContainers[0].Name, "dry runs are mutated like any request")
	err := f.client.Get(ctx, client.ObjectKeyFromObject(dry), &corev1.Pod{})
	assert.True(t, err != nil && strings.Contains(err.Error(), "not found"), "and not persisted: %v", err)
}

// TestPodsFollowTheirDeploymentsOptOut: the Deployment controller copies a
// Deployment's annotations onto its ReplicaSet; a Pod whose ReplicaSet says
// ha-injector.io/inject: "false" is left alone like its Deployment. (envtest
// runs no controllers, so the ReplicaSet and its Pod are created here as the
// controller would.)
func TestPodsFollowTheirDeploymentsOptOut(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	labels := map[string]string{"app": "quiet", "pod-template-hash": "5f6d7c8b9"}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "quiet-5f6d7c8b9", Annotations: map[string]string{
			policies.InjectAnnotation:                   "false",
			"deployment.kubernetes.io/desired-replicas": "3",
		}},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
			},
		},
	}
	require.NoError(t, f.client.Create(ctx, rs))
	f.warnings.Take()

	pod := newPod(ns, "quiet-5f6d7c8b9-abcde")
	pod.Labels = labels
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}
	require.NoError(t, f.client.Create(ctx, pod))
	assert.Empty(t, pod.Spec.InitContainers)
	assert.NotContains(t, pod.Annotations, policies.StatusAnnotation)
	assert.Equal(t, map[string][]int64{policies.NotReadyTaint: {300}, policies.UnreachableTaint: {300}}, tolerationSeconds(pod))
	assert.Empty(t, f.warnings.Take())
}
