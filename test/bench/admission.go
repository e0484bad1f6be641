package bench

import (
	"context"
	"fmt"
	"slices"

	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/test/bench/loadgen"
)

// pair is what alternating rounds measured on each server.
type pair struct{ ours, noop []loadgen.Result }

// alternate runs load (one round against one server) rounds times against both
// servers, swapping who goes first each round so machine noise hits both alike.
func alternate(rounds int, ours, noop string, load func(url string) (loadgen.Result, error)) (pair, error) {
	var p pair
	for i := range rounds {
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, isOurs := range order {
			url := noop
			if isOurs {
				url = ours
			}
			res, err := load(url)
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

// warmUp sends n requests of mix to each server (connections, caches, allocator);
// failures are counted in the measured runs that follow, not here.
func warmUp(ctx context.Context, ca []byte, concurrency, n int, mix []loadgen.Request, urls ...string) error {
	for _, url := range urls {
		if _, err := loadgen.Run(ctx, loadgen.Config{BaseURL: url, CA: ca, Concurrency: concurrency, Requests: n, Mix: mix}); err != nil {
			return err
		}
	}
	return nil
}

// admissionLoad runs the same load against both servers in alternating rounds: first as
// fast as each answers (throughput), then at one fixed rate for both (latency).
func admissionLoad(ctx context.Context, sizes Sizes, step func(string, ...any), ca []byte, ours, noop string) ([]Row, error) {
	mix, err := Reviews(benchNamespace)
	if err != nil {
		return nil, err
	}
	run := func(rate float64) func(string) (loadgen.Result, error) {
		return func(url string) (loadgen.Result, error) {
			return loadgen.Run(ctx, loadgen.Config{BaseURL: url, CA: ca, Concurrency: sizes.Concurrency, Duration: sizes.RoundTime, Rate: rate, Mix: mix})
		}
	}
	if err := warmUp(ctx, ca, sizes.Concurrency, 200, mix, ours, noop); err != nil {
		return nil, err
	}

	step("Admission over TLS, closed loop with %d connections: %d rounds of %s each, alternating", sizes.Concurrency, sizes.Rounds, sizes.RoundTime)
	fastest, err := alternate(sizes.Rounds, ours, noop, run(0))
	if err != nil {
		return nil, err
	}
	oursTput, noopTput := median(fastest.ours, loadgen.Result.Throughput), median(fastest.noop, loadgen.Result.Throughput)
	scenario := fmt.Sprintf("admission, %d connections, as fast as answered", sizes.Concurrency)
	rows := []Row{atLeast(row(scenario, "throughput", "req/s", oursTput, &noopTput), 0.8)}
	rows = append(rows, latencyRows(scenario, fastest, 50, 99)...)

	// A rate both servers sustain: latency is compared at the same load, not past
	// one server's capacity (where queueing, not the work, sets the latency).
	rate := 0.5 * min(oursTput, noopTput)
	step("Admission at a fixed %.0f req/s (half the slower server's throughput) for both", rate)
	fixed, err := alternate(sizes.Rounds, ours, noop, run(rate))
	if err != nil {
		return nil, err
	}
	scenario = fmt.Sprintf("admission, fixed %.0f req/s", rate)
	for _, r := range latencyRows(scenario, fixed, 50, 90, 99, 99.9) {
		if r.Metric == "p99 latency" {
			r = atMost(r, 1.5)
		}
		rows = append(rows, r)
	}
	return append(rows, failedRow("admission, all runs", fastest, fixed)), nil
}

// largePod sends the ~1 MiB Pod of LargePodReview to both servers over one connection
// each, in alternating rounds: with one request in flight, its latency is the time to
// read, decode, mutate and answer a large object, not queueing. Then it sends
// sizes.LargeRequests more to ours alone and reads from serve's metrics how much heap
// it allocated for them.
func (s *servers) largePod(ctx context.Context, sizes Sizes, step func(string, ...any), ours, noop *server) ([]Row, error) {
	large, err := LargePodReview(benchNamespace)
	if err != nil {
		return nil, err
	}
	body := float64(len(large.Body))
	scenario := fmt.Sprintf("large pod (%d env vars), %.2f MiB CREATE, 1 connection", LargeEnvVars, body/mib)
	patch, err := s.patchOf(ctx, ours, large)
	if err != nil {
		return nil, fmt.Errorf("large pod: %w", err)
	}
	mix := []loadgen.Request{large}
	run := func(url string) (loadgen.Result, error) {
		return loadgen.Run(ctx, loadgen.Config{BaseURL: url, CA: s.ca, Concurrency: 1, Duration: sizes.RoundTime, Mix: mix})
	}
	if err := warmUp(ctx, s.ca, 1, 5, mix, ours.url, noop.url); err != nil {
		return nil, err
	}
	step("Large pod: a %.2f MiB Pod CREATE over one connection, %d rounds of %s each, alternating", body/mib, sizes.Rounds, sizes.RoundTime)
	p, err := alternate(sizes.Rounds, ours.url, noop.url, run)
	if err != nil {
		return nil, err
	}
	rows := latencyRows(scenario, p, 50, 99)
	rows[0] = atMost(rows[0], 2)

	step("Large pod: heap serve allocates for %d more, one at a time", sizes.LargeRequests)
	perBody, err := s.allocatedPerBody(ctx, ours, large, sizes.LargeRequests)
	if err != nil {
		return nil, err
	}
	rows = append(rows,
		// Every byte of heap a request holds at its peak was allocated for it, so the
		// total allocated is an upper bound on the peak heap increase per request
		// (what a memory limit must leave room for), without sampling the peak.
		row(scenario, "heap allocated per request / request body", "x", perBody, nil).target("<= 4", perBody <= 4),
		row(scenario, "JSON patch in ours' answer", "bytes", float64(len(patch)), nil).target("> 0 (ours mutates it)", len(patch) > 0),
		failedRow(scenario, p),
	)
	return rows, nil
}

// allocatedPerBody sends req to srv n times, one at a time, and returns the heap serve
// allocated meanwhile (the delta of the Go runtime's cumulative counter) divided by
// n times the request body.
func (s *servers) allocatedPerBody(ctx context.Context, srv *server, req loadgen.Request, n int) (float64, error) {
	before, err := goMetric(srv.metrics, allocatedMetric)
	if err != nil {
		return 0, err
	}
	res, err := loadgen.Run(ctx, loadgen.Config{BaseURL: srv.url, CA: s.ca, Concurrency: 1, Requests: n, Mix: []loadgen.Request{req}})
	if err != nil {
		return 0, err
	}
	if res.Errors > 0 {
		return 0, fmt.Errorf("%d of %d requests failed: %v", res.Errors, res.Sent, res.FirstErr)
	}
	after, err := goMetric(srv.metrics, allocatedMetric)
	if err != nil {
		return 0, err
	}
	return (after - before) / float64(res.Sent) / float64(len(req.Body)), nil
}

// deploymentUpdate sends the Deployment UPDATE of DeploymentUpdateReview (a re-applied
// manifest over the injected Deployment) to both servers as fast as they answer, with
// the admission load's connections, in alternating rounds.
func (s *servers) deploymentUpdate(ctx context.Context, sizes Sizes, step func(string, ...any), ours, noop *server) ([]Row, error) {
	hc, err := loadgen.NewClient(s.ca, 1)
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	update, err := DeploymentUpdateReview(ctx, hc, ours.url, benchNamespace)
	if err != nil {
		return nil, err
	}
	patch, err := s.patchOf(ctx, ours, update)
	if err != nil {
		return nil, fmt.Errorf("deployment UPDATE: %w", err)
	}
	mix := []loadgen.Request{update}
	run := func(url string) (loadgen.Result, error) {
		return loadgen.Run(ctx, loadgen.Config{BaseURL: url, CA: s.ca, Concurrency: sizes.Concurrency, Duration: sizes.RoundTime, Mix: mix})
	}
	if err := warmUp(ctx, s.ca, sizes.Concurrency, 200, mix, ours.url, noop.url); err != nil {
		return nil, err
	}
	step("Deployment UPDATE (a re-applied manifest of an injected Deployment), %d connections: %d rounds of %s each, alternating", sizes.Concurrency, sizes.Rounds, sizes.RoundTime)
	p, err := alternate(sizes.Rounds, ours.url, noop.url, run)
	if err != nil {
		return nil, err
	}
	scenario := fmt.Sprintf("deployment UPDATE, %d connections, as fast as answered (manifest re-applied over the injected Deployment)", sizes.Concurrency)
	oursTput, noopTput := median(p.ours, loadgen.Result.Throughput), median(p.noop, loadgen.Result.Throughput)
	rows := []Row{atLeast(row(scenario, "throughput", "req/s", oursTput, &noopTput), 0.8)}
	rows = append(rows, latencyRows(scenario, p, 50, 99)...)
	// The stored template is kept: the answer puts the injection back.
	return append(rows,
		row(scenario, "JSON patch in ours' answer", "bytes", float64(len(patch)), nil).target("> 0 (stored template kept)", len(patch) > 0),
		failedRow(scenario, p),
	), nil
}

// patchOf sends req to srv once and returns the JSON patch of its answer, which must
// allow the request.
func (s *servers) patchOf(ctx context.Context, srv *server, req loadgen.Request) ([]byte, error) {
	hc, err := loadgen.NewClient(s.ca, 1)
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	answer, err := loadgen.Answer(ctx, hc, srv.url+req.Path, req.Body)
	if err != nil {
		return nil, err
	}
	if !answer.Allowed {
		return nil, fmt.Errorf("not allowed: %v", answer.Result)
	}
	return answer.Patch, nil
}

// latencyRows compare the median over the rounds of each latency percentile.
func latencyRows(scenario string, p pair, percentiles ...float64) []Row {
	rows := make([]Row, 0, len(percentiles))
	for _, q := range percentiles {
		rows = append(rows, row(scenario, fmt.Sprintf("p%g latency", q), "ms", ms(median(p.ours, pct(q))), ptr.To(ms(median(p.noop, pct(q))))))
	}
	return rows
}

// failedRow counts the failed requests of ours (which must be none) and of the no-op
// across the runs.
func failedRow(scenario string, runs ...pair) Row {
	var ours, noop float64
	for _, p := range runs {
		for _, res := range p.ours {
			ours += float64(res.Errors)
		}
		for _, res := range p.noop {
			noop += float64(res.Errors)
		}
	}
	return row(scenario, "failed requests", "count", ours, &noop).target("0", ours == 0)
}

// atLeast and atMost set a target on the row's ratio to the baseline.
func atLeast(r Row, ratio float64) Row {
	r.RatioTarget = &ratio
	return r.target(fmt.Sprintf(">= %g", ratio), r.Ratio != nil && *r.Ratio >= ratio)
}

func atMost(r Row, ratio float64) Row {
	r.RatioTarget = &ratio
	return r.target(fmt.Sprintf("<= %g", ratio), r.Ratio != nil && *r.Ratio <= ratio)
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
