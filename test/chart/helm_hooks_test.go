package chart

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	kptr "k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ha-injector/ha-injector/internal/doctor"
	"github.com/ha-injector/ha-injector/test/failover"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/proc"
)

const (
	hooksRelease   = "ha-injector"
	hooksNamespace = "ha-injector"
	hooksNode      = "node-1"
	// unpullable is a registry that does not resolve: the fake kubelet below fails every
	// pull from it the way containerd does.
	unpullable = "registry.invalid/ha-injector"
	// hooksTimeout is Helm's --timeout for the install whose hook cannot run.
	hooksTimeout = 20 * time.Second
)

// TestHelmInstallWithAnUnpullableImage runs the chart's hooks for real: Helm's install
// (the Helm v4 SDK, hooks on) against an API server of its own, with
// kube-controller-manager's Job controller and garbage collector, and this test in the
// kubelet's part (it binds the pods to a node, writes their status through the status
// subresource and records the kubelet's events). With an image no node can pull, Helm
// fails after its timeout saying only that; meanwhile `doctor` names the image and the
// pull error, and still does once Helm deleted the failed hook. `helm uninstall` then
// leaves nothing of the release: no hook Job, ServiceAccount, RBAC or ConfigMap, no pod,
// no webhook configuration. With an image that runs, the hook completes, the release is
// deployed, and its uninstall leaves nothing either.
func TestHelmInstallWithAnUnpullableImage(t *testing.T) {
	// envtest logs through controller-runtime's logger, which nothing here reads.
	ctrllog.SetLogger(logr.Discard())
	ctx := context.Background()
	bins, err := failover.FindBinaries(repoRoot)
	require.NoError(t, err, "building kube-controller-manager (hack/cluster.sh)")
	env, err := controlplane.New(repoRoot)
	require.NoError(t, err)
	cfg, err := env.Start()
	require.NoError(t, err, "starting kube-apiserver and etcd")
	t.Cleanup(func() { assert.NoError(t, env.Stop()) })
	dir := t.TempDir()
	kcm, err := controlplane.StartControllerManager(env, dir, bins.ControllerManager, "job-controller", "garbage-collector-controller")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the end of kube-controller-manager's log:\n%s", proc.Tail(kcm.Log, 30))
		}
		assert.NoError(t, kcm.Stop(15*time.Second))
	})
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = rest.NoWarnings{}
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	_, err = cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: hooksNode}}, metav1.CreateOptions{})
	require.NoError(t, err)
	kubeletCtx, stopKubelet := context.WithCancel(ctx)
	kubeletDone := make(chan struct{})
	go func() { defer close(kubeletDone); fakeKubelet(kubeletCtx, t, cs) }()
	t.Cleanup(func() { stopKubelet(); <-kubeletDone })

	kubeconfig := filepath.Join(dir, "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, env.KubeConfig, 0o600))
	helm := helmOn(t, kubeconfig)
	chrt, err := chartrender.Load(repoRoot)
	require.NoError(t, err)
	values := func(repository string) map[string]any {
		return map[string]any{
			"image":       map[string]any{"repository": repository},
			"certManager": map[string]any{"enabled": false},
			"certs":       map[string]any{"mode": "selfManaged"},
		}
	}
	image := unpullable + ":" + chrt.Metadata.AppVersion
	install := func(repository string, timeout time.Duration) (*releasev1.Release, error) {
		i := action.NewInstall(helm)
		i.ReleaseName, i.Namespace, i.CreateNamespace = hooksRelease, hooksNamespace, true
		i.WaitStrategy, i.Timeout = kube.HookOnlyStrategy, timeout
		r, err := i.RunWithContext(ctx, chrt, values(repository))
		rel, _ := r.(*releasev1.Release)
		return rel, err
	}
	uninstall := func() {
		u := action.NewUninstall(helm)
		u.WaitStrategy, u.Timeout = kube.StatusWatcherStrategy, 60*time.Second
		_, err := u.Run(hooksRelease)
		require.NoError(t, err, "helm uninstall")
	}
	releasePods := func() doctor.Check {
		r, err := doctor.Run(ctx, cfg, doctor.Options{ReleaseNamespace: hooksNamespace})
		require.NoError(t, err)
		for _, c := range r.Checks {
			if c.Name == "release-pods" {
				return c
			}
		}
		t.Fatalf("no release-pods check in %+v", r.Checks)
		return doctor.Check{}
	}

	// --- an install whose CRD hook cannot pull its image ---
	start := time.Now()
	type result struct {
		rel *releasev1.Release
		err error
	}
	done := make(chan result, 1)
	go func() {
		rel, err := install(unpullable, hooksTimeout)
		done <- result{rel, err}
	}()
	// While Helm waits, doctor says why: the pod, the image, the registry's answer.
	var during doctor.Check
	for deadline := time.Now().Add(hooksTimeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if during = releasePods(); during.Status == doctor.Fail {
			break
		}
	}
	t.Logf("doctor while Helm waits: %s: %s", during.Status, during.Message)
	assert.Equal(t, doctor.Fail, during.Status)
	assert.Contains(t, during.Message, fmt.Sprintf(`(the chart's CRD hook): container crds cannot pull image %q: ErrImagePull: `, image))
	assert.Contains(t, during.Message, "lookup registry.invalid: no such host")
	res := <-done
	require.Error(t, res.err, "helm install with an image no node can pull")
	t.Logf("helm install failed after %v: %v", time.Since(start).Round(time.Second), res.err)
	assert.Contains(t, res.err.Error(), "failed pre-install", "Helm says which hook, not why")
	assert.NotContains(t, res.err.Error(), "registry.invalid", "Helm does not name the image: doctor does")
	require.NotNil(t, res.rel)
	assert.Equal(t, rcommon.StatusFailed, res.rel.Info.Status)

	// Helm deleted the failed hook and what it used (hook-failed); the garbage collector
	// the Job's pods.
	for _, h := range res.rel.Hooks {
		assert.False(t, exists(t, cfg, h.Kind, hooksNamespace, h.Name), "hook %s %s left behind after it failed", h.Kind, h.Name)
	}
	t.Logf("%v: hooks gone", time.Since(start).Round(time.Second))
	waitNoPods(t, cs)
	after := releasePods()
	assert.Equal(t, doctor.Fail, after.Status, "after Helm deleted the hook, its events still tell")
	assert.Contains(t, after.Message, fmt.Sprintf("(deleted since, seen in its events): Failed to pull image %q", image))
	assert.Contains(t, after.Message, "no such host")

	t.Logf("%v: hooks and pods gone", time.Since(start).Round(time.Second))
	uninstall()
	t.Logf("%v: uninstalled", time.Since(start).Round(time.Second))
	assertNothingLeft(t, cfg, cs)

	// --- an install whose hook runs: deployed, then uninstalled without a trace ---
	start = time.Now()
	rel, err := install("ghcr.io/ha-injector/ha-injector", 60*time.Second)
	require.NoError(t, err, "helm install with an image the node runs")
	t.Logf("%v: installed", time.Since(start).Round(time.Second))
	assert.Equal(t, rcommon.StatusDeployed, rel.Info.Status)
	require.NotEmpty(t, rel.Hooks)
	for _, h := range rel.Hooks {
		assert.Equal(t, releasev1.HookPhaseSucceeded, h.LastRun.Phase, "%s %s", h.Kind, h.Name)
		assert.False(t, exists(t, cfg, h.Kind, hooksNamespace, h.Name), "hook %s %s left behind after it succeeded", h.Kind, h.Name)
	}
	assert.True(t, exists(t, cfg, "MutatingWebhookConfiguration", "", hooksRelease), "the release's webhook configuration")
	waitNoPods(t, cs)
	t.Logf("%v: pods gone", time.Since(start).Round(time.Second))
	uninstall()
	t.Logf("%v: uninstalled", time.Since(start).Round(time.Second))
	assert.False(t, exists(t, cfg, "MutatingWebhookConfiguration", "", hooksRelease), "uninstall deleted the webhook configuration")
	assertNothingLeft(t, cfg, cs)
}

