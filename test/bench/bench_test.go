package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestShortBench runs every scenario of `make bench` with little load: the binaries
// build and start, the table and the JSON have every row, and what must hold whatever
// the machine does hold: no failed admission (the CREATE mix, the large Pod, the
// Deployment UPDATE), the large Pod mutated by ours and the UPDATE answered by both, no
// opted-in pod stored without its injections, no failed request across SIGTERM or the
// certificate rotation. Speed and memory are reported with their targets, never
// asserted.
func TestShortBench(t *testing.T) {
	// The API clients log through controller-runtime (the API server's warnings about
	// the probe pods); the rows are the output, as in cmd/bench.
	ctrllog.SetLogger(logr.Discard())
	var log bytes.Buffer
	rows, err := Run(context.Background(), Short, &log, Profiles{})
	require.NoError(t, err, log.String())

	find := func(scenarioPrefix, metric string) Row {
		t.Helper()
		for _, r := range rows {
			if strings.HasPrefix(r.Scenario, scenarioPrefix) && r.Metric == metric {
				return r
			}
		}
		t.Fatalf("no row %q / %q in:\n%s", scenarioPrefix, metric, log.String())
		return Row{}
	}
	// A row compared with the no-op whose target is set, met or not.
	compared := func(scenarioPrefix, metric, target string) Row {
		t.Helper()
		r := find(scenarioPrefix, metric)
		assert.Positive(t, r.Ours, "%s: %s", r.Scenario, metric)
		if assert.NotNil(t, r.Baseline, "%s: %s", r.Scenario, metric) {
			assert.Positive(t, *r.Baseline, "%s: %s", r.Scenario, metric)
		}
		assert.NotNil(t, r.Ratio, "%s: %s", r.Scenario, metric)
		assert.Equal(t, target, r.Target, "%s: %s", r.Scenario, metric)
		assert.NotNil(t, r.Met, "%s: %s", r.Scenario, metric)
		return r
	}
	tput := compared("admission, 4 connections", "throughput", ">= 0.8")
	require.NotNil(t, tput.Ratio)
	assert.InDelta(t, tput.Ours / *tput.Baseline, *tput.Ratio, 1e-9)
	compared("admission, fixed", "p99 latency", "<= 1.5")
	compared("large pod (1000 env vars)", "p50 latency", "<= 2")
	compared("deployment UPDATE", "throughput", ">= 0.8") // answered by both
	api := compared("pod creation through kube-apiserver", "throughput", ">= 0.9")
	assert.Contains(t, api.Scenario, "baseline: no-op webhook")
	// Native mode, next to ours' webhook (with the targets) and to no admission.
	compared(NativeScenario, "throughput", ">= 1.25")
	compared(NativeScenario, "p99 latency", "<= 0.8")
	// The API server evaluated native mode's policy for every pod of its namespace.
	assert.GreaterOrEqual(t, find(NativeScenario, "MutatingAdmissionPolicy evaluations per pod (apiserver_mutating_admission_policy_check_total)").Ours, 1.0)
	for _, scenario := range []string{NativeNoAdmissionScenario, FloorScenario, FloorNoAdmissionScenario} {
		for _, metric := range []string{"throughput", "p50 latency", "p99 latency"} {
			r := find(scenario, metric)
			assert.Equal(t, scenario, r.Scenario)
			assert.Positive(t, r.Ours, metric)
			if assert.NotNil(t, r.Baseline, metric) {
				assert.Positive(t, *r.Baseline, metric)
			}
			assert.Empty(t, r.Target, "reported, no target")
		}
	}

	for _, must := range []struct{ scenario, metric string }{
		{"admission, all runs", "failed requests"},
		{"large pod (1000 env vars)", "failed requests"},
		{"deployment UPDATE", "failed requests"},
		{"deployment UPDATE changing the template", "failed requests"},
		{"burst, ", "failed requests"},
		{"pod creation through kube-apiserver", "opted-in pods stored without the injections"},
		{NativeScenario, "opted-in pods stored without native mode's record"},
		{NativeScenario, "MutatingAdmissionPolicy evaluations that ended in an error"},
		{NativeScenario, "pods stored with injections that differ from the webhook's first pod (" + AllParts.String() + ")"},
		{FloorScenario, "pods stored with injections that differ from the webhook's first pod (" + AllParts.String() + ")"},
		{"resilience, one of two replicas gets SIGTERM", "failed requests"},
		{"resilience, certificate rotated", "failed requests"},
	} {
		r := find(must.scenario, must.metric)
		assert.Zero(t, r.Ours, "%s: %s", must.scenario, must.metric)
		require.NotNil(t, r.Met)
		assert.True(t, *r.Met, "%s: %s (%s)", must.scenario, must.metric, r.Target)
	}
	// Ours mutates the large Pod, and keeps the stored template on the UPDATE by
	// putting the injection back.
	for _, scenario := range []string{"large pod (1000 env vars)", "deployment UPDATE"} {
		patched := find(scenario, "JSON patch in ours' answer")
		assert.Positive(t, patched.Ours, scenario)
		require.NotNil(t, patched.Met)
		assert.True(t, *patched.Met, scenario)
	}

	// A burst of the largest requests stays under the chart's memory limit, and every
	// request is answered, mutated or admitted unchanged.
	peak := find("burst, ", "peak RSS")
	require.NotNil(t, peak.Met)
	assert.True(t, *peak.Met, "peak RSS %.1f MiB, limit %v MiB", peak.Ours, peak.Baseline)
	assert.Equal(t, find("burst, ", "requests sent").Ours, find("burst, ", "mutated").Ours+find("burst, ", "admitted unchanged, budget full").Ours)
	assert.Positive(t, find("burst, ", "mutated").Ours)

	crowded := find("deployment UPDATE changing the template", "heap allocated per UPDATE")
	assert.Contains(t, crowded.Scenario, fmt.Sprintf("namespace of %d ReplicaSets", Short.CrowdedReplicaSets))
	assert.Positive(t, crowded.Ours)
	assert.Equal(t, "<= 16 (the large-request budget)", crowded.Target)
	find("deployment UPDATE changing the template", "p99 latency")

	alloc := find("large pod (1000 env vars)", "heap allocated per request / request body")
	assert.Positive(t, alloc.Ours, "serve allocates at least a copy of the body")
	assert.Equal(t, "<= 4", alloc.Target)
	assert.NotNil(t, alloc.Met)
	rss := find("memory", "RSS")
	assert.Contains(t, rss.Scenario, fmt.Sprintf("%d ReplicaSets", Short.ReplicaSets))
	assert.Positive(t, rss.Ours)
	assert.Equal(t, "<= 96", rss.Target)
	assert.NotNil(t, rss.Met)
	find("pod creation through kube-apiserver", "p99 latency")

	var table bytes.Buffer
	require.NoError(t, Print(&table, rows))
	assert.Equal(t, len(rows)+1, strings.Count(table.String(), "\n"), "a header and a line per row")
	out := filepath.Join(t.TempDir(), "bench.json")
	require.NoError(t, WriteJSON(out, rows))
	var decoded []map[string]any
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &decoded))
	require.Len(t, decoded, len(rows))
	for _, key := range []string{"scenario", "metric", "unit", "ours", "baseline", "ratio"} {
		assert.Contains(t, decoded[0], key, "every row has %s (null where there is none)", key)
	}
}
