// Package bench measures ha-injector's admission cost the way users meet it, side by
// side with a no-op webhook in the same run: AdmissionReview load over TLS against the
// real `ha-injector serve` binary and the no-op server (test/bench/noop), alternating so
// machine noise hits both alike; pod creation through a real kube-apiserver with and
// without the webhook; the memory of `serve` with 10,000 namespaces in its cache; and
// zero failed requests across a replica's SIGTERM and a certificate rotation. Absolute
// numbers are printed, never asserted.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/internal/controlplane"
	"github.com/ha-injector/ha-injector/internal/localwebhook"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/webhook"
)

// Sizes are how much load each scenario gets.
type Sizes struct {
	// Concurrency is the number of connections of the admission load.
	Concurrency int
	// Rounds alternate the two servers; each round gives each server RoundTime.
	Rounds    int
	RoundTime time.Duration
	// PodsPerNamespace are created through the API server in each of the two namespaces.
	PodsPerNamespace int
	// Namespaces and Policies fill the cache for the memory scenario.
	Namespaces, Policies int
	// ResilienceTime is the length of each resilience run.
	ResilienceTime time.Duration
}

// Full is what `make bench` runs.
var Full = Sizes{Concurrency: 8, Rounds: 3, RoundTime: 5 * time.Second, PodsPerNamespace: 2000, Namespaces: 10000, Policies: 100, ResilienceTime: 9 * time.Second}

// Short is the version `make test` runs: every scenario, little load.
var Short = Sizes{Concurrency: 4, Rounds: 1, RoundTime: time.Second, PodsPerNamespace: 100, Namespaces: 300, Policies: 10, ResilienceTime: 4 * time.Second}

// Row is one line of the report.
type Row struct {
	Scenario string   `json:"scenario"`
	Metric   string   `json:"metric"`
	Unit     string   `json:"unit"`
	Ours     float64  `json:"ours"`
	Baseline *float64 `json:"baseline"`
	Ratio    *float64 `json:"ratio"`
	// Target is what the row should reach, e.g. ">= 0.8" for a ratio; Met says if it did.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
}

func row(scenario, metric, unit string, ours float64, baseline *float64) Row {
	r := Row{Scenario: scenario, Metric: metric, Unit: unit, Ours: ours, Baseline: baseline}
	if baseline != nil && *baseline != 0 {
		r.Ratio = ptr.To(ours / *baseline)
	}
	return r
}

func (r Row) target(t string, met bool) Row {
	r.Target, r.Met = t, &met
	return r
}

