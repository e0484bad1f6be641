package webhook

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unique"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

// TestCacheKeepsOnlyWhatTheHandlersRead starts the informers and the
// ReplicaSets index serve starts, with its options, against a real API
// server, and reads back what they hold for a namespace, a node and a
// ReplicaSet carrying the annotations the Deployment controller copies.
func TestCacheKeepsOnlyWhatTheHandlersRead(t *testing.T) {
	restCfg := testenv.Start(t)
	c, err := client.New(restCfg, client.Options{Scheme: Scheme})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	big := strings.Repeat("x", 2048)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        "cache-team",
		Labels:      map[string]string{policies.PolicyLabel: "default", "pod-security.kubernetes.io/enforce": "baseline"},
		Annotations: map[string]string{corev1.LastAppliedConfigAnnotation: big},
	}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        "cache-node",
		Labels:      map[string]string{corev1.LabelTopologyZone: "zone-a"},
		Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0", "csi.volume.kubernetes.io/nodeid": big},
	}}
	labels := map[string]string{"app": "web"}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns.Name, Name: "web-5d8f7c6b9", Labels: labels,
			Annotations: map[string]string{
				policies.DesiredReplicasAnnotation:   "3",
				"deployment.kubernetes.io/revision":  "2",
				policies.InjectAnnotation:            "false",
				policies.StatusAnnotation:            big[:600],
				corev1.LastAppliedConfigAnnotation:   big,
				"argocd.argoproj.io/tracking-id":     "team:apps/Deployment:cache-team/web",
				"deployment.kubernetes.io/max-surge": "1",
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: types.UID("6f1c2a9e-0000-4000-8000-000000000001"), Controller: ptr.To(true)}},
		},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
			},
		},
	}
	for _, obj := range []client.Object{ns, node, rs} {
		require.NoError(t, c.Create(ctx, obj))
	}

	opts := cacheOptions()
	opts.Scheme = Scheme
	informers, err := cache.New(restCfg, opts)
	require.NoError(t, err)
	for _, obj := range watched() {
		_, err := informers.GetInformer(ctx, obj)
		require.NoError(t, err)
	}
	go func() { _ = informers.Start(ctx) }()
	require.True(t, informers.WaitForCacheSync(ctx))

	cachedNS := metadataOf(namespaceMetadata.GroupVersionKind())
	require.NoError(t, informers.Get(ctx, client.ObjectKeyFromObject(ns), cachedNS))
	assert.Equal(t, "default", cachedNS.Labels[policies.PolicyLabel])
	assert.Equal(t, "baseline", cachedNS.Labels["pod-security.kubernetes.io/enforce"])
	assert.Nil(t, cachedNS.Annotations)
	assert.Nil(t, cachedNS.ManagedFields)

	cachedNode := metadataOf(nodeMetadata.GroupVersionKind())
	require.NoError(t, informers.Get(ctx, client.ObjectKeyFromObject(node), cachedNode))
	assert.Equal(t, "zone-a", cachedNode.Labels[corev1.LabelTopologyZone])
	assert.Nil(t, cachedNode.Annotations)

	// The ReplicaSets index, as serve runs it, holds the two facts of each.
	index := newReplicaSets()
	go func() { _ = index.run(ctx, restCfg) }()
	require.Eventually(t, index.hasSynced, 30*time.Second, 50*time.Millisecond)
	f, ok := index.Get(rs.Namespace, rs.Name)
	require.True(t, ok)
	assert.Equal(t, facts.ReplicaSetFacts{Replicas: 3, Inject: "false", Owner: unique.Make(rs.OwnerReferences[0].UID), Revision: 2, Labels: facts.TemplateLabelsHash(rs.Spec.Template.Labels)}, f)
	assert.Len(t, index.Owned(rs.OwnerReferences[0].UID), 1)

	// An update: the Deployment scaled to 5 and opted in again.
	delete(rs.Annotations, policies.InjectAnnotation)
	rs.Annotations[policies.DesiredReplicasAnnotation] = "5"
	require.NoError(t, c.Update(ctx, rs))
	require.Eventually(t, func() bool {
		f, ok := index.Get(rs.Namespace, rs.Name)
		return ok && f.Replicas == 5 && f.Inject == ""
	}, 30*time.Second, 50*time.Millisecond, "the index follows the update")

	// The Pod handler reads its owner from the index.
	m := &Mutator{Kind: policies.KindPod, ReplicaSets: index, APIReader: c}
	ownerOf := func(rsName string) *policies.Owner {
		owner, err := m.gatherer().Source.Owner(ctx, ns.Name, &metav1.OwnerReference{
			APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rsName, UID: rs.UID, Controller: ptr.To(true),
		})
		if err != nil {
			return nil
		}
		return owner
	}
	owner := ownerOf(rs.Name)
	require.NotNil(t, owner)
	assert.Equal(t, ptr.To[int32](5), owner.Replicas)
	assert.Empty(t, owner.Annotations)

	// A ReplicaSet the index has not seen yet is read from the API server.
	fresh := rs.DeepCopy()
	fresh.ResourceVersion, fresh.UID, fresh.Name = "", "", "web-7c9d8e6f5"
	fresh.Annotations = map[string]string{policies.DesiredReplicasAnnotation: "2", policies.InjectAnnotation: "false"}
	require.NoError(t, c.Create(ctx, fresh))
	owner = ownerOf(fresh.Name)
	require.NotNil(t, owner)
	assert.Equal(t, ptr.To[int32](2), owner.Replicas)
	assert.Equal(t, "false", owner.Annotations[policies.InjectAnnotation])
	assert.Nil(t, ownerOf("web-gone"), "no such ReplicaSet: unknown")

	// A deleted ReplicaSet leaves the index.
	require.NoError(t, c.Delete(ctx, rs))
	require.Eventually(t, func() bool {
		_, ok := index.Get(rs.Namespace, rs.Name)
		return !ok
	}, 30*time.Second, 50*time.Millisecond, "the index follows the deletion")
}