// helmOn is `helm --kubeconfig kubeconfig -n <hooksNamespace>`.
func helmOn(t *testing.T, kubeconfig string) *action.Configuration {
	t.Helper()
	cacheDir, ns := t.TempDir(), hooksNamespace
	getter := genericclioptions.NewConfigFlags(false)
	getter.KubeConfig, getter.CacheDir, getter.Namespace = &kubeconfig, &cacheDir, &ns
	helm := action.NewConfiguration(action.ConfigurationSetLogger(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	require.NoError(t, helm.Init(getter, ns, "secret"))
	return helm
}

// fakeKubelet plays the kubelet of one node for the release namespace until ctx ends:
// it binds each new pod to the node (the scheduler's part), then writes its status
// through the status subresource: an image from the unpullable registry fails to pull
// (the waiting state and the Failed event of pkg/kubelet/images, with containerd's error
// for a host that does not resolve), any other image runs to completion; a pod being
// deleted is removed once "stopped", as the kubelet confirms a deletion.
func fakeKubelet(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	handled := map[string]bool{}
	for ctx.Err() == nil {
		pods, err := cs.CoreV1().Pods(hooksNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			if ctx.Err() == nil && !apierrors.IsNotFound(err) {
				t.Logf("fake kubelet: %v", err)
			}
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if err := kubeletStep(ctx, cs, p, handled); err != nil && ctx.Err() == nil {
				t.Logf("fake kubelet, pod %s: %v", p.Name, err)
			}
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

func kubeletStep(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, handled map[string]bool) error {
	pods := cs.CoreV1().Pods(p.Namespace)
	switch {
	case p.DeletionTimestamp != nil:
		return ignoreNotFound(pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: kptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &p.UID}}))
	case p.Spec.NodeName == "":
		return ignoreNotFound(pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: p.Name, UID: p.UID},
			Target: corev1.ObjectReference{Kind: "Node", Name: hooksNode}}, metav1.CreateOptions{}))
	case handled[string(p.UID)]:
		return nil
	}
	handled[string(p.UID)] = true
	c := p.Spec.Containers[0]
	now := metav1.Now()
	status := p.Status.DeepCopy()
	status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}}
	status.StartTime = &now
	if strings.HasPrefix(c.Image, unpullable+":") {
		pullErr := fmt.Sprintf(`rpc error: code = Unknown desc = failed to pull and unpack image %q: failed to resolve reference %q: failed to do request: Head "https://registry.invalid/v2/ha-injector/manifests/%s": dial tcp: lookup registry.invalid: no such host`,
			c.Image, c.Image, strings.TrimPrefix(c.Image, unpullable+":"))
		status.Phase = corev1.PodPending
		status.ContainerStatuses = []corev1.ContainerStatus{{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: pullErr}}}}
		_, err := cs.CoreV1().Events(p.Namespace).Create(ctx, &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: p.Name + "."},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID,
				FieldPath: "spec.containers{" + c.Name + "}"},
			Type: corev1.EventTypeWarning, Reason: "Failed", Message: fmt.Sprintf("Failed to pull image %q: %s", c.Image, pullErr),
			Source: corev1.EventSource{Component: "kubelet", Host: hooksNode}, FirstTimestamp: now, LastTimestamp: now, Count: 1,
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
	} else {
		status.Phase = corev1.PodSucceeded
		status.ContainerStatuses = []corev1.ContainerStatus{{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}}}}
	}
	p = p.DeepCopy()
	p.Status = *status
	_, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return ignoreNotFound(err)
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitNoPods waits (bounded) until the release namespace has no pod left.
func waitNoPods(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	var pods *corev1.PodList
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		var err error
		pods, err = cs.CoreV1().Pods(hooksNamespace).List(context.Background(), metav1.ListOptions{})
		require.NoError(t, err)
		if len(pods.Items) == 0 {
			return
		}
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	t.Fatalf("pods left in %s after 60 s: %v", hooksNamespace, names)
}

