package webhook

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// countingReader counts the full ReplicaSets read and refuses to list them.
type countingReader struct {
	client.Reader
	mu   sync.Mutex
	gets []string
}

func (r *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*appsv1.ReplicaSet); ok {
		r.mu.Lock()
		r.gets = append(r.gets, key.Name)
		r.mu.Unlock()
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

func (r *countingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("the rollback check must not list")
}

// rollbackNamespace is a namespace of many Deployments' ReplicaSets: the one
// under test owns revisions 1..20 (its template labels changed at revision 15),
// 200 others belong to other Deployments, all in the index as the reflector
// holds them, and in full behind the API reader.
func rollbackNamespace(t *testing.T, owner types.UID) (*replicaSets, *countingReader) {
	t.Helper()
	index := newReplicaSets()
	var full []client.Object
	add := func(name string, controller types.UID, revision int, labels map[string]string) {
		rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
			Namespace: "team-a", Name: name, Labels: labels,
			Annotations:     map[string]string{facts.RevisionAnnotation: fmt.Sprint(revision)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "d", UID: controller, Controller: ptr.To(true)}},
		}}
		rs.Spec.Template.Labels = labels
		rs.Spec.Template.Spec.Containers = []corev1.Container{{Name: "app", Image: fmt.Sprintf("app:%d", revision)}}
		full = append(full, rs)
		meta := &metav1.PartialObjectMetadata{ObjectMeta: *rs.ObjectMeta.DeepCopy()}
		require.NoError(t, index.Update(meta))
	}
	for rev := 1; rev <= 20; rev++ {
		labels := map[string]string{"app": "web", "pod-template-hash": fmt.Sprintf("h%d", rev)}
		if rev >= 15 {
			labels["tier"] = "front"
		}
		add(fmt.Sprintf("web-h%d", rev), owner, rev, labels)
	}
	for i := range 200 {
		add(fmt.Sprintf("other-%d", i), types.UID(fmt.Sprintf("other-uid-%d", i)), 1, map[string]string{"app": "web", "pod-template-hash": fmt.Sprintf("o%d", i)})
	}
	api := &countingReader{Reader: fake.NewClientBuilder().WithScheme(Scheme).WithObjects(full...).Build()}
	return index, api
}

// TestRollbackCheckReadsOnlyWhatCouldBeTheRevision: on a template change, only
// the Deployment's own ReplicaSets are considered (from the index, never a
// list), and only those whose labels are the new template's are read in full,
// at most revisionHistoryLimit + 1 of them, newest first.
func TestRollbackCheckReadsOnlyWhatCouldBeTheRevision(t *testing.T) {
	const owner = types.UID("web-uid")
	index, api := rollbackNamespace(t, owner)
	m := &facts.Reader{ReplicaSets: index, API: api}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web", UID: owner}}
	d.Spec.RevisionHistoryLimit = ptr.To[int32](10)

	// Labels of revisions 1..14: of the 11 newest (20..10), 10..14 match.
	tmpl := &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}}
	got, err := m.Revisions(context.Background(), "team-a", d, tmpl)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"web-h14", "web-h13", "web-h12", "web-h11", "web-h10"}, api.gets)
	assert.Len(t, got, 5)

	// The newer labels: revisions 15..20, all within the history.
	api.gets = nil
	tmpl.Labels = map[string]string{"app": "web", "tier": "front"}
	got, err = m.Revisions(context.Background(), "team-a", d, tmpl)
	require.NoError(t, err)
	assert.Len(t, api.gets, 6)
	assert.Len(t, got, 6)

	// A Deployment that owns nothing reads nothing.
	api.gets = nil
	d.UID = "new-uid"
	got, err = m.Revisions(context.Background(), "team-a", d, tmpl)
	require.NoError(t, err)
	assert.Empty(t, got)
	assert.Empty(t, api.gets)
}

// TestReplicaSetIndexFollowsOwners: the owner index follows adoption, release,
// deletion and a full relist.
func TestReplicaSetIndexFollowsOwners(t *testing.T) {
	s := newReplicaSets()
	rs := func(owner types.UID) *metav1.PartialObjectMetadata {
		m := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rs"}}
		if owner != "" {
			m.OwnerReferences = []metav1.OwnerReference{{Kind: "Deployment", Name: "d", UID: owner, Controller: ptr.To(true)}}
		}
		return m
	}
	require.NoError(t, s.Add(rs("a")))
	assert.Len(t, s.Owned("a"), 1)
	require.NoError(t, s.Update(rs("b")))
	assert.Empty(t, s.Owned("a"))
	assert.Len(t, s.Owned("b"), 1)
	require.NoError(t, s.Update(rs("")))
	assert.Empty(t, s.Owned("b"))
	require.NoError(t, s.Update(rs("c")))
	require.NoError(t, s.Delete(rs("c")))
	assert.Empty(t, s.Owned("c"))
	assert.Empty(t, s.byOwner)
	require.NoError(t, s.Replace([]any{rs("d")}, ""))
	assert.Len(t, s.Owned("d"), 1)
}
