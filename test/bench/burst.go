package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
)

// BurstConcurrency is how many of the largest requests arrive at once in the burst
// scenario: more than the large-request budget holds.
const BurstConcurrency = 16

// chartLimits is what the chart gives the webhook container by default: its memory
// limit, the GOMEMLIMIT it derives from it, and serve's --large-request-budget.
type chartLimits struct {
	memoryLimit int64
	env         []string
	args        []string
}

func readChartLimits(root string) (chartLimits, error) {
	chart, err := chartrender.Load(root)
	if err != nil {
		return chartLimits{}, err
	}
	r, err := chartrender.Render(chart, nil, chartrender.Options{})
	if err != nil {
		return chartLimits{}, err
	}
	u := r.Get("Deployment", "ha-injector")
	if u == nil {
		return chartLimits{}, fmt.Errorf("the chart renders no Deployment ha-injector")
	}
	dep := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, dep); err != nil {
		return chartLimits{}, err
	}
	c := dep.Spec.Template.Spec.Containers[0]
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		return chartLimits{}, fmt.Errorf("the chart sets no memory limit")
	}
	var out chartLimits
	out.memoryLimit = limit.Value()
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			out.env = append(out.env, "GOMEMLIMIT="+e.Value)
		}
	}
	if len(out.env) == 0 {
		return chartLimits{}, fmt.Errorf("the chart sets no GOMEMLIMIT")
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--large-request-budget=") {
			out.args = append(out.args, a)
		}
	}
	if len(out.args) == 0 {
		return chartLimits{}, fmt.Errorf("the chart passes no --large-request-budget")
	}
	return out, nil
}

// largestDeployment is the Deployment of the admission load in namespace ns, its
// container's environment grown so that the object is a little under the 3 MiB the API
// server accepts (its JSON, which is what the webhook receives).
func largestDeployment(ns string) *appsv1.Deployment {
	const vars, size = 3000, 3<<20 - 16<<10
	d := reviewDeployment(ns)
	c := &d.Spec.Template.Spec.Containers[0]
	for i := range vars {
		c.Env = append(c.Env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%04d", i)})
	}
	raw, _ := json.Marshal(d)
	pad := (size - len(raw)) / vars
	for i := range c.Env[len(c.Env)-vars:] {
		c.Env[len(c.Env)-vars+i].Value = strings.Repeat(fmt.Sprintf("%04x-", i*7919%65536), pad/5+1)[:pad]
	}
	return d
}

// burst runs `serve` (with the chart's GOMEMLIMIT and large-request budget) and sends it
// rounds of BurstConcurrency concurrent Deployment UPDATEs, each as large as the API
// server can send (object and old object near 3 MiB each), through an API server
// timeout of 5 s (the chart's timeoutSeconds). Every request must be answered: mutated,
// or admitted unchanged with a warning once the budget is full. serve's peak RSS
// (VmHWM) is compared with the chart's memory limit: a process that stays under it is
// not OOM-killed in a container with that limit (which also counts the page cache of
// its few files).
func (s *servers) burst(ctx context.Context, sizes Sizes, step func(string, ...any), ns string) ([]Row, error) {
	limits := s.chart
	srv, err := s.startOurs("serve-burst")
	if err != nil {
		return nil, err
	}
	defer func() { _ = stopGracefully(srv.proc, 30*time.Second) }()
	// The peak so far is the start's (the initial lists): the burst's own shows only
	// when it is higher.
	startPeak, err := procPeakRSS(srv.proc)
	if err != nil {
		return nil, err
	}
	hc, err := loadgen.NewClient(s.ca, BurstConcurrency)
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	hc.Timeout = 30 * time.Second
	update, err := deploymentUpdateReview(ctx, hc, srv.url, func() *appsv1.Deployment { return largestDeployment(ns) })
	if err != nil {
		return nil, err
	}
	step("Burst: %d rounds of %d concurrent %.2f MiB Deployment UPDATEs to serve with %s and %s (memory limit %d MiB)",
		sizes.BurstRounds, BurstConcurrency, float64(len(update.Body))/mib, limits.env[0], limits.args[0], limits.memoryLimit/mib)

	var mu sync.Mutex
	var mutated, shed, failed int
	var firstErr error
	url := srv.url + update.Path + "?timeout=5s" // as the API server calls a webhook with timeoutSeconds: 5
	anon := sampleMax(ctx, func() (int64, error) { return procStatus(srv.proc, "RssAnon") }, 20*time.Millisecond)
	for range sizes.BurstRounds {
		var wg sync.WaitGroup
		for range BurstConcurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answer, err := loadgen.Answer(ctx, hc, url, update.Body)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && answer.Allowed && len(answer.Patch) > 0:
					mutated++
				case err == nil && answer.Allowed && len(answer.Warnings) == 1 && strings.Contains(answer.Warnings[0], "admitted unchanged"):
					shed++
				default:
					failed++
					if err == nil {
						err = fmt.Errorf("allowed %t, %d patch bytes, warnings %q", answer.Allowed, len(answer.Patch), answer.Warnings)
					}
					firstErr = cmp.Or(firstErr, err)
				}
			}()
		}
		wg.Wait()
	}
	peakAnon := anon()
	if err := srv.proc.Alive(); err != nil {
		return nil, fmt.Errorf("serve died in the burst (%v); its log: %s", err, filepath.Join(s.work, "serve-burst.log"))
	}
	peak, err := procPeakRSS(srv.proc)
	if err != nil {
		return nil, err
	}
	if firstErr != nil {
		step("first failure in the burst: %v", firstErr)
	}
	sent := sizes.BurstRounds * BurstConcurrency
	scenario := fmt.Sprintf("burst, %d x %d concurrent %.1f MiB Deployment UPDATEs, chart's limits", sizes.BurstRounds, BurstConcurrency, float64(len(update.Body))/mib)
	return []Row{
		row(scenario, "peak RSS", "MiB", float64(peak)/mib, ptr.To(float64(limits.memoryLimit)/mib)).target(fmt.Sprintf("< %d (the memory limit)", limits.memoryLimit/mib), peak < limits.memoryLimit),
		row(scenario, "peak anonymous RSS (sampled every 20 ms)", "MiB", float64(peakAnon)/mib, nil),
		row(scenario, "peak RSS before the burst (start and initial lists)", "MiB", float64(startPeak)/mib, nil),
		row(scenario, "failed requests", "count", float64(failed), nil).target("0", failed == 0),
		row(scenario, "mutated", "count", float64(mutated), nil),
		row(scenario, "admitted unchanged, budget full", "count", float64(shed), nil),
		row(scenario, "requests sent", "count", float64(sent), nil),
	}, nil
}

// sampleMax calls read every interval until the returned stop is called, and stop
// returns the largest value read.
func sampleMax(ctx context.Context, read func() (int64, error), interval time.Duration) (stop func() int64) {
	done := make(chan struct{})
	result := make(chan int64, 1)
	go func() {
		var peak int64
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if v, err := read(); err == nil {
				peak = max(peak, v)
			}
			select {
			case <-done:
				result <- peak
				return
			case <-ctx.Done():
				result <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-result
	}
}
