package webhook

import (
	"context"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unique"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/ha-injector/ha-injector/policies"
)

// replicaSetFacts is what the handlers read of a ReplicaSet: the two
// annotations the Deployment controller copies from its Deployment (for the
// Pod handler), and what tells which of a Deployment's ReplicaSets a rollback
// could be returning to (for the Deployment handler).
type replicaSetFacts struct {
	// replicas is the desired-replicas annotation, -1 when absent or not a
	// number.
	replicas int32
	// inject is the ha-injector.io/inject annotation ("" when absent).
	inject string
	// owner is the UID of its controller (zero when it has none).
	owner unique.Handle[types.UID]
	// revision is the deployment.kubernetes.io/revision annotation (0 when
	// absent or not a number).
	revision int64
	// labels hashes its labels without pod-template-hash: the labels of the
	// pod template it was made from, which a rollback to it restores.
	labels uint64
}

// replicaSets holds the facts of every ReplicaSet of the cluster, fed by a
// reflector over the metadata API. A cluster keeps many ReplicaSets (each
// Deployment's revision history), each carrying every annotation copied from
// its Deployment; an informer's store would keep an object of several hundred
// bytes for each even once trimmed, this keeps a key and a few bytes.
//
// It is the reflector's store (client-go's ReflectorStore, and a
// TransformingStore so that the initial list is trimmed as it streams in).
type replicaSets struct {
	mu    sync.RWMutex
	items map[string]replicaSetFacts // by namespace/name
	// byOwner lists the namespace/name of each controller's ReplicaSets (a
	// Deployment keeps a few: its revision history), sharing the keys' bytes
	// with items.
	byOwner map[unique.Handle[types.UID]][]string
	synced  bool
}

func newReplicaSets() *replicaSets {
	return &replicaSets{items: map[string]replicaSetFacts{}, byOwner: map[unique.Handle[types.UID]][]string{}}
}

// ownedReplicaSet is one of a Deployment's ReplicaSets, as the index holds it.
type ownedReplicaSet struct {
	name string
	replicaSetFacts
}

// owned returns the ReplicaSets whose controller has the UID owner.
func (s *replicaSets) owned(owner types.UID) []ownedReplicaSet {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := s.byOwner[unique.Make(owner)]
	out := make([]ownedReplicaSet, 0, len(keys))
	for _, key := range keys {
		_, name, _ := strings.Cut(key, "/")
		out = append(out, ownedReplicaSet{name: name, replicaSetFacts: s.items[key]})
	}
	return out
}

// put sets the facts of key and keeps byOwner in step. Call it locked.
func (s *replicaSets) put(key string, f replicaSetFacts) {
	old, known := s.items[key]
	if known && old.owner != f.owner {
		s.unlinkOwner(key, old.owner)
	}
	s.items[key] = f
	if f.owner != (unique.Handle[types.UID]{}) && (!known || old.owner != f.owner) {
		s.byOwner[f.owner] = append(s.byOwner[f.owner], key)
	}
}

// unlinkOwner takes key out of owner's list. Call it locked.
func (s *replicaSets) unlinkOwner(key string, owner unique.Handle[types.UID]) {
	keys := slices.DeleteFunc(s.byOwner[owner], func(k string) bool { return k == key })
	if len(keys) == 0 {
		delete(s.byOwner, owner)
	} else {
		s.byOwner[owner] = keys
	}
}

var (
	_ toolscache.ReflectorStore    = &replicaSets{}
	_ toolscache.TransformingStore = &replicaSets{}
)

// get returns the facts of a ReplicaSet, and whether the index has them.
func (s *replicaSets) get(namespace, name string) (replicaSetFacts, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	f, ok := s.items[namespace+"/"+name]
	return f, ok
}

// hasSynced reports whether the initial list is in.
func (s *replicaSets) hasSynced() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.synced
}

func (s *replicaSets) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.items)
}

// replicaSetEntry is a ReplicaSet as the reflector holds it while a streamed
// initial list comes in: its name, namespace and facts, a third of a trimmed
// PartialObjectMetadata.
type replicaSetEntry struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	facts replicaSetFacts
}

func (e *replicaSetEntry) DeepCopyObject() runtime.Object {
	c := *e
	return &c
}

