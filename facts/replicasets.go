package facts

import (
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"unique"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ha-injector/ha-injector/policies"
)

// ReplicaSetFacts is what is read of a ReplicaSet's metadata: the two
// annotations the Deployment controller copies from its Deployment (for the
// Pod handler), and what tells which of a Deployment's ReplicaSets a rollback
// could be returning to (for the Deployment handler).
type ReplicaSetFacts struct {
	// Replicas is the desired-replicas annotation, -1 when absent or not a
	// number.
	Replicas int32
	// Inject is the ha-injector.io/inject annotation ("" when absent).
	Inject string
	// Owner is the UID of its controller (zero when it has none).
	Owner unique.Handle[types.UID]
	// Revision is the deployment.kubernetes.io/revision annotation (0 when
	// absent or not a number).
	Revision int64
	// Labels hashes its labels without pod-template-hash: the labels of the
	// pod template it was made from, which a rollback to it restores.
	Labels uint64
}

// NamedReplicaSet is a ReplicaSet's name and facts.
type NamedReplicaSet struct {
	Name string
	ReplicaSetFacts
}

// ReplicaSetIndex is an index of the facts of every ReplicaSet (the webhook
// keeps one, fed by a metadata watch): read instead of the cache.
type ReplicaSetIndex interface {
	// Get returns the facts of a ReplicaSet, and whether the index has them.
	Get(namespace, name string) (ReplicaSetFacts, bool)
	// Owned returns the ReplicaSets whose controller has the UID owner.
	Owned(owner types.UID) []NamedReplicaSet
}

// RevisionAnnotation is the Deployment controller's revision number of a
// ReplicaSet (and of its Deployment).
const RevisionAnnotation = "deployment.kubernetes.io/revision"

// ReplicaSetFactsOf reads the facts of a ReplicaSet's metadata.
func ReplicaSetFactsOf(m metav1.Object) ReplicaSetFacts {
	f := ReplicaSetFacts{Replicas: -1}
	if n, ok := policies.DesiredReplicas(m.GetAnnotations()); ok {
		f.Replicas = n
	}
	if v := m.GetAnnotations()[policies.InjectAnnotation]; v != "" {
		f.Inject = unique.Make(v).Value()
	}
	if ref := metav1.GetControllerOfNoCopy(m); ref != nil {
		f.Owner = unique.Make(ref.UID)
	}
	f.Revision, _ = strconv.ParseInt(m.GetAnnotations()[RevisionAnnotation], 10, 64)
	f.Labels = TemplateLabelsHash(m.GetLabels())
	return f
}

// TemplateLabelsHash hashes labels without pod-template-hash, in key order:
// for a ReplicaSet, the labels of the template it was made from (the
// Deployment controller gives it its template's labels).
func TemplateLabelsHash(labels map[string]string) uint64 {
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

// owner turns a ReplicaSet's facts into what the engine knows of a Pod's
// controller: its Deployment's opt-out and desired replica count, which the
// Deployment controller copies onto it.
func (f ReplicaSetFacts) owner(name string) *policies.Owner {
	owner := &policies.Owner{Kind: "ReplicaSet", Name: name}
	if f.Inject != "" {
		owner.Annotations = map[string]string{policies.InjectAnnotation: f.Inject}
	}
	if f.Replicas >= 0 {
		n := f.Replicas
		owner.Replicas = &n
	}
	return owner
}
