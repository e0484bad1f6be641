package preview

import (
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	kjson "sigs.k8s.io/json"

	"github.com/ha-injector/ha-injector/policies"
)

// DefaultTolerationSeconds is what the API server's DefaultTolerationSeconds admission
// plugin gives a pod without a not-ready or unreachable NoExecute toleration, before
// mutating webhooks are called (its --default-not-ready-toleration-seconds and
// --default-unreachable-toleration-seconds, 300 by default).
const DefaultTolerationSeconds int64 = 300

// PodOf returns the Pod the controller of a workload document creates, as the webhook's
// pods webhook receives it, for the kinds whose pods the webhook mutates but whose object
// it does not: StatefulSet, DaemonSet and ReplicaSet (apps/v1), ReplicationController
// (v1), Job and CronJob (batch/v1); and a Deployment's, for native mode. The Pod has the template's labels, annotations and
// spec, the workload's namespace, a controller reference to the object that creates it
// (a CronJob's pods are created by its Jobs) and the tolerations DefaultTolerationSeconds
// adds; no other admission plugin is emulated. owner is what the webhook learns from a
// ReplicaSet owner (its opt-out and desired-replicas annotations) or a StatefulSet (its
// replicas); nil otherwise. ok is
// false for any other kind; a document of one of these kinds that does not decode is an
// error naming the field.
func PodOf(doc []byte) (pod *corev1.Pod, owner *policies.Owner, ok bool, err error) {
	var meta metav1.TypeMeta
	if err := json.Unmarshal(doc, &meta); err != nil {
		return nil, nil, false, nil
	}
	var (
		obj      metav1.Object
		template func() *corev1.PodTemplateSpec
		ref      = metav1.OwnerReference{APIVersion: meta.APIVersion, Kind: meta.Kind, Controller: ptr.To(true)}
	)
	switch meta.APIVersion + "/" + meta.Kind {
	case "apps/v1/StatefulSet":
		o := &appsv1.StatefulSet{}
		obj, template = o, func() *corev1.PodTemplateSpec { return &o.Spec.Template }
	case "apps/v1/DaemonSet":
		o := &appsv1.DaemonSet{}
		obj, template = o, func() *corev1.PodTemplateSpec { return &o.Spec.Template }
	case "apps/v1/ReplicaSet":
		o := &appsv1.ReplicaSet{}
		obj, template = o, func() *corev1.PodTemplateSpec { return &o.Spec.Template }
	case "apps/v1/Deployment":
		// Native mode's view (the webhook mutates the Deployment itself): its pods
		// are created by a ReplicaSet named after it.
		o := &appsv1.Deployment{}
		obj, template = o, func() *corev1.PodTemplateSpec { return &o.Spec.Template }
		ref.APIVersion, ref.Kind = "apps/v1", "ReplicaSet"
	case "v1/ReplicationController":
		o := &corev1.ReplicationController{}
		obj, template = o, func() *corev1.PodTemplateSpec { return o.Spec.Template }
	case "batch/v1/Job":
		o := &batchv1.Job{}
		obj, template = o, func() *corev1.PodTemplateSpec { return &o.Spec.Template }
	case "batch/v1/CronJob":
		o := &batchv1.CronJob{}
		obj, template = o, func() *corev1.PodTemplateSpec { return &o.Spec.JobTemplate.Spec.Template }
		ref.APIVersion, ref.Kind = "batch/v1", "Job"
	default:
		return nil, nil, false, nil
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(doc, obj); err != nil {
		return nil, nil, true, fmt.Errorf("decoding %s: %w", meta.Kind, err)
	}
	name, prefix := obj.GetName(), obj.GetName()+"-"
	if name == "" {
		name, prefix = obj.GetGenerateName()+"*", obj.GetGenerateName()
	}
	tmpl := template()
	if tmpl == nil || len(tmpl.Spec.Containers) == 0 {
		return nil, nil, true, fmt.Errorf("%s %s has no pod template with containers", meta.Kind, name)
	}
	ref.Name = name
	pod = &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: obj.GetNamespace(), GenerateName: prefix,
			Labels: tmpl.Labels, Annotations: tmpl.Annotations,
			OwnerReferences: []metav1.OwnerReference{ref},
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	addDefaultTolerations(&pod.Spec)
	if s, ok := obj.(*appsv1.StatefulSet); ok {
		// As the webhook reads it from the cluster: unset means 1.
		owner = &policies.Owner{Kind: "StatefulSet", Name: name, Replicas: ptr.To(ptr.Deref(s.Spec.Replicas, 1))}
	}
	if meta.Kind == "ReplicaSet" {
		owner = &policies.Owner{Kind: "ReplicaSet", Name: name}
		if v, found := obj.GetAnnotations()[policies.InjectAnnotation]; found {
			owner.Annotations = map[string]string{policies.InjectAnnotation: v}
		}
		if n, ok := policies.DesiredReplicas(obj.GetAnnotations()); ok {
			owner.Replicas = ptr.To(n)
		}
	}
	return pod, owner, true, nil
}

// addDefaultTolerations does what the DefaultTolerationSeconds plugin does: a NoExecute
// toleration of 300 s for node.kubernetes.io/not-ready and for unreachable, each unless a
// toleration already has that key (or none: every key) and the NoExecute effect (or none:
// every effect).
func addDefaultTolerations(spec *corev1.PodSpec) {
	for _, key := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable} {
		tolerated := false
		for _, t := range spec.Tolerations {
			if (t.Key == key || t.Key == "") && (t.Effect == corev1.TaintEffectNoExecute || t.Effect == "") {
				tolerated = true
			}
		}
		if !tolerated {
			spec.Tolerations = append(spec.Tolerations, corev1.Toleration{
				Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(DefaultTolerationSeconds),
			})
		}
	}
}
