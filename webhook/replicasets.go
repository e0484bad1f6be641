package webhook

import (
	"context"
	"slices"
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

	"github.com/ha-injector/ha-injector/facts"
)

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
	items map[string]facts.ReplicaSetFacts // by namespace/name
	// byOwner lists the namespace/name of each controller's ReplicaSets (a
	// Deployment keeps a few: its revision history), sharing the keys' bytes
	// with items.
	byOwner map[unique.Handle[types.UID]][]string
	synced  bool
}

func newReplicaSets() *replicaSets {
	return &replicaSets{items: map[string]facts.ReplicaSetFacts{}, byOwner: map[unique.Handle[types.UID]][]string{}}
}

var _ facts.ReplicaSetIndex = &replicaSets{}

// Owned returns the ReplicaSets whose controller has the UID owner.
func (s *replicaSets) Owned(owner types.UID) []facts.NamedReplicaSet {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := s.byOwner[unique.Make(owner)]
	out := make([]facts.NamedReplicaSet, 0, len(keys))
	for _, key := range keys {
		_, name, _ := strings.Cut(key, "/")
		out = append(out, facts.NamedReplicaSet{Name: name, ReplicaSetFacts: s.items[key]})
	}
	return out
}

// put sets the facts of key and keeps byOwner in step. Call it locked.
func (s *replicaSets) put(key string, f facts.ReplicaSetFacts) {
	old, known := s.items[key]
	if known && old.Owner != f.Owner {
		s.unlinkOwner(key, old.Owner)
	}
	s.items[key] = f
	if f.Owner != (unique.Handle[types.UID]{}) && (!known || old.Owner != f.Owner) {
		s.byOwner[f.Owner] = append(s.byOwner[f.Owner], key)
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

// Get returns the facts of a ReplicaSet, and whether the index has them.
func (s *replicaSets) Get(namespace, name string) (facts.ReplicaSetFacts, bool) {
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
	facts facts.ReplicaSetFacts
}

func (e *replicaSetEntry) DeepCopyObject() runtime.Object {
	c := *e
	return &c
}

// factsOf reads the facts from a ReplicaSet's metadata; ok is false for
// anything else.
func factsOf(obj any) (key string, f facts.ReplicaSetFacts, ok bool) {
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
	return m.GetNamespace() + "/" + m.GetName(), facts.ReplicaSetFactsOf(m), true
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
			s.unlinkOwner(key, old.Owner)
		}
		delete(s.items, key)
		s.mu.Unlock()
	}
	return nil
}

// Replace swaps in a full list (the initial one, and after a watch expired).
func (s *replicaSets) Replace(list []any, _ string) error {
	fresh := &replicaSets{items: make(map[string]facts.ReplicaSetFacts, len(list)), byOwner: map[unique.Handle[types.UID]][]string{}}
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
