package webhook

import (
	"context"
	"sync"
	"unique"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/ha-injector/ha-injector/policies"
)

// replicaSetFacts is what the Pod handler reads of a ReplicaSet: the two
// annotations the Deployment controller copies from its Deployment.
type replicaSetFacts struct {
	// replicas is the desired-replicas annotation, -1 when absent or not a
	// number.
	replicas int32
	// inject is the ha-injector.io/inject annotation ("" when absent).
	inject string
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
	mu     sync.RWMutex
	items  map[string]replicaSetFacts // by namespace/name
	synced bool
}

func newReplicaSets() *replicaSets {
	return &replicaSets{items: map[string]replicaSetFacts{}}
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
	return m.GetNamespace() + "/" + m.GetName(), f, true
}

func (s *replicaSets) Add(obj any) error { return s.Update(obj) }

func (s *replicaSets) Update(obj any) error {
	if key, f, ok := factsOf(obj); ok {
		s.mu.Lock()
		s.items[key] = f
		s.mu.Unlock()
	}
	return nil
}

func (s *replicaSets) Delete(obj any) error {
	if key, _, ok := factsOf(obj); ok {
		s.mu.Lock()
		delete(s.items, key)
		s.mu.Unlock()
	}
	return nil
}

// Replace swaps in a full list (the initial one, and after a watch expired).
func (s *replicaSets) Replace(list []any, _ string) error {
	items := make(map[string]replicaSetFacts, len(list))
	for _, obj := range list {
		if key, f, ok := factsOf(obj); ok {
			items[key] = f
		}
	}
	s.mu.Lock()
	s.items, s.synced = items, true
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
