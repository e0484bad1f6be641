package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
)

// noopLabel opts a namespace in to the no-op webhook, as policies.PolicyLabel opts it
// in to ours.
const noopLabel = "bench.ha-injector.io/noop"

// The namespaces of pod creation through the API server, one per side.
const (
	// apiOursNS is opted in to the default policy: ours' webhook serves it.
	apiOursNS = "pods-opted-in"
	// apiNoopNS is opted in to the no-op webhook.
	apiNoopNS = "pods-noop"
	// apiNativeNS is opted in to nativePolicy, which native mode serves; ours' webhook
	// configuration leaves it out.
	apiNativeNS = "pods-native"
	// apiNoneNS opts in to nothing: no admission webhook or policy applies.
	apiNoneNS = "pods-no-admission"
)

// nativePolicy is the HAPolicy native mode applies in the benchmark: the default
// policy's spec (empty: every default) under a name of its own, so that its bindings
// select only apiNativeNS and not the namespaces of ours' webhook.
const nativePolicy = "native"

// throughAPIServer creates pods through the API server in five namespaces, alternating
// batches (each batch in every namespace, the order rotating): one opted in to ours
// (the chart's webhook configuration, pointed at ours), one opted in to the no-op
// webhook (registered the same way), one served by native mode (the API server applies
// the same policy itself), one where nothing applies, and one served by native mode's
// floor (installFloor: the same injections as a constant patch). It compares the creation
// throughput and latency of ours with the no-op's (both pay the API server's webhook
// call, so the difference is our handler), of native mode with ours, and of native
// mode with no admission at all; and checks that ours and native mode stored the same
// injections.
// apiServerPID is the kube-apiserver's process, and ours and noop the webhook servers
// (their CPU time is counted per side).
func throughAPIServer(ctx context.Context, sizes Sizes, step func(string, ...any), c client.Client, restCfg *rest.Config, apiServerPID int, root string, ours, noop *server, ca []byte) ([]Row, error) {
	oursURL, noopURL := ours.url, noop.url
	// Only the webhook configuration: the default policy is there already.
	values := localwebhook.ProvidedValues(map[string]any{"webhook": map[string]any{"excludeNamespaces": []any{apiNativeNS}}})
	if err := localwebhook.Install(ctx, c, root, values, oursURL, ca, false); err != nil {
		return nil, err
	}
	if err := installNoop(ctx, c, root, noopURL, ca); err != nil {
		return nil, err
	}
	if err := c.Create(ctx, &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: nativePolicy}}); err != nil {
		return nil, err
	}
	// Left installed: the API server is stopped after the benchmark.
	if _, err := installNative(ctx, c, restCfg, root, nativePolicy); err != nil {
		return nil, err
	}
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: apiOursNS, Labels: map[string]string{policies.PolicyLabel: "default"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: apiNoopNS, Labels: map[string]string{noopLabel: "true"}}},
		nativeNamespace(apiNativeNS, nativePolicy),
		{ObjectMeta: metav1.ObjectMeta{Name: apiNoneNS}},
	} {
		if err := c.Create(ctx, ns); err != nil {
			return nil, err
		}
	}
	if err := localwebhook.WaitEffective(ctx, c, apiOursNS, 30*time.Second); err != nil {
		return nil, err
	}
	if err := waitNoopCalled(ctx, c, noopURL, ca, apiNoopNS, 30*time.Second); err != nil {
		return nil, err
	}
	if err := localwebhook.WaitNative(ctx, c, apiNativeNS, 30*time.Second); err != nil {
		return nil, err
	}
	if err := installFloor(ctx, c, apiOursNS); err != nil {
		return nil, err
	}

	sides := []string{apiOursNS, apiNoopNS, apiNativeNS, apiNoneNS, apiFloorNS}
	step("Through the API server: %d pods in each of 5 namespaces (ours' webhook, the no-op webhook, native mode, no admission, native mode's floor), %d clients, batches of %d alternating",
		sizes.PodsPerNamespace, sizes.Concurrency, apiBatch)
	latencies := map[string][]time.Duration{}
	elapsed := map[string]time.Duration{}
	// The CPU time kube-apiserver, ours and the no-op used during each side's batches.
	pids := []int{apiServerPID, ours.proc.Pid(), noop.proc.Pid()}
	cpu := map[string][]time.Duration{}
	sample := func() ([]time.Duration, error) {
		out := make([]time.Duration, len(pids))
		for i, pid := range pids {
			var err error
			if out[i], err = pidCPU(pid); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	for _, ns := range sides {
		cpu[ns] = make([]time.Duration, len(pids))
	}
	// The API server's count of native mode's policy evaluations, across the batches:
	// only the pods of apiNativeNS are bound to it.
	hc, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		return nil, err
	}
	checks0, failed0, err := policyChecks(ctx, hc, restCfg, nativeName)
	if err != nil {
		return nil, err
	}
	for done, i := 0, 0; done < sizes.PodsPerNamespace; done, i = done+apiBatch, i+1 {
		for k := range sides {
			ns := sides[(i+k)%len(sides)]
			n := min(apiBatch, sizes.PodsPerNamespace-done)
			before, err := sample()
			if err != nil {
				return nil, err
			}
			start := time.Now()
			l, err := createPods(ctx, c, ns, done, n, sizes.Concurrency)
			if err != nil {
				return nil, fmt.Errorf("creating pods in %s: %w", ns, err)
			}
			elapsed[ns] += time.Since(start)
			latencies[ns] = append(latencies[ns], l...)
			after, err := sample()
			if err != nil {
				return nil, err
			}
			for j := range pids {
				cpu[ns][j] += after[j] - before[j]
			}
		}
	}
	checks1, failed1, err := policyChecks(ctx, hc, restCfg, nativeName)
	if err != nil {
		return nil, err
	}
	// perPod is the CPU time of the processes j over the side's pods, in ms.
	perPod := func(ns string, j ...int) float64 {
		var total time.Duration
		for _, k := range j {
			total += cpu[ns][k]
		}
		return ms(float64(total) / float64(sizes.PodsPerNamespace))
	}
	const apiServer, oursServer = 0, 1
	throughput := func(ns string) float64 { return float64(sizes.PodsPerNamespace) / elapsed[ns].Seconds() }
	compare := func(scenario, ours, baseline string) []Row {
		rows := []Row{row(scenario, "throughput", "pods/s", throughput(ours), ptr.To(throughput(baseline)))}
		for _, q := range []float64{50, 99} {
			rows = append(rows, row(scenario, fmt.Sprintf("p%g latency", q), "ms", ms(float64(quantile(latencies[ours], q))), ptr.To(ms(float64(quantile(latencies[baseline], q))))))
		}
		return rows
	}

	scenario := fmt.Sprintf("pod creation through kube-apiserver, %d pods, %d clients (baseline: no-op webhook)", sizes.PodsPerNamespace, sizes.Concurrency)
	rows := compare(scenario, apiOursNS, apiNoopNS)
	rows[0] = atLeast(rows[0], 0.9)
	var oursPods, nativePods corev1.PodList
	if err := c.List(ctx, &oursPods, client.InNamespace(apiOursNS)); err != nil {
		return nil, err
	}
	if err := c.List(ctx, &nativePods, client.InNamespace(apiNativeNS)); err != nil {
		return nil, err
	}
	unmutated := 0
	for _, p := range oursPods.Items {
		if p.Annotations[policies.StatusAnnotation] == "" {
			unmutated++
		}
	}
	rows = append(rows, row(scenario, "opted-in pods stored without the injections", "count", float64(unmutated), nil).target("0", unmutated == 0))

	// Native mode next to ours' webhook: the targets of the native-mode issue.
	native := compare(NativeScenario, apiNativeNS, apiOursNS)
	native[0] = atLeast(native[0], 1.25)
	native[2] = atMost(native[2], 0.8)
	rows = append(rows, native...)
	rows = append(rows,
		row(NativeScenario, "kube-apiserver CPU time per pod", "ms", perPod(apiNativeNS, apiServer), ptr.To(perPod(apiOursNS, apiServer))),
		row(NativeScenario, "CPU time per pod of kube-apiserver and the webhook server", "ms", perPod(apiNativeNS, apiServer, oursServer), ptr.To(perPod(apiOursNS, apiServer, oursServer))),
		row(NativeScenario, "MutatingAdmissionPolicy evaluations per pod ("+policyCheckMetric+")", "", (checks1-checks0)/float64(sizes.PodsPerNamespace), nil),
		row(NativeScenario, "MutatingAdmissionPolicy evaluations that ended in an error", "count", failed1-failed0, nil).target("0", failed1 == failed0),
	)
	if len(oursPods.Items) == 0 || len(nativePods.Items) == 0 {
		return nil, fmt.Errorf("no pods stored in %s or %s", apiOursNS, apiNativeNS)
	}
	withoutRecord := 0
	for i := range nativePods.Items {
		if !nativeRecord(&nativePods.Items[i]) {
			withoutRecord++
		}
	}
	// The same work: every pod of both sides carries exactly the injections of ours'
	// first stored pod (the records differ by design: native mode's names no parts).
	reference := InjectionsOf(&oursPods.Items[0].Spec)
	differ := func(pods []corev1.Pod) int {
		n := 0
		for i := range pods {
			if !InjectionsOf(&pods[i].Spec).Equal(reference, AllParts) {
				n++
			}
		}
		return n
	}
	nativeDiffer, oursDiffer := differ(nativePods.Items), differ(oursPods.Items)
	if got := InjectionsOf(&nativePods.Items[0].Spec); !got.Equal(reference, AllParts) {
		step("native mode's first pod differs from ours': native %s, ours %s", got, reference)
	}
	rows = append(rows,
		row(NativeScenario, "opted-in pods stored without native mode's record", "count", float64(withoutRecord), nil).target("0", withoutRecord == 0),
		row(NativeScenario, "pods stored with injections that differ from the webhook's first pod ("+AllParts.String()+")", "count",
			float64(nativeDiffer), ptr.To(float64(oursDiffer))).target("0 for both", nativeDiffer == 0 && oursDiffer == 0),
	)
	// Native mode next to no admission at all: reported, no target.
	rows = append(rows, compare(NativeNoAdmissionScenario, apiNativeNS, apiNoneNS)...)
	rows = append(rows, row(NativeNoAdmissionScenario, "kube-apiserver CPU time per pod", "ms", perPod(apiNativeNS, apiServer), ptr.To(perPod(apiNoneNS, apiServer))))

	// Native mode's floor: a MutatingAdmissionPolicy that writes the same answer with no
	// work to find it, next to the webhook (native mode's targets, for scale: reported, no target)
	// and to no admission.
	var floorPods corev1.PodList
	if err := c.List(ctx, &floorPods, client.InNamespace(apiFloorNS)); err != nil {
		return nil, err
	}
	if len(floorPods.Items) != sizes.PodsPerNamespace {
		return nil, fmt.Errorf("%d pods stored in %s, not %d", len(floorPods.Items), apiFloorNS, sizes.PodsPerNamespace)
	}
	rows = append(rows, compare(FloorScenario, apiFloorNS, apiOursNS)...)
	rows = append(rows,
		row(FloorScenario, "kube-apiserver CPU time per pod", "ms", perPod(apiFloorNS, apiServer), ptr.To(perPod(apiOursNS, apiServer))),
		row(FloorScenario, "CPU time per pod of kube-apiserver and the webhook server", "ms", perPod(apiFloorNS, apiServer, oursServer), ptr.To(perPod(apiOursNS, apiServer, oursServer))),
		row(FloorScenario, "pods stored with injections that differ from the webhook's first pod ("+AllParts.String()+")", "count",
			float64(differ(floorPods.Items)), nil).target("0", differ(floorPods.Items) == 0),
	)
	rows = append(rows, compare(FloorNoAdmissionScenario, apiFloorNS, apiNoneNS)...)
	return append(rows, row(FloorNoAdmissionScenario, "kube-apiserver CPU time per pod", "ms", perPod(apiFloorNS, apiServer), ptr.To(perPod(apiNoneNS, apiServer)))), nil
}

