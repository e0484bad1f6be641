package webhook

import (
	"unique"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// The informers hold one entry per namespace, node and ReplicaSet of the
// cluster, so each keeps only what the handlers read. A ReplicaSet carries
// every annotation the Deployment controller copies from its Deployment
// (kubectl's last-applied configuration, GitOps records, the status record):
// kilobytes each, times every ReplicaSet the Deployments' revision histories
// keep. The Pod handler reads two of them.
var (
	namespaceMetadata = metadataOf(corev1.SchemeGroupVersion.WithKind("Namespace"))
	nodeMetadata      = metadataOf(corev1.SchemeGroupVersion.WithKind("Node"))

	// replicaSetAnnotations are the annotations owner reads.
	replicaSetAnnotations = []string{desiredReplicasAnnotation, policies.InjectAnnotation}
)

func metadataOf(gvk schema.GroupVersionKind) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	return m
}

// watched lists what the handlers read from the manager's cache: namespaces
// and nodes as metadata only, and the policies. ReplicaSets have their own
// index (replicaSets).
func watched() []client.Object {
	return []client.Object{&v1alpha1.HAPolicy{}, namespaceMetadata, nodeMetadata}
}

// cacheOptions trims what the informers store: namespaces and nodes keep
// their labels (the policy and Pod Security labels, the topology labels), and
// nothing keeps managedFields. An object read from the API server on a cache
// miss is not trimmed.
func cacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			namespaceMetadata: {Transform: keepMetadata(true)},
			nodeMetadata:      {Transform: keepMetadata(true)},
		},
	}
}

// keepMetadata returns a transform that reduces object metadata to its name,
// namespace and resourceVersion, its labels when withLabels, and the named
// annotations. The namespace and the annotation values are interned: a
// cluster's ReplicaSets share a few namespaces and replica counts. What one
// cached ReplicaSet still costs, about 840 bytes (BenchmarkCachedReplicaSet), is the ObjectMeta struct,
// the one-entry annotations map and the indexer's entries. Any other object
// only loses its managedFields.
func keepMetadata(withLabels bool, annotations ...string) toolscache.TransformFunc {
	return func(in any) (any, error) {
		m, ok := in.(*metav1.PartialObjectMetadata)
		if !ok {
			if obj, err := meta.Accessor(in); err == nil && obj.GetManagedFields() != nil {
				obj.SetManagedFields(nil)
			}
			return in, nil
		}
		kept := metav1.ObjectMeta{Name: m.Name, Namespace: unique.Make(m.Namespace).Value(), ResourceVersion: m.ResourceVersion}
		if withLabels {
			kept.Labels = m.Labels
		}
		for _, key := range annotations {
			if v, found := m.Annotations[key]; found {
				if kept.Annotations == nil {
					kept.Annotations = map[string]string{}
				}
				kept.Annotations[key] = unique.Make(v).Value()
			}
		}
		m.ObjectMeta = kept
		return m, nil
	}
}
