// Package convergence runs `kubectl rollout undo` after a policy change against a real
// kube-controller-manager (Deployment and ReplicaSet controllers only, beside envtest's
// kube-apiserver and etcd, as test/podsecurity does), with the chart's webhook
// configuration pointed at `serve` running in this process. No scheduler and no nodes:
// pods stay Pending, which is enough, since what is judged is which ReplicaSets the
// Deployment controller keeps, creates and scales.
package convergence

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/failover"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
	"github.com/ha-injector/ha-injector/webhook"
)

// waitTimeout bounds every wait for a controller; each takes about a second.
const waitTimeout = 30 * time.Second

// annotationsToSkip are the Deployment annotations `kubectl rollout undo` neither takes
// from the ReplicaSet nor overwrites (k8s.io/kubectl/pkg/polymorphichelpers/rollback.go).
var annotationsToSkip = map[string]bool{
	corev1.LastAppliedConfigAnnotation:          true,
	"deployment.kubernetes.io/revision":         true,
	"deployment.kubernetes.io/revision-history": true,
	"deployment.kubernetes.io/desired-replicas": true,
	"deployment.kubernetes.io/max-replicas":     true,
	"deprecated.deployment.rollback.to":         true,
}

// TestRolloutUndoAfterAPolicyChangeReusesTheOldReplicaSet: revision 1 is injected under
// a policy with a 30 s not-ready toleration; the policy is relaxed to 120 s and a new
// image makes revision 2 (a second ReplicaSet, 120 s). `kubectl rollout undo` sends
// revision 1's template back: the webhook must leave it as sent (re-injecting it under
// the current policy would make a third ReplicaSet), so the Deployment controller finds
// revision 1's ReplicaSet and scales it back up.
func TestRolloutUndoAfterAPolicyChangeReusesTheOldReplicaSet(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()

	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "rollback"}}
	policy.Spec.Tolerations.NotReadySeconds = ptr.To[int64](30)
	require.NoError(t, c.client.Create(ctx, policy))
	const ns = "rollback"
	require.NoError(t, c.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{policies.PolicyLabel: policy.Name}}}))
	c.waitNotReady(t, ns, 30)

	dep := workloads.Deployment(ns, "web", workloads.Replicas(2), workloads.Image("nginx:1.27"))
	require.NoError(t, c.client.Create(ctx, dep))
	require.Equal(t, ptr.To[int64](30), notReadySeconds(&dep.Spec.Template.Spec), "revision 1 is injected under the policy as it was")
	rev1 := c.waitReplicaSets(t, dep, 1)[0]
	t.Logf("revision 1: ReplicaSet %s", rev1.Name)

	// The policy is relaxed; the next template change (a new image) gets it.
	require.NoError(t, c.client.Get(ctx, client.ObjectKeyFromObject(policy), policy))
	policy.Spec.Tolerations.NotReadySeconds = ptr.To[int64](120)
	require.NoError(t, c.client.Update(ctx, policy))
	c.waitNotReady(t, ns, 120)
	// The Deployment controller writes the status meanwhile: read again on a conflict.
	var stored appsv1.Deployment
	require.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(dep), &stored); err != nil {
			return err
		}
		stored.Spec.Template.Spec.Containers[0].Image = "nginx:1.28"
		return c.client.Update(ctx, &stored)
	}))
	require.Equal(t, ptr.To[int64](120), notReadySeconds(&stored.Spec.Template.Spec), "revision 2 follows the relaxed policy")
	sets := c.waitReplicaSets(t, dep, 2)
	var rev2 string
	for _, rs := range sets {
		if rs.Name != rev1.Name {
			rev2 = rs.Name
		}
	}
	t.Logf("revision 2: ReplicaSet %s", rev2)

	// kubectl rollout undo: revision 1's ReplicaSet template without its
	// pod-template-hash label, and its annotations, as a JSON patch.
	var rs1 appsv1.ReplicaSet
	require.NoError(t, c.client.Get(ctx, client.ObjectKeyFromObject(&rev1), &rs1))
	tmpl := rs1.Spec.Template.DeepCopy()
	delete(tmpl.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	require.NoError(t, c.client.Get(ctx, client.ObjectKeyFromObject(dep), &stored))
	annotations := map[string]string{}
	for k := range annotationsToSkip {
		if v, ok := stored.Annotations[k]; ok {
			annotations[k] = v
		}
	}
	for k, v := range rs1.Annotations {
		if !annotationsToSkip[k] {
			annotations[k] = v
		}
	}
	patch, err := json.Marshal([]map[string]any{
		{"op": "replace", "path": "/spec/template", "value": tmpl},
		{"op": "replace", "path": "/metadata/annotations", "value": annotations},
	})
	require.NoError(t, err)
	undone := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: dep.Name}}
	require.NoError(t, c.client.Patch(ctx, undone, client.RawPatch(types.JSONPatchType, patch)))
	assert.Equal(t, *tmpl, undone.Spec.Template, "the rollback's template is stored as sent")
	assert.Equal(t, ptr.To[int64](30), notReadySeconds(&undone.Spec.Template.Spec), "revision 1's injection, not the current policy's")

	// Once the controller has observed the rollback (it finds or creates the new
	// ReplicaSet before it updates the status), it has reused revision 1's ReplicaSet.
	c.poll(t, "the Deployment controller to observe the rollback", func() (bool, error) {
		var d appsv1.Deployment
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(dep), &d); err != nil {
			return false, err
		}
		return d.Status.ObservedGeneration >= d.Generation, nil
	})
	var list appsv1.ReplicaSetList
	require.NoError(t, c.client.List(ctx, &list, client.InNamespace(ns)))
	names := []string{}
	for _, rs := range list.Items {
		names = append(names, rs.Name)
		if rs.Name == rev1.Name {
			assert.Equal(t, "3", rs.Annotations["deployment.kubernetes.io/revision"], "revision 1's ReplicaSet is revision 3 now")
		}
	}
	require.ElementsMatch(t, []string{rev1.Name, rev2}, names, "no third ReplicaSet")
	c.poll(t, "revision 1's ReplicaSet to be scaled back up", func() (bool, error) {
		var r appsv1.ReplicaSet
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(&rev1), &r); err != nil {
			return false, err
		}
		return ptr.Deref(r.Spec.Replicas, 0) == *dep.Spec.Replicas, nil
	})
}