// TestKeepLabelsLeavesOtherObjectsWhole: a typed object going through the
// transform only loses its managedFields.
func TestKeepLabelsLeavesOtherObjectsWhole(t *testing.T) {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Name: "web", Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"a": "b"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
	}}
	out, err := keepLabels()(rs)
	require.NoError(t, err)
	got := out.(*appsv1.ReplicaSet)
	assert.Equal(t, map[string]string{"app": "web"}, got.Labels)
	assert.Equal(t, map[string]string{"a": "b"}, got.Annotations)
	assert.Nil(t, got.ManagedFields)

	tombstone := toolscache.DeletedFinalStateUnknown{Key: "cache-team/web", Obj: rs}
	out, err = keepLabels()(tombstone)
	require.NoError(t, err)
	assert.Equal(t, tombstone, out)
}

// BenchmarkCachedReplicaSet reports the heap one ReplicaSet costs in the
// ReplicaSets index: 50,000 of them, each with the Deployment controller's
// annotations and 2 KiB of copied ones, trimmed by its transform and added
// as the reflector adds them.
func BenchmarkCachedReplicaSet(b *testing.B) {
	const n = 50000
	copied := strings.Repeat("x", 2048)
	var perObject float64
	for b.Loop() {
		index := newReplicaSets()
		transform := index.Transformer()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			rs := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("app-%d-%09x", i/10000, i*7919), Namespace: fmt.Sprintf("team-%05d", i%10000),
				UID: types.UID(fmt.Sprintf("6f1c2a9e-0000-4000-8000-%012d", i)), ResourceVersion: strconv.Itoa(100000 + i),
				Annotations: map[string]string{
					policies.DesiredReplicasAnnotation: "3", "deployment.kubernetes.io/revision": "1",
					corev1.LastAppliedConfigAnnotation: strings.Clone(copied),
				},
			}}
			obj, err := transform(rs)
			if err != nil {
				b.Fatal(err)
			}
			if err := index.Add(obj); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if index.len() != n {
			b.Fatalf("%d ReplicaSets in the index, want %d", index.len(), n)
		}
		perObject = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / n
	}
	b.ReportMetric(perObject, "B/replicaset")
}

// TestReplicaSetsIndexTakesWhatTheReflectorGives: the objects of a streamed
// list come through the transform, a watch's as they are, a deletion may be a
// tombstone.
func TestReplicaSetsIndexTakesWhatTheReflectorGives(t *testing.T) {
	index := newReplicaSets()
	meta := func(name string, annotations map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, Annotations: annotations}}
	}
	streamed, err := index.Transformer()(meta("web-1", map[string]string{policies.DesiredReplicasAnnotation: "4", corev1.LastAppliedConfigAnnotation: "{}"}))
	require.NoError(t, err)
	require.IsType(t, &replicaSetEntry{}, streamed)
	assert.False(t, index.hasSynced())
	require.NoError(t, index.Replace([]any{streamed, meta("web-2", map[string]string{policies.DesiredReplicasAnnotation: "x", policies.InjectAnnotation: "false"})}, "1"))
	assert.True(t, index.hasSynced())
	f, ok := index.Get("team", "web-1")
	assert.True(t, ok)
	assert.Equal(t, [2]any{int32(4), ""}, [2]any{f.Replicas, f.Inject})
	f, _ = index.Get("team", "web-2")
	assert.Equal(t, [2]any{int32(-1), "false"}, [2]any{f.Replicas, f.Inject}, "a count that is not a number is unknown")

	require.NoError(t, index.Add(meta("web-3", nil)))
	f, _ = index.Get("team", "web-3")
	assert.Equal(t, [2]any{int32(-1), ""}, [2]any{f.Replicas, f.Inject})
	require.NoError(t, index.Delete(toolscache.DeletedFinalStateUnknown{Key: "team/web-1", Obj: streamed}))
	require.NoError(t, index.Delete(meta("web-2", nil)))
	_, ok = index.Get("team", "web-1")
	assert.False(t, ok)
	assert.Equal(t, 1, index.len())
	require.NoError(t, index.Add("not an object"), "ignored")
	assert.Equal(t, 1, index.len())
}