// exists reports whether an object of kind (any served group) named name exists, in ns
// when the kind is namespaced.
func exists(t *testing.T, cfg *rest.Config, kind, ns, name string) bool {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	lists, err := discovery.ServerPreferredResources(dc)
	require.NoError(t, err)
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		require.NoError(t, err)
		for _, r := range l.APIResources {
			if r.Kind != kind || strings.Contains(r.Name, "/") {
				continue
			}
			ri := dyn.Resource(gv.WithResource(r.Name))
			var err error
			if r.Namespaced {
				_, err = ri.Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
			} else {
				_, err = ri.Get(context.Background(), name, metav1.GetOptions{})
			}
			if apierrors.IsNotFound(err) {
				return false
			}
			require.NoError(t, err, "get %s %s", kind, name)
			return true
		}
	}
	t.Fatalf("the API server serves no kind %s", kind)
	return false
}

// assertNothingLeft checks that no object of any listable kind, cluster-scoped or in the
// release namespace, carries the release's app.kubernetes.io/instance label, that no pod
// is left there, and that Helm kept no record of the release.
func assertNothingLeft(t *testing.T, cfg *rest.Config, cs kubernetes.Interface) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	lists, err := discovery.ServerPreferredResources(dc)
	require.NoError(t, err)
	selector := metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + hooksRelease}
	kinds := 0
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		require.NoError(t, err)
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") {
				continue
			}
			kinds++
			ri := dyn.Resource(gv.WithResource(r.Name))
			var err error
			var names []string
			if r.Namespaced {
				list, e := ri.Namespace(hooksNamespace).List(context.Background(), selector)
				err = e
				if e == nil {
					for _, o := range list.Items {
						names = append(names, o.GetName())
					}
				}
			} else {
				list, e := ri.List(context.Background(), selector)
				err = e
				if e == nil {
					for _, o := range list.Items {
						names = append(names, o.GetName())
					}
				}
			}
			require.NoError(t, err, "list %s", r.Name)
			assert.Empty(t, names, "%s of the release left after helm uninstall", r.Name)
		}
	}
	t.Logf("no object of the release among %d kinds", kinds)
	waitNoPods(t, cs)
	secrets, err := cs.CoreV1().Secrets(hooksNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "owner=helm,name=" + hooksRelease})
	require.NoError(t, err)
	assert.Empty(t, secrets.Items, "Helm's record of the release")
}
