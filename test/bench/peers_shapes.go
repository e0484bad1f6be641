package bench

import (
	"context"
	"fmt"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
)

// podShape is a Pod CREATE on which a peer that does ha-injector's job must do what
// ha-injector does: the benchmark's Pod exercises one path of each injection, these the
// others (what is missing is added, what the workload chose is kept, what must be left
// alone is).
type podShape struct {
	name string
	pod  func(ns string) *corev1.Pod
}

var podShapes = []podShape{
	{"no tolerations, no securityContext, a pod-template-hash label", func(ns string) *corev1.Pod {
		p := reviewPod(ns)
		p.Spec.Tolerations = nil
		p.Labels["pod-template-hash"] = benchReplicaSetHash
		return p
	}},
	{"a 20 s not-ready toleration, an unreachable one without seconds, a keepalive sysctl of its own", func(ns string) *corev1.Pod {
		p := reviewPod(ns)
		p.Spec.Tolerations = []corev1.Toleration{
			{Key: policies.UnreachableTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			{Key: policies.NotReadyTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](20)},
		}
		p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "net.ipv4.tcp_keepalive_time", Value: "60"}}}
		return p
	}},
	{"a pod anti-affinity term of its own on kubernetes.io/hostname", func(ns string) *corev1.Pod {
		p := reviewPod(ns)
		p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web-server"}},
				TopologyKey:   "kubernetes.io/hostname",
			}},
		}}
		return p
	}},
	{"only per-pod labels", func(ns string) *corev1.Pod {
		p := reviewPod(ns)
		p.Labels = map[string]string{"pod-template-hash": benchReplicaSetHash, "controller-revision-hash": "5d8f7c9b"}
		return p
	}},
	{"hostNetwork", func(ns string) *corev1.Pod {
		p := reviewPod(ns)
		p.Spec.HostNetwork = true
		return p
	}},
	{"annotated ha-injector.io/inject: \"false\"", func(ns string) *corev1.Pod {
		p := reviewPod(ns)
		p.Annotations = map[string]string{policies.InjectAnnotation: "false"}
		return p
	}},
}

// answered sends review to t once and returns the injections of the pod its answer
// makes (the request's pod with the answer's patch applied, if any), and the patch.
func answered(ctx context.Context, t target, review loadgen.Request) (Injections, []byte, error) {
	hc, err := loadgen.NewClient(t.ca, 1)
	if err != nil {
		return Injections{}, nil, err
	}
	defer hc.CloseIdleConnections()
	answer, err := loadgen.Answer(ctx, hc, t.url+t.path, review.Body)
	if err != nil {
		return Injections{}, nil, fmt.Errorf("%s: %w", t.name, err)
	}
	if !answer.Allowed {
		return Injections{}, nil, fmt.Errorf("%s did not allow the pod: %v", t.name, answer.Result)
	}
	pod, err := patchedPod(review.Body, answer.Patch)
	if err != nil {
		return Injections{}, nil, fmt.Errorf("%s: %w", t.name, err)
	}
	return InjectionsOf(&pod.Spec), answer.Patch, nil
}

// shapes sends every podShape to ours and to peer over TLS and returns, for each shape
// on which the peer's answer does not inject what ours' does (parts), a line saying how.
func (r *peersRun) shapes(ctx context.Context, peer target, parts Parts) ([]string, error) {
	var differ []string
	for i, s := range podShapes {
		review, err := encodeReview(fmt.Sprintf("0b6c1d9e-shape-%d", i), podKind, admissionv1.Create, replicaSetController, s.pod(peersNamespace), nil)
		if err != nil {
			return nil, err
		}
		var got [2]Injections
		for side, t := range []target{r.ours, peer} {
			if got[side], _, err = answered(ctx, t, review); err != nil {
				return nil, fmt.Errorf("pod shape %q: %w", s.name, err)
			}
		}
		if !got[0].Equal(got[1], parts) {
			differ = append(differ, fmt.Sprintf("%s: ours %s, %s %s", s.name, got[0].Only(parts), peer.name, got[1].Only(parts)))
		}
	}
	return differ, nil
}