// factsOf reads the facts from a ReplicaSet's metadata; ok is false for
// anything else.
func factsOf(obj any) (key string, f replicaSetFacts, ok bool) {
	if tombstone, isTombstone := obj.(toolscache.DeletedFinalStateUnknown); isTombstone {
		obj = tombstone.Obj
	}
	if e, isEntry := obj.(*replicaSetEntry); isEntry {
		return e.Namespace + "/" + e.Name, e.facts, true
	}
	m, isMeta := obj.(metav1.Object)
	if !isMeta {
		return "", f, false
	}
	f.replicas = -1
	if n, ok := policies.DesiredReplicas(m.GetAnnotations()); ok {
		f.replicas = n
	}
	if v := m.GetAnnotations()[policies.InjectAnnotation]; v != "" {
		f.inject = unique.Make(v).Value()
	}
	if ref := metav1.GetControllerOfNoCopy(m); ref != nil {
		f.owner = unique.Make(ref.UID)
	}
	f.revision, _ = strconv.ParseInt(m.GetAnnotations()[revisionAnnotation], 10, 64)
	f.labels = templateLabelsHash(m.GetLabels())
	return m.GetNamespace() + "/" + m.GetName(), f, true
}

// revisionAnnotation is the Deployment controller's revision number of a
// ReplicaSet (and of its Deployment).
const revisionAnnotation = "deployment.kubernetes.io/revision"

// templateLabelsHash hashes labels without pod-template-hash, in key order:
// for a ReplicaSet, the labels of the template it was made from (the
// Deployment controller gives it its template's labels).
func templateLabelsHash(labels map[string]string) uint64 {
	h := fnv.New64a()
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if k == appsv1.DefaultDeploymentUniqueLabelKey {
			continue
		}
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(labels[k]))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

func (s *replicaSets) Add(obj any) error { return s.Update(obj) }

func (s *replicaSets) Update(obj any) error {
	if key, f, ok := factsOf(obj); ok {
		s.mu.Lock()
		s.put(key, f)
		s.mu.Unlock()
	}
	return nil
}

func (s *replicaSets) Delete(obj any) error {
	if key, _, ok := factsOf(obj); ok {
		s.mu.Lock()
		if old, ok := s.items[key]; ok {
			s.unlinkOwner(key, old.owner)
		}
		delete(s.items, key)
		s.mu.Unlock()
	}
	return nil
}

// Replace swaps in a full list (the initial one, and after a watch expired).
func (s *replicaSets) Replace(list []any, _ string) error {
	fresh := &replicaSets{items: make(map[string]replicaSetFacts, len(list)), byOwner: map[unique.Handle[types.UID]][]string{}}
	for _, obj := range list {
		if key, f, ok := factsOf(obj); ok {
			fresh.put(key, f)
		}
	}
	s.mu.Lock()
	s.items, s.byOwner, s.synced = fresh.items, fresh.byOwner, true
	s.mu.Unlock()
	return nil
}

func (s *replicaSets) Resync() error { return nil }

// Transformer trims each object of a streamed initial list to a
// replicaSetEntry before the reflector holds it until the list is complete.
func (s *replicaSets) Transformer() toolscache.TransformFunc {
	return func(obj any) (any, error) {
		m, isMeta := obj.(metav1.Object)
		if !isMeta {
			return obj, nil
		}
		_, f, _ := factsOf(obj)
		return &replicaSetEntry{ObjectMeta: metav1.ObjectMeta{Name: m.GetName(), Namespace: unique.Make(m.GetNamespace()).Value()}, facts: f}, nil
	}
}

// run lists and watches ReplicaSets as metadata into s until ctx is done.
func (s *replicaSets) run(ctx context.Context, cfg *rest.Config) error {
	client, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	resource := client.Resource(appsv1.SchemeGroupVersion.WithResource("replicasets"))
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return resource.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return resource.Watch(ctx, opts)
		},
	}
	toolscache.NewReflectorWithOptions(lw, &metav1.PartialObjectMetadata{}, s, toolscache.ReflectorOptions{
		Name:            "ha-injector replicasets",
		TypeDescription: "ReplicaSet metadata",
	}).RunWithContext(ctx)
	return nil
}