func notReadySeconds(spec *corev1.PodSpec) *int64 {
	for _, tol := range spec.Tolerations {
		if tol.Key == policies.NotReadyTaint && tol.Effect == corev1.TaintEffectNoExecute {
			return tol.TolerationSeconds
		}
	}
	return nil
}

type cluster struct {
	client client.Client
	dir    string
	kcm    *proc.Process
}

// startCluster starts etcd and kube-apiserver (envtest, the HAPolicy CRD installed),
// kube-controller-manager with the Deployment and ReplicaSet controllers, and serve
// with the chart's webhook configuration and HAPolicies. Everything stops when the
// test ends.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	bins, err := failover.FindBinaries(root)
	require.NoError(t, err, "building kube-controller-manager (hack/cluster.sh)")
	dir := t.TempDir()

	env, err := controlplane.New(root)
	require.NoError(t, err)
	cfg, err := env.Start()
	require.NoError(t, err, "starting kube-apiserver and etcd")
	t.Cleanup(func() { assert.NoError(t, env.Stop(), "stopping kube-apiserver and etcd") })
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = rest.NoWarnings{}
	c := &cluster{dir: dir}
	c.client, err = client.New(cfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	c.startControllerManager(t, env, bins.ControllerManager)

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", c.kcm.Log, proc.Tail(c.kcm.Log, 30))
		}
	})
	localwebhook.ServeT(t, cfg, localwebhook.Options{CAName: "ha-injector-convergence-ca", LogFile: filepath.Join(dir, "ha-injector.log")})
	return c
}

func (c *cluster) startControllerManager(t *testing.T, env *envtest.Environment, bin string) {
	t.Helper()
	kcm, err := controlplane.StartControllerManager(env, c.dir, bin)
	require.NoError(t, err)
	c.kcm = kcm
	t.Cleanup(func() { assert.NoError(t, c.kcm.Stop(15*time.Second)) })
}

// waitNotReady waits until a pod created (dry run) in ns gets a not-ready toleration of
// seconds: serve's caches hold the namespace and its policy as the test left them.
func (c *cluster) waitNotReady(t *testing.T, ns string, seconds int64) {
	t.Helper()
	i := 0
	c.poll(t, fmt.Sprintf("pods in %s to get a %d s not-ready toleration", ns, seconds), func() (bool, error) {
		i++
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("probe-%d", i)},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
		}
		if err := c.client.Create(context.Background(), pod, client.DryRunAll); err != nil {
			return false, err
		}
		s := notReadySeconds(&pod.Spec)
		return s != nil && *s == seconds, nil
	})
}

// waitReplicaSets waits until the Deployment has n ReplicaSets and the controller has
// observed its latest generation, and returns them.
func (c *cluster) waitReplicaSets(t *testing.T, dep *appsv1.Deployment, n int) []appsv1.ReplicaSet {
	t.Helper()
	var list appsv1.ReplicaSetList
	c.poll(t, fmt.Sprintf("%d ReplicaSet(s) of %s", n, dep.Name), func() (bool, error) {
		var d appsv1.Deployment
		if err := c.client.Get(context.Background(), client.ObjectKeyFromObject(dep), &d); err != nil {
			return false, err
		}
		if err := c.client.List(context.Background(), &list, client.InNamespace(dep.Namespace)); err != nil {
			return false, err
		}
		return d.Status.ObservedGeneration >= d.Generation && len(list.Items) == n, nil
	})
	return list.Items
}

// poll calls check every 200 ms until it returns true, failing the test on an error, on
// waitTimeout, or when the controller manager has exited.
func (c *cluster) poll(t *testing.T, what string, check func() (bool, error)) {
	t.Helper()
	for deadline := time.Now().Add(waitTimeout); ; {
		ok, err := check()
		require.NoError(t, err, "waiting for %s", what)
		if ok {
			return
		}
		require.NoError(t, c.kcm.Alive(), "waiting for %s", what)
		if time.Now().After(deadline) {
			require.Failf(t, "timed out", "waiting %s for %s", waitTimeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
