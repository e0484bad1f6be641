package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/test/harness/proc"
)

const mib = 1 << 20

// memory makes srv cache what it caches in a busy cluster, warms it up with the
// admission mix, waits for its RSS to settle, then reads its RSS and Go heap.
func (s *servers) memory(ctx context.Context, srv *server) (rss, heap int64, err error) {
	// A ReplicaSet's Pod: serve looks its owner up in its ReplicaSets index, which
	// readiness waited for, so the count below includes every ReplicaSet of the cluster.
	owned, err := ownedPodReview(benchNamespace)
	if err != nil {
		return 0, 0, err
	}
	hc, err := loadgen.NewClient(s.ca, 1)
	if err != nil {
		return 0, 0, err
	}
	defer hc.CloseIdleConnections()
	hc.Timeout = 2 * time.Minute // the first lookup lists 50,000 ReplicaSets
	for range 3 {
		answer, err := loadgen.Answer(ctx, hc, srv.url+owned.Path, owned.Body)
		if err != nil {
			return 0, 0, fmt.Errorf("a ReplicaSet's Pod: %w", err)
		}
		if !answer.Allowed {
			return 0, 0, fmt.Errorf("a ReplicaSet's Pod was not allowed: %v", answer.Result)
		}
	}
	mix, err := Reviews(benchNamespace)
	if err != nil {
		return 0, 0, err
	}
	res, err := loadgen.Run(ctx, loadgen.Config{BaseURL: srv.url, CA: s.ca, Concurrency: 4, Requests: 1000, Mix: mix})
	if err != nil {
		return 0, 0, err
	}
	if res.Errors > 0 {
		return 0, 0, fmt.Errorf("warm-up: %d of %d requests failed: %v", res.Errors, res.Sent, res.FirstErr)
	}
	if rss, err = settledRSS(ctx, srv.proc, 30*time.Second); err != nil {
		return 0, 0, err
	}
	inUse, err := goMetric(srv.metrics, heapInUseMetric)
	return rss, int64(inUse), err
}

// settledRSS samples p's RSS every half second until four samples in a row lie within
// 1% of each other (caches filled, the warm-up's garbage collected) or timeout passes,
// and returns the last sample.
func settledRSS(ctx context.Context, p *proc.Process, timeout time.Duration) (int64, error) {
	var samples []int64
	for deadline := time.Now().Add(timeout); ; {
		rss, err := procRSS(p)
		if err != nil {
			return 0, err
		}
		samples = append(samples, rss)
		if n := len(samples); n >= 4 {
			last := samples[n-4:]
			if slices.Max(last)-slices.Min(last) <= slices.Max(last)/100 || time.Now().After(deadline) {
				return rss, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// fill creates the policies, the namespaces (each opted in to one of the policies),
// then the ReplicaSets spread over the namespaces (and benchReplicaSet),
// each set with 32 workers in parallel. It returns the bytes of annotations of one
// ReplicaSet.
func fill(ctx context.Context, c client.Client, sizes Sizes) (annotationBytes int, err error) {
	policyOf := func(ns int) string { return fmt.Sprintf("policy-%03d", ns%max(sizes.Policies, 1)) }
	err = createAll(ctx, c, func(objs chan<- client.Object) {
		for i := range sizes.Policies {
			objs <- &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("policy-%03d", i)}}
		}
		for i := range sizes.Namespaces {
			objs <- &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("team-%05d", i), Labels: map[string]string{policies.PolicyLabel: policyOf(i)}}}
		}
	})
	if err != nil || sizes.Namespaces == 0 {
		return 0, err
	}
	err = createAll(ctx, c, func(objs chan<- client.Object) {
		objs <- replicaSet(benchNamespace, "web-server", benchReplicaSetHash, "default", 0)
		for i := range sizes.ReplicaSets {
			ns := i % sizes.Namespaces
			objs <- replicaSet(fmt.Sprintf("team-%05d", ns), fmt.Sprintf("app-%d", i/sizes.Namespaces), fmt.Sprintf("%09x", uint64(i)*0x9e3779b1%(1<<36)), policyOf(ns), i+1)
		}
	})
	if err == nil {
		err = fillCrowded(ctx, c, sizes)
	}
	for k, v := range replicaSet("team-00000", "app-0", benchReplicaSetHash, policyOf(0), 1).Annotations {
		annotationBytes += len(k) + len(v)
	}
	return annotationBytes, err
}