// Run builds the binaries, starts a control plane and the servers, runs every scenario
// and returns the rows. Progress goes to log.
// With profile set, a CPU profile of `serve` under the admission load is written there.
func Run(ctx context.Context, sizes Sizes, log io.Writer, profile string) (rows []Row, err error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "ha-injector-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	step := func(format string, args ...any) { fmt.Fprintf(log, "==> "+format+"\n", args...) }

	step("Building ha-injector (make build, as the image does) and the no-op server")
	bin := filepath.Join(work, "bin")
	if out, err := exec.CommandContext(ctx, "make", "-C", root, "build", "BIN_DIR="+bin).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("make build: %v: %s", err, out)
	}
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(bin, "noop"), "./test/bench/noop")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build noop: %v: %s", err, out)
	}

	step("Starting kube-apiserver and etcd")
	env, err := controlplane.New(root)
	if err != nil {
		return nil, err
	}
	restCfg, err := env.Start()
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := env.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	restCfg.QPS, restCfg.Burst = 2000, 2000
	c, err := client.New(restCfg, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return nil, err
	}
	kubeconfig, err := writeKubeconfig(env, work)
	if err != nil {
		return nil, err
	}

	ca, err := certs.NewCA("ha-injector-bench-ca", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	certDir := filepath.Join(work, "certs")
	kp, _, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		return nil, err
	}
	if err := kp.WriteFiles(certDir, "tls.crt", "tls.key"); err != nil {
		return nil, err
	}
	for _, obj := range []client.Object{
		&v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace, Labels: map[string]string{policies.PolicyLabel: "default"}}},
	} {
		if err := c.Create(ctx, obj); err != nil {
			return nil, err
		}
	}

	s := &servers{bin: bin, work: work, kubeconfig: kubeconfig, certDir: certDir, ca: ca.PEM}
	defer s.stopAll()

	// Memory first: an instance in the (nearly) empty cluster, then one started after
	// the cluster is filled, each measured after the same warm-up.
	step("Memory: serve in an empty cluster")
	empty, err := s.startOurs("serve-empty")
	if err != nil {
		return nil, err
	}
	emptyRSS, emptyHeap, err := s.memory(ctx, empty)
	if err != nil {
		return nil, err
	}
	if err := stopGracefully(empty.proc, 30*time.Second); err != nil {
		return nil, err
	}
	step("Memory: filling the cluster with %d namespaces and %d HAPolicies", sizes.Namespaces, sizes.Policies)
	if err := fill(ctx, c, sizes.Namespaces, sizes.Policies); err != nil {
		return nil, err
	}
	ours, err := s.startOurs("serve-1")
	if err != nil {
		return nil, err
	}
	fullRSS, fullHeap, err := s.memory(ctx, ours)
	if err != nil {
		return nil, err
	}
	scenario := fmt.Sprintf("memory, %d namespaces + %d HAPolicies (baseline: empty cluster)", sizes.Namespaces, sizes.Policies)
	const mib = 1 << 20
	rows = append(rows,
		row(scenario, "RSS", "MiB", float64(fullRSS)/mib, ptr.To(float64(emptyRSS)/mib)).target("< 64 MiB", fullRSS < 64*mib),
		row(scenario, "Go heap in use", "MiB", float64(fullHeap)/mib, ptr.To(float64(emptyHeap)/mib)),
	)

	noop, err := s.startNoop()
	if err != nil {
		return nil, err
	}
	admissionRows, err := admissionLoad(ctx, sizes, step, ca.PEM, ours.url, noop.url)
	if err != nil {
		return nil, err
	}
	rows = append(rows, admissionRows...)
	if profile != "" {
		step("Profiling serve under the admission load into %s", profile)
		if err := s.profile(ctx, ours, sizes.Concurrency, 5, profile); err != nil {
			return nil, err
		}
	}

	apiRows, err := throughAPIServer(ctx, sizes, step, c, root, ours.url, ca.PEM)
	if err != nil {
		return nil, err
	}
	rows = append(rows, apiRows...)

	resilienceRows, err := s.resilience(ctx, sizes, step, ours, ca)
	if err != nil {
		return nil, err
	}
	return append(rows, resilienceRows...), nil
}

func writeKubeconfig(env *envtest.Environment, dir string) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", err
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}

// fill creates namespaces (each opted in to one of the policies) and policies, in
// parallel.
func fill(ctx context.Context, c client.Client, namespaces, policyCount int) error {
	objs := make(chan client.Object)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range objs {
				if err := c.Create(ctx, o); err != nil {
					select {
					case errs <- fmt.Errorf("%s: %w", o.GetName(), err):
					default:
					}
				}
			}
		}()
	}
	for i := range policyCount {
		objs <- &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("policy-%03d", i)}}
	}
	for i := range namespaces {
		objs <- &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("team-%05d", i), Labels: map[string]string{
			policies.PolicyLabel: fmt.Sprintf("policy-%03d", i%max(policyCount, 1)),
		}}}
	}
	close(objs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// benchNamespace is the opted-in namespace of the admission load.
const benchNamespace = "bench"

// Reviews are the requests of the admission load: a Pod as the API server sends it
// after DefaultTolerationSeconds, and a Deployment, both CREATE in namespace ns (which
// must be opted in for the webhook to do its work), encoded as the API server encodes.
func Reviews(ns string) ([]loadgen.Request, error) {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-server-7d4b9c6f5-", Namespace: ns, Labels: map[string]string{"app": "web-server"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "nginx", Image: "nginx:1.27", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}},
			Tolerations: []corev1.Toleration{
				{Key: policies.NotReadyTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
				{Key: policies.UnreachableTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
			},
		},
	}
	labels := map[string]string{"app": "web-server"}
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-server", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: pod.Spec.Containers}},
		},
	}
	mk := func(uid, path string, gvk metav1.GroupVersionKind, resource metav1.GroupVersionResource, obj runtime.Object) (loadgen.Request, error) {
		raw, err := json.Marshal(obj)
		if err != nil {
			return loadgen.Request{}, err
		}
		body, err := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{
				UID: types.UID(uid), Kind: gvk, Resource: resource, RequestKind: &gvk, RequestResource: &resource,
				Namespace: ns, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
				UserInfo: authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:replicaset-controller"},
				Options:  runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
			},
		})
		return loadgen.Request{Path: path, Body: body}, err
	}
	p, err := mk("0b6c1d9e-pod", webhook.PodPath, metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, pod)
	if err != nil {
		return nil, err
	}
	d, err := mk("0b6c1d9e-deployment", webhook.DeploymentPath, metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, dep)
	if err != nil {
		return nil, err
	}
	return []loadgen.Request{p, d}, nil
}

