package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/webhook"
)

// reviewKind is what an AdmissionReview says about the kind it carries, and the path of
// the webhook that admits it.
type reviewKind struct {
	path string
	gvk  metav1.GroupVersionKind
	gvr  metav1.GroupVersionResource
}

var (
	podKind        = reviewKind{webhook.PodPath, metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, metav1.GroupVersionResource{Version: "v1", Resource: "pods"}}
	deploymentKind = reviewKind{webhook.DeploymentPath, metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}}
)

// Who sends the requests, as the API server names them in userInfo.
const (
	replicaSetController = "system:serviceaccount:kube-system:replicaset-controller"
	gitOpsController     = "system:serviceaccount:argocd:argocd-application-controller"
)

// encodeReview encodes an AdmissionReview of obj (and, for an UPDATE, old) as the API
// server encodes it.
func encodeReview(uid string, res reviewKind, op admissionv1.Operation, user string, obj, old client.Object) (loadgen.Request, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return loadgen.Request{}, err
	}
	req := &admissionv1.AdmissionRequest{
		UID: types.UID(uid), Kind: res.gvk, Resource: res.gvr, RequestKind: &res.gvk, RequestResource: &res.gvr,
		Name: obj.GetName(), Namespace: obj.GetNamespace(), Operation: op, Object: runtime.RawExtension{Raw: raw},
		UserInfo: authenticationv1.UserInfo{Username: user},
		Options:  runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
	}
	if old != nil {
		if req.OldObject.Raw, err = json.Marshal(old); err != nil {
			return loadgen.Request{}, err
		}
		req.Options.Raw = []byte(`{"kind":"UpdateOptions","apiVersion":"meta.k8s.io/v1"}`)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
	return loadgen.Request{Path: res.path, Body: body}, err
}

// benchReplicaSet is the ReplicaSet of the admission load's Deployment in benchNamespace
// (its pod-template-hash is in the Pod's generated name); fill creates it.
const benchReplicaSet, benchReplicaSetHash = "web-server-" + benchReplicaSetHash, "7d4b9c6f5"

// reviewPod is a ReplicaSet's Pod as the API server sends it after
// DefaultTolerationSeconds (300 s tolerations added), without the owner reference.
func reviewPod(ns string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: benchReplicaSet + "-", Namespace: ns, Labels: map[string]string{"app": "web-server"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "nginx", Image: "nginx:1.27", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}},
			Tolerations: []corev1.Toleration{
				{Key: policies.NotReadyTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
				{Key: policies.UnreachableTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
			},
		},
	}
}

// ownedPodReview is the Pod of Reviews with its owner reference to benchReplicaSet, the
// way the ReplicaSet controller creates it, CREATE in namespace ns.
func ownedPodReview(ns string) (loadgen.Request, error) {
	pod := reviewPod(ns)
	pod.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "apps/v1", Kind: "ReplicaSet", Name: benchReplicaSet, UID: "9a3e7c41-2b6d-4f08-8c5e-1d7f0b2a6e93",
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}}
	return encodeReview("0b6c1d9e-owned-pod", podKind, admissionv1.Create, replicaSetController, pod, nil)
}

// reviewDeployment is the Deployment manifest of the admission load, as written by its
// owner (nothing injected).
func reviewDeployment(ns string) *appsv1.Deployment {
	labels := map[string]string{"app": "web-server"}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-server", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: reviewPod(ns).Spec.Containers}},
		},
	}
}

// Reviews are the requests of the admission load: a Pod as the API server sends it
// after DefaultTolerationSeconds, and a Deployment, both CREATE in namespace ns (which
// must be opted in for the webhook to do its work), encoded as the API server encodes.
func Reviews(ns string) ([]loadgen.Request, error) {
	p, err := encodeReview("0b6c1d9e-pod", podKind, admissionv1.Create, replicaSetController, reviewPod(ns), nil)
	if err != nil {
		return nil, err
	}
	d, err := encodeReview("0b6c1d9e-deployment", deploymentKind, admissionv1.Create, replicaSetController, reviewDeployment(ns), nil)
	if err != nil {
		return nil, err
	}
	return []loadgen.Request{p, d}, nil
}

// LargeEnvVars is the number of environment variables of the large Pod.
const LargeEnvVars = 1000

