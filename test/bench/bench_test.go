package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestShortBench runs every scenario of `make bench` with little load: the binaries
// build and start, the table and the JSON have every row, and what must hold whatever
// the machine does hold: no failed admission, no opted-in pod stored without its
// injections, no failed request across SIGTERM or the certificate rotation. Speed and
// memory are reported, never asserted.
func TestShortBench(t *testing.T) {
	var log bytes.Buffer
	rows, err := Run(context.Background(), Short, &log, "")
	require.NoError(t, err, log.String())

	metrics := map[string]Row{}
	for _, r := range rows {
		metrics[r.Scenario+" / "+r.Metric] = r
	}
	find := func(scenarioPrefix, metric string) Row {
		t.Helper()
		for k, r := range metrics {
			if strings.HasPrefix(k, scenarioPrefix) && r.Metric == metric {
				return r
			}
		}
		t.Fatalf("no row %q / %q in:\n%s", scenarioPrefix, metric, log.String())
		return Row{}
	}
	tput := find("admission, 4 connections", "throughput")
	require.NotNil(t, tput.Baseline)
	assert.Positive(t, tput.Ours)
	assert.Positive(t, *tput.Baseline)
	require.NotNil(t, tput.Ratio)
	assert.InDelta(t, tput.Ours / *tput.Baseline, *tput.Ratio, 1e-9)
	for _, must := range []struct{ scenario, metric string }{
		{"admission, all runs", "failed requests"},
		{"pod creation through kube-apiserver", "opted-in pods stored without the injections"},
		{"resilience, one of two replicas gets SIGTERM", "failed requests"},
		{"resilience, certificate rotated", "failed requests"},
	} {
		r := find(must.scenario, must.metric)
		assert.Zero(t, r.Ours, "%s: %s", must.scenario, must.metric)
		require.NotNil(t, r.Met)
		assert.True(t, *r.Met, "%s: %s (%s)", must.scenario, must.metric, r.Target)
	}
	rss := find("memory", "RSS")
	assert.Positive(t, rss.Ours)
	find("admission, fixed", "p99 latency")
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