// admissionLoad runs the same load against both servers in alternating rounds: first as
// fast as each answers (throughput), then at one fixed rate for both (latency).
func admissionLoad(ctx context.Context, sizes Sizes, step func(string, ...any), ca []byte, ours, noop string) ([]Row, error) {
	mix, err := Reviews(benchNamespace)
	if err != nil {
		return nil, err
	}
	run := func(url string, rate float64) (loadgen.Result, error) {
		return loadgen.Run(ctx, loadgen.Config{BaseURL: url, CA: ca, Concurrency: sizes.Concurrency, Duration: sizes.RoundTime, Rate: rate, Mix: mix})
	}
	// Warm both up (connections, caches, JIT-free but allocator-warm).
	for _, url := range []string{ours, noop} {
		if _, err := loadgen.Run(ctx, loadgen.Config{BaseURL: url, CA: ca, Concurrency: sizes.Concurrency, Requests: 200, Mix: mix}); err != nil {
			return nil, err
		}
	}
	type pair struct{ ours, noop []loadgen.Result }
	alternate := func(rate float64) (pair, error) {
		var p pair
		for i := range sizes.Rounds {
			// Swap who goes first each round.
			order := []bool{true, false}
			if i%2 == 1 {
				order = []bool{false, true}
			}
			for _, isOurs := range order {
				url := noop
				if isOurs {
					url = ours
				}
				res, err := run(url, rate)
				if err != nil {
					return p, err
				}
				if isOurs {
					p.ours = append(p.ours, res)
				} else {
					p.noop = append(p.noop, res)
				}
			}
		}
		return p, nil
	}

	step("Admission over TLS, closed loop with %d connections: %d rounds of %s each, alternating", sizes.Concurrency, sizes.Rounds, sizes.RoundTime)
	fastest, err := alternate(0)
	if err != nil {
		return nil, err
	}
	oursTput, noopTput := median(fastest.ours, loadgen.Result.Throughput), median(fastest.noop, loadgen.Result.Throughput)
	scenario := fmt.Sprintf("admission, %d connections, as fast as answered", sizes.Concurrency)
	tputRow := row(scenario, "throughput", "req/s", oursTput, &noopTput)
	rows := []Row{tputRow.target(">= 0.8", tputRow.Ratio != nil && *tputRow.Ratio >= 0.8)}
	for _, q := range []float64{50, 99} {
		rows = append(rows, row(scenario, fmt.Sprintf("p%g latency", q), "ms", ms(median(fastest.ours, pct(q))), ptr.To(ms(median(fastest.noop, pct(q))))))
	}

	// A rate both servers sustain: latency is compared at the same load, not past
	// one server's capacity (where queueing, not the work, sets the latency).
	rate := 0.5 * min(oursTput, noopTput)
	step("Admission at a fixed %.0f req/s (half the slower server's throughput) for both", rate)
	fixed, err := alternate(rate)
	if err != nil {
		return nil, err
	}
	scenario = fmt.Sprintf("admission, fixed %.0f req/s", rate)
	for _, q := range []float64{50, 90, 99, 99.9} {
		r := row(scenario, fmt.Sprintf("p%g latency", q), "ms", ms(median(fixed.ours, pct(q))), ptr.To(ms(median(fixed.noop, pct(q)))))
		if q == 99 {
			r = r.target("<= 1.5", r.Ratio != nil && *r.Ratio <= 1.5)
		}
		rows = append(rows, r)
	}
	failed := 0.0
	for _, res := range slices.Concat(fastest.ours, fixed.ours) {
		failed += float64(res.Errors)
	}
	noopFailed := 0.0
	for _, res := range slices.Concat(fastest.noop, fixed.noop) {
		noopFailed += float64(res.Errors)
	}
	rows = append(rows, row("admission, all runs", "failed requests", "count", failed, &noopFailed).target("0", failed == 0))
	return rows, nil
}

