package policies

import (
	"errors"
	"fmt"
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"
)

// Object is a Pod or a Deployment as the engine, the facts gatherer and the
// patch take it: the one place that tells the two kinds apart by their Go
// types and says where each keeps its pod template.
type Object struct {
	Kind Kind
	// Object is the *corev1.Pod or *appsv1.Deployment.
	Object runtime.Object
	// Meta is the object's metadata.
	Meta *metav1.ObjectMeta
	// Template is the pod template: a Deployment's spec.template; for a Pod,
	// a template of the pod's labels, annotations and spec (not copied).
	Template *corev1.PodTemplateSpec
	// TemplatePath is the JSON pointer under which the template's metadata
	// and spec are: "/spec/template" for a Deployment, "" for a Pod (its own
	// /metadata and /spec).
	TemplatePath string
}

// Parent is a struct of an object that holds parts the engine may change.
type Parent struct {
	Path  string
	Empty bool
}

// KindOf returns the Kind of an object of apiVersion and kind; ok is false
// for one the engine does not mutate.
func KindOf(apiVersion, kind string) (k Kind, ok bool) {
	switch {
	case apiVersion == "v1" && kind == string(KindPod):
		return KindPod, true
	case apiVersion == "apps/v1" && kind == string(KindDeployment):
		return KindDeployment, true
	}
	return "", false
}

// Decode decodes an object of kind from JSON, its field names matched
// case-sensitively as the API server matches them.
func Decode(kind Kind, raw []byte) (*Object, error) {
	if len(raw) == 0 {
		return nil, errors.New("no object")
	}
	var obj runtime.Object
	switch kind {
	case KindPod:
		obj = &corev1.Pod{}
	case KindDeployment:
		obj = &appsv1.Deployment{}
	default:
		return nil, fmt.Errorf("ha-injector mutates Pods and Deployments, not %q", kind)
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, obj); err != nil {
		return nil, err
	}
	return ObjectOf(obj)
}

// ObjectOf returns the Object of a *corev1.Pod or an *appsv1.Deployment.
func ObjectOf(obj runtime.Object) (*Object, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return &Object{
			Kind: KindPod, Object: o, Meta: &o.ObjectMeta,
			Template: &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: o.Labels, Annotations: o.Annotations}, Spec: o.Spec},
		}, nil
	case *appsv1.Deployment:
		return &Object{
			Kind: KindDeployment, Object: o, Meta: &o.ObjectMeta,
			Template: &o.Spec.Template, TemplatePath: "/spec/template",
		}, nil
	case nil:
		return nil, errors.New("no object to mutate")
	}
	return nil, fmt.Errorf("ha-injector mutates Pods and Deployments, not %T", obj)
}

// Parents are the JSON pointers of the structs of the object that hold what
// the engine may change, each with whether the typed object has it empty
// (absent, null or {} in the JSON it came from: the typed object cannot tell).
func (o *Object) Parents() []Parent {
	switch d := o.Object.(type) {
	case *appsv1.Deployment:
		return []Parent{
			{"/metadata", zero(d.ObjectMeta)}, {"/spec", zero(d.Spec)}, {"/spec/template", zero(d.Spec.Template)},
			{"/spec/template/metadata", zero(d.Spec.Template.ObjectMeta)}, {"/spec/template/spec", zero(d.Spec.Template.Spec)},
		}
	case *corev1.Pod:
		return []Parent{{"/metadata", zero(d.ObjectMeta)}, {"/spec", zero(d.Spec)}}
	}
	return nil
}

func zero(v any) bool { return reflect.ValueOf(v).IsZero() }

// Workload is what the engine reads of the object whose template it mutates,
// with owner, what the cluster knows of a Pod's controller (nil: unknown).
func (o *Object) Workload(owner *Owner) Workload {
	w := Workload{Kind: o.Kind, Annotations: o.Meta.Annotations}
	switch d := o.Object.(type) {
	case *appsv1.Deployment:
		w.Selector, w.Replicas = d.Spec.Selector, d.Spec.Replicas
	default:
		w.OwnerReferences, w.Owner = o.Meta.OwnerReferences, owner
		if owner != nil {
			w.Replicas = owner.Replicas
		}
	}
	return w
}

// Controller is the controller reference of the object, nil when it has none.
func (o *Object) Controller() *metav1.OwnerReference { return metav1.GetControllerOfNoCopy(o.Meta) }

// Workload describes the object whose pod template is mutated.
type Workload struct {
	Kind Kind
	// Annotations are the object's own annotations (for a Pod, the same as
	// its template's).
	Annotations map[string]string
	// Selector is the Deployment's; nil for a Pod.
	Selector *metav1.LabelSelector
	// Replicas is the Deployment's (nil: 1), or for a Pod its owner's
	// desired count (nil: unknown).
	Replicas *int32
	// OwnerReferences are the Pod's; nil for a Deployment.
	OwnerReferences []metav1.OwnerReference
	// Owner is the Pod's controller as the cluster knows it, if known.
	Owner *Owner
}

// replicas is the workload's replica count and whether it is known: a
// Deployment's always (unset means 1), a Pod's when its owner gave it.
func (w Workload) replicas() (int32, bool) {
	if w.Replicas != nil {
		return *w.Replicas, true
	}
	return 1, w.Kind == KindDeployment
}

// unknownReplicas says why a pod's replica count is unknown.
func (w Workload) unknownReplicas() string {
	for _, ref := range w.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		switch ref.Kind {
		case "ReplicaSet", "StatefulSet":
			return fmt.Sprintf("its %s %s could not be read", ref.Kind, ref.Name)
		}
		return fmt.Sprintf("owned by %s %s, whose replicas ha-injector does not count", ref.Kind, ref.Name)
	}
	return "a pod without a controller"
}

// perPodLabels are labels that differ between replicas of one workload, or
// between revisions of it; selecting on them would select only the pod itself.
var perPodLabels = map[string]bool{
	templateHashLabel:                          true,
	"controller-revision-hash":                 true,
	"statefulset.kubernetes.io/pod-name":       true,
	"apps.kubernetes.io/pod-index":             true,
	"controller-uid":                           true,
	"batch.kubernetes.io/controller-uid":       true,
	"batch.kubernetes.io/job-completion-index": true,
}

// replicaSelector returns the selector that matches the workload's replicas:
// a Deployment's own selector, or a Pod's labels without the per-pod ones;
// nil when there is none.
func (w Workload) replicaSelector(labels map[string]string) *metav1.LabelSelector {
	if w.Kind == KindDeployment {
		if w.Selector == nil || (len(w.Selector.MatchLabels) == 0 && len(w.Selector.MatchExpressions) == 0) {
			return nil
		}
		return w.Selector.DeepCopy()
	}
	match := map[string]string{}
	for k, v := range labels {
		if !perPodLabels[k] {
			match[k] = v
		}
	}
	if len(match) == 0 {
		return nil
	}
	return &metav1.LabelSelector{MatchLabels: match}
}