// The scenarios of native mode's rows through the API server.
const (
	NativeScenario            = "pod creation through kube-apiserver, native (baseline: webhook)"
	NativeNoAdmissionScenario = "pod creation through kube-apiserver, native (baseline: no admission)"
)

// apiBatch is how many pods are created in one namespace before the next takes its turn.
const apiBatch = 100

// installNoop registers the no-op server at url the way the chart registers ours
// (installPeer), in namespaces labelled noopLabel.
func installNoop(ctx context.Context, c client.Client, root, url string, ca []byte) error {
	return installPeer(ctx, c, root, "ha-injector-bench-noop", "noop.", noopLabel, false, url, ca)
}

// optInTo rewrites the selector's opt-in expression (policies.PolicyLabel Exists) to
// key, and reports whether it had one.
func optInTo(sel *metav1.LabelSelector, key string) bool {
	if sel == nil {
		return false
	}
	for i, e := range sel.MatchExpressions {
		if e.Key == policies.PolicyLabel && e.Operator == metav1.LabelSelectorOpExists {
			sel.MatchExpressions[i].Key = key
			return true
		}
	}
	return false
}

// waitNoopCalled waits (bounded by timeout) until the API server calls the no-op
// server at url for a pod in namespace: its count of answered admissions grows across
// a server-side dry run (nothing stored). The no-op leaves no mark on the pod.
func waitNoopCalled(ctx context.Context, c client.Client, url string, ca []byte, namespace string, timeout time.Duration) error {
	for i, deadline := 0, time.Now().Add(timeout); time.Now().Before(deadline); i++ {
		before, err := noopAnswered(ctx, url, ca)
		if err != nil {
			return err
		}
		if err := c.Create(ctx, benchPod(namespace, fmt.Sprintf("probe-%d", i)), client.DryRunAll); err != nil {
			return err
		}
		after, err := noopAnswered(ctx, url, ca)
		if err != nil {
			return err
		}
		if after > before {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("the no-op webhook configuration did not take effect within %s", timeout)
}

// noopAnswered is the no-op server's count of answered admissions.
func noopAnswered(ctx context.Context, url string, ca []byte) (int64, error) {
	hc, err := loadgen.NewClient(ca, 1)
	if err != nil {
		return 0, err
	}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/answered", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("no-op server: GET /answered: HTTP %d", resp.StatusCode)
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
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
