package facts

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Reader reads facts from the API server's objects through read-only clients.
type Reader struct {
	// Cache is read first: the webhook's informers (namespaces and nodes as
	// metadata, policies, StatefulSets), or a live client.
	Cache client.Reader
	// API is read when Cache has not seen an object yet (a namespace created a
	// moment ago), and for the templates of ReplicaSets; it may be Cache.
	API client.Reader
	// ReplicaSets, when set, is read for ReplicaSets instead of Cache.
	ReplicaSets ReplicaSetIndex
}

var _ Source = &Reader{}

// ControlPlaneLabel marks nodes that do not run workloads in most clusters;
// they are not counted as topology domains.
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

func metadataOf(gvk schema.GroupVersionKind) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	return m
}

// NamespaceLabels reads the namespace's metadata.
func (r *Reader) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	ns := metadataOf(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.get(ctx, types.NamespacedName{Name: name}, ns); err != nil {
		return nil, err
	}
	return ns.Labels, nil
}

// Policy reads the HAPolicy as stored.
func (r *Reader) Policy(ctx context.Context, name string) (*v1alpha1.HAPolicy, error) {
	p := &v1alpha1.HAPolicy{}
	return p, r.get(ctx, types.NamespacedName{Name: name}, p)
}

func (r *Reader) get(ctx context.Context, key types.NamespacedName, obj client.Object) error {
	err := r.Cache.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) && r.API != nil {
		err = r.API.Get(ctx, key, obj)
	}
	return err
}

// Owner reads a ReplicaSet's facts (from the index, or one read for a
// ReplicaSet created a moment ago) or a StatefulSet's replica count; nil for
// other controllers.
func (r *Reader) Owner(ctx context.Context, namespace string, ref *metav1.OwnerReference) (*policies.Owner, error) {
	if !strings.HasPrefix(ref.APIVersion, "apps/") {
		return nil, nil
	}
	key := types.NamespacedName{Namespace: namespace, Name: ref.Name}
	switch ref.Kind {
	case "ReplicaSet":
		if r.ReplicaSets != nil {
			if f, ok := r.ReplicaSets.Get(namespace, ref.Name); ok {
				return f.owner(ref.Name), nil
			}
		}
		rs := metadataOf(appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))
		var err error
		if r.ReplicaSets != nil && r.API != nil {
			err = r.API.Get(ctx, key, rs)
		} else {
			err = r.get(ctx, key, rs)
		}
		if err != nil {
			return nil, err
		}
		return ReplicaSetFactsOf(rs).owner(ref.Name), nil
	case "StatefulSet":
		s := &appsv1.StatefulSet{}
		if err := r.get(ctx, key, s); err != nil {
			return nil, err
		}
		// Unset means 1, as the API server defaults it.
		return &policies.Owner{Kind: "StatefulSet", Name: ref.Name, Replicas: ptr.To(ptr.Deref(s.Spec.Replicas, 1))}, nil
	}
	return nil, nil
}

// TopologyDomains counts the distinct values of key on the nodes that run
// workloads. Node metadata carries no spec, so control-plane nodes are
// recognised by their role label, not by their taints; cordoned or tainted
// workers still count.
func (r *Reader) TopologyDomains(ctx context.Context, key string) (int, bool, error) {
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	// Read-only: the cached objects need not be copied.
	if err := r.Cache.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		return 0, false, err
	}
	domains := map[string]bool{}
	for _, n := range nodes.Items {
		if _, cp := n.Labels[ControlPlaneLabel]; cp {
			continue
		}
		if v, ok := n.Labels[key]; ok {
			domains[v] = true
		}
	}
	return len(domains), true, nil
}

// defaultRevisionHistoryLimit is the API server's default of a Deployment's
// spec.revisionHistoryLimit.
const defaultRevisionHistoryLimit = 10

// revisionReads is how many ReplicaSets Revisions reads at once.
const revisionReads = 4

// fromWatchCache reads an object as the API server's watch cache holds it
// (resourceVersion "0"), without a quorum read of etcd: a ReplicaSet a
// rollback returns to is an old one, and its template does not change.
var fromWatchCache = &client.GetOptions{Raw: &metav1.GetOptions{ResourceVersion: "0"}}

// Revisions returns the templates of the Deployment's ReplicaSets that tmpl
// could be a rollback to (what `kubectl rollout undo` sends is a
// ReplicaSet's template without its pod-template-hash label). Every template
// change of every Deployment comes here, so it reads as little as it can:
// the Deployment's own ReplicaSets as metadata (from the index, by their
// controller reference), then in full, newest first, only those whose labels
// are tmpl's and at most revisionHistoryLimit + 1 of them (the Deployment
// controller keeps no more), each with a read of its own from the API
// server's watch cache: a ReplicaSet's template is large and only this reads it.
func (r *Reader) Revisions(ctx context.Context, namespace string, d *appsv1.Deployment, tmpl *corev1.PodTemplateSpec) ([]corev1.PodTemplateSpec, error) {
	if r.API == nil {
		return nil, errors.New("no API reader for ReplicaSet templates")
	}
	owned, err := r.ownedReplicaSets(ctx, namespace, d)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(owned, func(a, b NamedReplicaSet) int { return cmp.Compare(b.Revision, a.Revision) })
	limit := int(ptr.Deref(d.Spec.RevisionHistoryLimit, defaultRevisionHistoryLimit)) + 1
	want := TemplateLabelsHash(tmpl.Labels)
	var names []string
	for i, rs := range owned {
		if i < limit && rs.Labels == want {
			names = append(names, rs.Name)
		}
	}
	templates := make([]*corev1.PodTemplateSpec, len(names))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(revisionReads)
	for i, name := range names {
		g.Go(func() error {
			full := &appsv1.ReplicaSet{}
			switch err := r.API.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, full, fromWatchCache); {
			case apierrors.IsNotFound(err):
				return nil
			case err != nil:
				return err
			}
			templates[i] = &full.Spec.Template
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]corev1.PodTemplateSpec, 0, len(templates))
	for _, t := range templates {
		if t != nil {
			out = append(out, *t)
		}
	}
	return out, nil
}

// ownedReplicaSets lists, as metadata, the ReplicaSets whose controller is d:
// from the index, or else from the cache (those that match d's selector).
func (r *Reader) ownedReplicaSets(ctx context.Context, namespace string, d *appsv1.Deployment) ([]NamedReplicaSet, error) {
	if r.ReplicaSets != nil {
		return r.ReplicaSets.Owned(d.UID), nil
	}
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, err
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSetList"))
	if err := r.Cache.List(ctx, list, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: selector}); err != nil {
		return nil, err
	}
	var owned []NamedReplicaSet
	for i := range list.Items {
		if ref := metav1.GetControllerOfNoCopy(&list.Items[i]); ref != nil && ref.UID == d.UID {
			owned = append(owned, NamedReplicaSet{Name: list.Items[i].Name, ReplicaSetFacts: ReplicaSetFactsOf(&list.Items[i])})
		}
	}
	return owned, nil
}
