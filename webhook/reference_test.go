package webhook

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/ha-injector/ha-injector/test/harness/refdocs"
)

// TestReferenceMetrics keeps docs/reference/metrics.md equal to the metrics registered
// with controller-runtime's registry, which serve's /metrics endpoint serves: ha-injector's
// own (name, type, labels, help) and controller-runtime's webhook and certificate watcher
// metrics beside them. `make generate` refreshes it.
func TestReferenceMetrics(t *testing.T) {
	var own []refdocs.Metric
	for _, c := range ownMetrics {
		typ := refdocs.TypeOf(c)
		require.NotEmpty(t, typ, "%T: a collector of client_golang", c)
		m, err := refdocs.Describe(c, typ)
		require.NoError(t, err)
		own = append(own, m...)
	}
	registered, err := refdocs.Describe(metrics.Registry.(prometheus.Collector), "")
	require.NoError(t, err)
	documented := map[string]bool{}
	for _, m := range own {
		documented[m.Name] = true
	}
	var alongside []refdocs.Metric
	others := map[string]bool{}
	for _, m := range registered {
		switch {
		case strings.HasPrefix(m.Name, "ha_injector_"):
			require.True(t, documented[m.Name], "%s is registered but not in ownMetrics, which the page lists", m.Name)
		case strings.HasPrefix(m.Name, "controller_runtime_webhook_"), strings.HasPrefix(m.Name, "certwatcher_"):
			alongside = append(alongside, m)
		default:
			prefix, _, _ := strings.Cut(m.Name, "_")
			others[prefix] = true
		}
	}
	require.True(t, others["go"] && others["process"], "the Go runtime's and the process's metrics are registered: %v", others)
	require.NotEmpty(t, alongside, "controller-runtime's webhook metrics are registered")
	sort.Slice(alongside, func(i, j int) bool { return alongside[i].Name < alongside[j].Name })
	page := refdocs.MetricsPage("ha-injector metrics",
		"What `ha-injector serve` counts: every metric of its `/metrics` endpoint (`--metrics-bind-address`) that tells how admissions went, with its type, labels and help.",
		"the collectors `webhook/metrics.go` registers with controller-runtime's registry",
		own,
		"Served beside them, from controller-runtime (its webhook server and the serving certificate's watcher):",
		alongside, slices.Sorted(maps.Keys(others)))
	refdocs.Check(t, "docs/reference/metrics.md", page)
}