// createAll creates what produce sends, with 32 workers; the client's QPS and burst
// must allow that many. It returns the first error.
func createAll(ctx context.Context, c client.Client, produce func(chan<- client.Object)) error {
	objs := make(chan client.Object, 64)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range objs {
				if err := c.Create(ctx, o); err != nil {
					select {
					case errs <- fmt.Errorf("%s/%s: %w", o.GetNamespace(), o.GetName(), err):
					default:
					}
				}
			}
		}()
	}
	produce(objs)
	close(objs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// replicaSet is the n-th ReplicaSet of a Deployment that ha-injector injected, as the
// Deployment controller stores it: the Deployment's annotations copied (its
// ha-injector.io/status record, about 600 bytes, and a kubectl
// last-applied-configuration of about 1.3 KiB, which the Deployment controller itself
// skips but which stands for the GitOps annotations of that size it does copy), the
// controller's revision and replica annotations, and the injected pod template.
// About 2 KiB of annotations: what serve's ReplicaSet cache holds per ReplicaSet.
func replicaSet(ns, deployment, hash, policy string, n int) *appsv1.ReplicaSet {
	labels := map[string]string{"app": deployment, "pod-template-hash": hash}
	status := statusRecord(policy, deployment)
	template := podTemplate(deployment)
	template.Labels = labels
	template.Annotations = map[string]string{policies.StatusAnnotation: status}
	injectInto(&template.Spec, deployment)
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: deployment + "-" + hash, Labels: labels,
			Annotations: map[string]string{
				"deployment.kubernetes.io/desired-replicas": "3",
				"deployment.kubernetes.io/max-replicas":     "4",
				"deployment.kubernetes.io/revision":         "1",
				corev1.LastAppliedConfigAnnotation:          lastApplied(ns, deployment),
				policies.StatusAnnotation:                   status,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: deployment, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
				UID: types.UID(fmt.Sprintf("6f1c2a9e-0000-4000-8000-%012d", n)),
			}},
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: template,
		},
	}
}

// podTemplate is the pod template of the Deployment manifest of the memory scenario: one
// container with the settings a production manifest carries.
func podTemplate(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: app, Image: "registry.example.com/team/" + app + ":1.4.2",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
			Env: []corev1.EnvVar{
				{Name: "LOG_LEVEL", Value: "info"},
				{Name: "DATABASE_URL", Value: "postgres://" + app + "@db.internal:5432/" + app + "?sslmode=require"},
				{Name: "CACHE_ADDR", Value: "redis.internal:6379"},
				{Name: "FEATURE_FLAGS", Value: "checkout-v2,search-suggestions,async-export"},
				{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: "http://otel-collector.observability:4317"},
				{Name: "OTEL_SERVICE_NAME", Value: app},
				{Name: "JAVA_TOOL_OPTIONS", Value: "-XX:MaxRAMPercentage=75 -XX:+ExitOnOutOfMemoryError"},
			},
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/" + app, ReadOnly: true}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
			},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromString("http")}}, PeriodSeconds: 5},
			LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/live", Port: intstr.FromString("http")}}, InitialDelaySeconds: 10},
		}},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: app + "-config"}}}}},
		},
	}
}

// lastApplied is kubectl's record of the Deployment manifest, as kubectl writes it.
func lastApplied(ns, app string) string {
	d := appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns, Labels: map[string]string{"app": app, "team": ns}, Annotations: map[string]string{}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: podTemplate(app),
		},
	}
	data, err := json.Marshal(d)
	if err != nil {
		panic(err) // a fixed, valid object
	}
	return string(data) + "\n"
}

// statusRecord is an ha-injector.io/status record of a full injection by policy.
func statusRecord(policy, app string) string {
	return `{"v":1,"policy":"` + policy + `","hash":"86216eb4","applied":["antiAffinity","tolerations","sysctls"],` +
		`"antiAffinity":{"weight":100,"term":{"labelSelector":{"matchLabels":{"app":"` + app + `"}},"topologyKey":"kubernetes.io/hostname","matchLabelKeys":["pod-template-hash"]}},` +
		`"tolerations":[{"key":"node.kubernetes.io/not-ready","seconds":60},{"key":"node.kubernetes.io/unreachable","seconds":30}],` +
		`"sysctls":["net.ipv4.tcp_keepalive_intvl=30","net.ipv4.tcp_keepalive_probes=5","net.ipv4.tcp_keepalive_time=30"],` +
		`"initContainer":{"image":"ghcr.io/ha-injector/ha-injector:v1.0.0","command":["/ha-sysctl","net.ipv4.tcp_retries2=9"]}}`
}

// injectInto adds what ha-injector injects into a pod template: anti-affinity, short
// tolerations, safe sysctls and the ha-sysctl init container.
func injectInto(spec *corev1.PodSpec, app string) {
	spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			TopologyKey:   "kubernetes.io/hostname", MatchLabelKeys: []string{"pod-template-hash"},
		}}},
	}}
	spec.Tolerations = []corev1.Toleration{
		{Key: policies.NotReadyTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](60)},
		{Key: policies.UnreachableTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)},
	}
	spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{
		{Name: "net.ipv4.tcp_keepalive_intvl", Value: "30"}, {Name: "net.ipv4.tcp_keepalive_probes", Value: "5"}, {Name: "net.ipv4.tcp_keepalive_time", Value: "30"},
	}}
	spec.InitContainers = []corev1.Container{{
		Name: policies.SysctlContainerName, Image: "ghcr.io/ha-injector/ha-injector:v1.0.0", Command: []string{"/ha-sysctl", "net.ipv4.tcp_retries2=9"},
		SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true), RunAsUser: ptr.To[int64](0), RunAsNonRoot: ptr.To(false)},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		},
	}}
}
