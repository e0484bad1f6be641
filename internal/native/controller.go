package native

import (
	"context"
	"fmt"
	"maps"
	"slices"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Controller is serve in native mode: for each HAPolicy it keeps the two
// bindings to native mode's policies (owned by the HAPolicy, so the garbage
// collector removes them with it) and, in the HAPolicy's status, the number
// of topology domains of the keys it uses, which CEL cannot count. It writes
// nothing else: the admission policies are the chart's.
type Controller struct {
	Client  client.Client
	Options Options
}

// NodeMetadata is how the controller watches nodes: their labels only.
func NodeMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	return m
}

// SetupWithManager runs the controller in mgr: on every HAPolicy, on its
// bindings, and on every node created, deleted or relabelled (for every
// policy).
func (c *Controller) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list v1alpha1.HAPolicyList
		if err := mgr.GetClient().List(ctx, &list); err != nil {
			ctrl.Log.WithName("native").Error(err, "listing HAPolicies")
			return nil
		}
		out := make([]reconcile.Request, len(list.Items))
		for i := range list.Items {
			out[i] = reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}}
		}
		return out
	})
	relabelled := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
		},
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("native").
		For(&v1alpha1.HAPolicy{}).
		Owns(&admissionregistrationv1.MutatingAdmissionPolicyBinding{}).
		Owns(&admissionregistrationv1.ValidatingAdmissionPolicyBinding{}).
		WatchesMetadata(NodeMetadata(), all, builder.WithPredicates(relabelled)).
		Complete(c)
}

// Reconcile brings one HAPolicy's bindings and status to what they should be.
func (c *Controller) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p v1alpha1.HAPolicy
	if err := c.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	m, v := Bindings(c.Options, p.Name)
	owner := metav1.OwnerReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "HAPolicy", Name: p.Name, UID: p.UID, Controller: ptr.To(true)}
	m.OwnerReferences, v.OwnerReferences = []metav1.OwnerReference{owner}, []metav1.OwnerReference{owner}
	if err := c.apply(ctx, m, &admissionregistrationv1.MutatingAdmissionPolicyBinding{}, func(cur client.Object) bool {
		return equality.Semantic.DeepEqual(cur.(*admissionregistrationv1.MutatingAdmissionPolicyBinding).Spec, m.Spec)
	}); err != nil {
		return reconcile.Result{}, err
	}
	if err := c.apply(ctx, v, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}, func(cur client.Object) bool {
		return equality.Semantic.DeepEqual(cur.(*admissionregistrationv1.ValidatingAdmissionPolicyBinding).Spec, v.Spec)
	}); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, c.updateStatus(ctx, &p)
}

// apply creates want, or updates the object of its name (into cur) when its
// spec, labels or owners are not want's.
func (c *Controller) apply(ctx context.Context, want, cur client.Object, sameSpec func(client.Object) bool) error {
	err := c.Client.Get(ctx, client.ObjectKeyFromObject(want), cur)
	switch {
	case apierrors.IsNotFound(err):
		if err := c.Client.Create(ctx, want); err != nil {
			return fmt.Errorf("creating %s: %w", want.GetName(), err)
		}
		return nil
	case err != nil:
		return err
	}
	if sameSpec(cur) && maps.Equal(cur.GetLabels(), want.GetLabels()) && equality.Semantic.DeepEqual(cur.GetOwnerReferences(), want.GetOwnerReferences()) {
		return nil
	}
	want.SetResourceVersion(cur.GetResourceVersion())
	if err := c.Client.Update(ctx, want); err != nil {
		return fmt.Errorf("updating %s: %w", want.GetName(), err)
	}
	return nil
}

// updateStatus writes the topology domains of the keys the policy uses.
func (c *Controller) updateStatus(ctx context.Context, p *v1alpha1.HAPolicy) error {
	d := p.DeepCopy()
	d.Default()
	keys := []string{d.Spec.AntiAffinity.TopologyKey}
	if !slices.Contains(keys, d.Spec.ZoneSpread.TopologyKey) {
		keys = append(keys, d.Spec.ZoneSpread.TopologyKey)
	}
	reader := &facts.Reader{Cache: c.Client, API: c.Client}
	want := v1alpha1.HAPolicyStatus{TopologyDomains: map[string]int32{}, ObservedGeneration: p.Generation}
	for _, key := range keys {
		n, known, err := reader.TopologyDomains(ctx, key)
		if err != nil {
			return err
		}
		if known {
			want.TopologyDomains[key] = int32(n)
		}
	}
	if equality.Semantic.DeepEqual(p.Status, want) {
		return nil
	}
	p.Status = want
	if err := c.Client.Status().Update(ctx, p); err != nil {
		return fmt.Errorf("updating the status of HAPolicy %s: %w", p.Name, err)
	}
	return nil
}
