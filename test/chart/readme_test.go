package chart

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/refdocs"
)

// The HAPolicy CRD of the chart, which hack/generate.sh writes from policies/v1alpha1.
var crdFile = filepath.Join(chartrender.ChartDir, "crds", "ha-injector.io_hapolicies.yaml")

// TestReferenceChartValues keeps the values table of the chart's README equal to what
// values.yaml documents (every value has a comment that states its default) and
// values.schema.json types. `make generate` refreshes it.
func TestReferenceChartValues(t *testing.T) {
	values, err := refdocs.ChartValues(
		refdocs.Input(t, filepath.Join(chartrender.ChartDir, "values.yaml")),
		refdocs.Input(t, filepath.Join(chartrender.ChartDir, "values.schema.json")),
		// An HAPolicy spec is the CRD's own schema: its page documents every field.
		map[string]string{"haPolicySpec": "[HAPolicy spec](../../docs/reference/hapolicy.md#spec)"})
	require.NoError(t, err)
	readme := filepath.Join(chartrender.ChartDir, "README.md")
	updated, err := refdocs.SpliceValuesTable(refdocs.Input(t, readme), refdocs.ValuesTable(values))
	require.NoError(t, err, readme)
	refdocs.Check(t, readme, updated)
}

// TestReferenceHAPolicy keeps docs/reference/hapolicy.md equal to what the chart's CRD
// says of every field. `make generate` refreshes it (after regenerating the CRD).
func TestReferenceHAPolicy(t *testing.T) {
	page, err := refdocs.CRDPage(refdocs.Input(t, crdFile), filepath.ToSlash(crdFile))
	require.NoError(t, err)
	refdocs.Check(t, "docs/reference/hapolicy.md", page)
}
