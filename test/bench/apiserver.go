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
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
)

// noopLabel opts a namespace in to the no-op webhook, as policies.PolicyLabel opts it
// in to ours.
const noopLabel = "bench.ha-injector.io/noop"

// throughAPIServer creates pods through the API server in a namespace opted in to ours
// (the chart's webhook configuration, pointed at ours) and in one opted in to the no-op
// webhook (registered the same way), alternating batches, and compares the creation
// latency: both pay the API server's webhook call, so the difference is our handler.
func throughAPIServer(ctx context.Context, sizes Sizes, step func(string, ...any), c client.Client, root, oursURL, noopURL string, ca []byte) ([]Row, error) {
	// Only the webhook configuration: the default policy is there already.
	if err := localwebhook.Install(ctx, c, root, localwebhook.ProvidedValues(nil), oursURL, ca, false); err != nil {
		return nil, err
	}
	if err := installNoop(ctx, c, root, noopURL, ca); err != nil {
		return nil, err
	}
	const optedIn, baseline = "pods-opted-in", "pods-noop"
	for name, labels := range map[string]map[string]string{optedIn: {policies.PolicyLabel: "default"}, baseline: {noopLabel: "true"}} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
			return nil, err
		}
	}
	if err := localwebhook.WaitEffective(ctx, c, optedIn, 30*time.Second); err != nil {
		return nil, err
	}
	if err := waitNoopCalled(ctx, c, noopURL, ca, baseline, 30*time.Second); err != nil {
		return nil, err
	}

	step("Through the API server: %d pods in a namespace opted in to ours and %d in one opted in to the no-op webhook, alternating batches", sizes.PodsPerNamespace, sizes.PodsPerNamespace)
	latencies := map[string][]time.Duration{}
	elapsed := map[string]time.Duration{}
	const batch = 100
	for done := 0; done < sizes.PodsPerNamespace; done += batch {
		for _, ns := range []string{optedIn, baseline} {
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
	scenario := fmt.Sprintf("pod creation through kube-apiserver, %d pods, %d clients (baseline: no-op webhook)", sizes.PodsPerNamespace, sizes.Concurrency)
	tput := row(scenario, "throughput", "pods/s",
		float64(sizes.PodsPerNamespace)/elapsed[optedIn].Seconds(), ptr.To(float64(sizes.PodsPerNamespace)/elapsed[baseline].Seconds()))
	rows := []Row{atLeast(tput, 0.9)}
	for _, q := range []float64{50, 99} {
		rows = append(rows, row(scenario, fmt.Sprintf("p%g latency", q), "ms", ms(float64(quantile(latencies[optedIn], q))), ptr.To(ms(float64(quantile(latencies[baseline], q))))))
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(optedIn)); err != nil {
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