func pct(q float64) func(loadgen.Result) float64 {
	return func(r loadgen.Result) float64 { return float64(r.Percentile(q)) }
}

// median of a measure over the rounds, robust to one noisy round.
func median(results []loadgen.Result, measure func(loadgen.Result) float64) float64 {
	vals := make([]float64, 0, len(results))
	for _, r := range results {
		vals = append(vals, measure(r))
	}
	slices.Sort(vals)
	if len(vals) == 0 {
		return 0
	}
	return vals[len(vals)/2]
}

func ms(ns float64) float64 { return ns / 1e6 }

// throughAPIServer creates pods through the API server in an opted-in namespace (the
// chart's webhook configuration, pointed at ours) and in one that is not, alternating
// batches, and compares the creation latency.
func throughAPIServer(ctx context.Context, sizes Sizes, step func(string, ...any), c client.Client, root, oursURL string, ca []byte) ([]Row, error) {
	// Only the webhook configuration: the default policy is there already.
	if err := localwebhook.Install(ctx, c, root, localwebhook.ProvidedValues(nil), oursURL, ca, false); err != nil {
		return nil, err
	}
	for name, labels := range map[string]map[string]string{"pods-opted-in": {policies.PolicyLabel: "default"}, "pods-plain": nil} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
			return nil, err
		}
	}
	if err := localwebhook.WaitEffective(ctx, c, "pods-opted-in", 30*time.Second); err != nil {
		return nil, err
	}

	step("Through the API server: %d pods in an opted-in namespace and %d in a plain one, alternating batches", sizes.PodsPerNamespace, sizes.PodsPerNamespace)
	latencies := map[string][]time.Duration{}
	elapsed := map[string]time.Duration{}
	const batch = 100
	for done := 0; done < sizes.PodsPerNamespace; done += batch {
		for _, ns := range []string{"pods-opted-in", "pods-plain"} {
			n := min(batch, sizes.PodsPerNamespace-done)
			start := time.Now()
			l, err := createPods(ctx, c, ns, done, n, sizes.Concurrency)
			if err != nil {
				return nil, err
			}
			elapsed[ns] += time.Since(start)
			latencies[ns] = append(latencies[ns], l...)
		}
	}
	scenario := fmt.Sprintf("pod creation through kube-apiserver, %d pods, %d clients (baseline: namespace not opted in)", sizes.PodsPerNamespace, sizes.Concurrency)
	rows := []Row{row(scenario, "throughput", "pods/s",
		float64(sizes.PodsPerNamespace)/elapsed["pods-opted-in"].Seconds(), ptr.To(float64(sizes.PodsPerNamespace)/elapsed["pods-plain"].Seconds()))}
	for _, q := range []float64{50, 99} {
		rows = append(rows, row(scenario, fmt.Sprintf("p%g latency", q), "ms", ms(float64(quantile(latencies["pods-opted-in"], q))), ptr.To(ms(float64(quantile(latencies["pods-plain"], q))))))
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace("pods-opted-in")); err != nil {
		return nil, err
	}
	unmutated := 0
	for _, p := range pods.Items {
		if p.Annotations[policies.StatusAnnotation] == "" {
			unmutated++
		}
	}
	return append(rows, row(scenario, "opted-in pods stored without the injections", "count", float64(unmutated), nil).target("0", unmutated == 0)), nil
}

func benchPod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "web-server"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "nginx", Image: "nginx:1.27"}}},
	}
}

func createPods(ctx context.Context, c client.Client, ns string, first, n, workers int) ([]time.Duration, error) {
	var mu sync.Mutex
	var out []time.Duration
	var firstErr error
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				start := time.Now()
				err := c.Create(ctx, benchPod(ns, fmt.Sprintf("web-%05d", i)))
				d := time.Since(start)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				out = append(out, d)
				mu.Unlock()
			}
		}()
	}
	for i := first; i < first+n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return out, firstErr
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(q/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
