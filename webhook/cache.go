package webhook

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// The informers hold one entry per namespace and node of the cluster, so
// each keeps only what the handlers read: the labels.
var (
	namespaceMetadata = metadataOf(corev1.SchemeGroupVersion.WithKind("Namespace"))
	nodeMetadata      = metadataOf(corev1.SchemeGroupVersion.WithKind("Node"))
)

func metadataOf(gvk schema.GroupVersionKind) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	return m
}

// watched lists what the handlers read from the manager's cache: namespaces
// and nodes as metadata only, the policies, and StatefulSets trimmed to their
// replica count. ReplicaSets have their own index (replicaSets).
func watched() []client.Object {
	return []client.Object{&v1alpha1.HAPolicy{}, namespaceMetadata, nodeMetadata, &appsv1.StatefulSet{}}
}

// cacheOptions trims what the informers store: namespaces and nodes keep
// their labels (the policy and Pod Security labels, the topology labels), and
// nothing keeps managedFields. An object read from the API server on a cache
// miss is not trimmed. Namespaces and policies, read on every admission, are
// not deep-copied out of the cache: the handlers only read them (the engine
// defaults its own copy of a policy).
func cacheOptions() cache.Options {
	readOnly := ptr.To(true)
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			namespaceMetadata:     {Transform: keepLabels(), UnsafeDisableDeepCopy: readOnly},
			nodeMetadata:          {Transform: keepLabels()},
			&v1alpha1.HAPolicy{}:  {UnsafeDisableDeepCopy: readOnly},
			&appsv1.StatefulSet{}: {Transform: keepReplicas, UnsafeDisableDeepCopy: readOnly},
		},
	}
}

// keepReplicas reduces a StatefulSet to what the Pod handler reads: its name
// and its replica count, which decide whether a Required anti-affinity term
// fits its pods.
func keepReplicas(in any) (any, error) {
	s, ok := in.(*appsv1.StatefulSet)
	if !ok {
		return in, nil
	}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion},
		Spec:       appsv1.StatefulSetSpec{Replicas: s.Spec.Replicas},
	}, nil
}

// keepLabels returns a transform that reduces object metadata to its name,
// namespace, resourceVersion and labels. Any other object only loses its
// managedFields.
func keepLabels() toolscache.TransformFunc {
	return func(in any) (any, error) {
		m, ok := in.(*metav1.PartialObjectMetadata)
		if !ok {
			if obj, err := meta.Accessor(in); err == nil && obj.GetManagedFields() != nil {
				obj.SetManagedFields(nil)
			}
			return in, nil
		}
		m.ObjectMeta = metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, ResourceVersion: m.ResourceVersion, Labels: m.Labels}
		return m, nil
	}
}