// LargePodReview is the Pod of Reviews with one container carrying LargeEnvVars
// environment variables whose values pad the AdmissionReview to about 1 MiB (the API
// server takes objects up to 1.5 MiB): the size at which decoding, copying and patching
// whole objects shows, CREATE in namespace ns.
func LargePodReview(ns string) (loadgen.Request, error) {
	pod := reviewPod(ns)
	env := make([]corev1.EnvVar, LargeEnvVars)
	for i := range env {
		env[i] = corev1.EnvVar{Name: fmt.Sprintf("SETTING_%04d", i), Value: "x"}
	}
	pod.Spec.Containers[0].Env = env
	encode := func() (loadgen.Request, error) {
		return encodeReview("0b6c1d9e-large-pod", podKind, admissionv1.Create, replicaSetController, pod, nil)
	}
	short, err := encode()
	if err != nil {
		return loadgen.Request{}, err
	}
	// Every value gets an equal share of what is left to 1 MiB; values are varied text,
	// like the configuration and keys that make real environments this large.
	pad := (1<<20-len(short.Body))/LargeEnvVars + 1
	for i := range env {
		env[i].Value = strings.Repeat(fmt.Sprintf("%04x-", i*7919%65536), pad/5+1)[:pad]
	}
	return encode()
}

// DeploymentUpdateReview is the GitOps case of a Deployment UPDATE in namespace ns: the
// old object is the Deployment of Reviews as ha-injector stored it (its CREATE sent to
// the ha-injector server at oursURL through hc, and the answer's JSON patch applied),
// the new one the same manifest re-applied, so without the injection. The webhook must
// keep the stored pod template (no rollout). Both are defaulted as the API server
// defaults every object before admission: the engine compares the two templates, and
// an undefaulted one would differ from a stored one where no real request does.
func DeploymentUpdateReview(ctx context.Context, hc *http.Client, oursURL, ns string) (loadgen.Request, error) {
	return deploymentUpdateReview(ctx, hc, oursURL, func() *appsv1.Deployment { return reviewDeployment(ns) })
}

// deploymentUpdateReview is DeploymentUpdateReview for the Deployment manifest returns,
// a new one on each call.
func deploymentUpdateReview(ctx context.Context, hc *http.Client, oursURL string, manifestOf func() *appsv1.Deployment) (loadgen.Request, error) {
	manifest := defaulted(manifestOf())
	create, err := encodeReview("0b6c1d9e-deployment-create", deploymentKind, admissionv1.Create, gitOpsController, manifest, nil)
	if err != nil {
		return loadgen.Request{}, err
	}
	answer, err := loadgen.Answer(ctx, hc, oursURL+create.Path, create.Body)
	if err != nil {
		return loadgen.Request{}, fmt.Errorf("the Deployment CREATE: %w", err)
	}
	if len(answer.Patch) == 0 {
		return loadgen.Request{}, errors.New("the Deployment CREATE was answered without a patch: nothing injected to update")
	}
	patch, err := jsonpatch.DecodePatch(answer.Patch)
	if err != nil {
		return loadgen.Request{}, err
	}
	raw, err := json.Marshal(manifest)
	if err != nil {
		return loadgen.Request{}, err
	}
	if raw, err = patch.Apply(raw); err != nil {
		return loadgen.Request{}, fmt.Errorf("applying the CREATE's patch: %w", err)
	}
	stored := &appsv1.Deployment{}
	if err := json.Unmarshal(raw, stored); err != nil {
		return loadgen.Request{}, err
	}
	// What the API server adds on CREATE, and keeps on UPDATE.
	stored.UID, stored.ResourceVersion, stored.Generation = "5f0e3a52-9d4c-4b8e-a1f7-3c2d6e8b9a01", "48213", 1
	stored.CreationTimestamp = metav1.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	reapplied := defaulted(manifestOf())
	reapplied.UID, reapplied.ResourceVersion, reapplied.Generation = stored.UID, stored.ResourceVersion, stored.Generation
	reapplied.CreationTimestamp = stored.CreationTimestamp
	return encodeReview("0b6c1d9e-deployment-update", deploymentKind, admissionv1.Update, gitOpsController, reapplied, stored)
}

// defaulted sets on d the defaults kube-apiserver gives a Deployment of this shape
// (k8s.io/kubernetes/pkg/apis/apps/v1 and core/v1 SetDefaults_*), which the module does
// not import.
func defaulted(d *appsv1.Deployment) *appsv1.Deployment {
	quarter := intstr.FromString("25%")
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &quarter, MaxSurge: &quarter}}
	d.Spec.RevisionHistoryLimit, d.Spec.ProgressDeadlineSeconds = ptr.To[int32](10), ptr.To[int32](600)
	spec := &d.Spec.Template.Spec
	spec.RestartPolicy, spec.DNSPolicy, spec.SchedulerName = corev1.RestartPolicyAlways, corev1.DNSClusterFirst, corev1.DefaultSchedulerName
	spec.TerminationGracePeriodSeconds = ptr.To[int64](corev1.DefaultTerminationGracePeriodSeconds)
	spec.SecurityContext = &corev1.PodSecurityContext{}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		c.ImagePullPolicy = corev1.PullIfNotPresent
		c.TerminationMessagePath, c.TerminationMessagePolicy = corev1.TerminationMessagePathDefault, corev1.TerminationMessageReadFile
		for j := range c.Ports {
			c.Ports[j].Protocol = corev1.ProtocolTCP
		}
	}
	return d
}
