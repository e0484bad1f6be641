package failover

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/internal/controlplane"
)

// TestShortFailover is the quick version of `make failover`: a simulated cluster of 3
// nodes with shortened timings, the opted-in namespace only. It asserts that what
// ha-injector promises happens with the real scheduler and controllers — replicas on
// distinct nodes, a Required policy that neither deadlocks a rolling update nor leaves
// a fourth replica Pending, and a dead node's pod replaced on a surviving node — not
// how fast.
func TestShortFailover(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	bins, err := FindBinaries(root)
	require.NoError(t, err, "building the cluster's binaries (hack/control-plane.sh, hack/cluster.sh)")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	dir := t.TempDir()
	opts := Short()
	opts.Log = t.Logf
	rep, err := Run(ctx, root, bins, opts, dir)
	require.NoError(t, err)
	t.Logf("%.0f s in all\n%s", rep.WallSeconds, rep.Table())
	assert.Empty(t, rep.Problems())

	placement, ok := rep.Find(ScenarioPlacement, OptedIn)
	require.True(t, ok)
	assert.Len(t, placement.Placement, 3, "the anti-affinity puts the 3 replicas on 3 nodes")

	for _, s := range []string{ScenarioRequiredRollout, ScenarioRequiredDowngrade, ScenarioRequiredControl} {
		row, ok := rep.Find(s, RequiredNS)
		require.True(t, ok, s)
		assert.True(t, row.Passed, "%s: %s", row.Title, row.Outcome)
	}

	loss, ok := rep.Find(ScenarioNodeLoss, OptedIn)
	require.True(t, ok)
	assert.Equal(t, ptr.To(opts.Settings.PolicyTolerationSeconds), loss.TolerationSeconds, "the pod carried the policy's toleration")
	require.NotNil(t, loss.UnreachableSeconds, "the node was marked unreachable")
	require.NotNil(t, loss.EvictedSeconds, "its pod was evicted")
	require.NotNil(t, loss.RecoverySeconds, "all replicas ran again")
	assert.NotEmpty(t, loss.ReplacementNode)
	assert.NotEqual(t, loss.Node, loss.ReplacementNode, "the replacement runs on a surviving node")
	assert.LessOrEqual(t, *loss.UnreachableSeconds, *loss.EvictedSeconds)
	assert.LessOrEqual(t, *loss.EvictedSeconds, *loss.RecoverySeconds)

	// Every component was started with a path under dir; none may outlive Run.
	assert.Empty(t, processesMentioning(t, dir), "processes left running")
}

// processesMentioning lists the command lines (from /proc) that contain s.
func processesMentioning(t *testing.T, s string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), s) {
			continue
		}
		out = append(out, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return out
}

func TestReportJSONCarriesTheSettingsOnEveryRow(t *testing.T) {
	rep := &Report{
		Settings: reportSettings(KubernetesDefaults),
		Rows: []Row{
			{Scenario: ScenarioNodeLoss, Namespace: OptedIn, OptedIn: true, RecoverySeconds: ptr.To(82.4), Passed: true},
			{Scenario: ScenarioNodeLoss, Namespace: NotOptedIn, RecoverySeconds: ptr.To(352.1), Ratio: ptr.To(4.3), Passed: true},
			{Scenario: ScenarioPlacement, Namespace: OptedIn, OptedIn: true, Passed: true},
		},
	}
	data, err := rep.JSON()
	require.NoError(t, err)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal(data, &rows))
	require.Len(t, rows, 3)
	for _, row := range rows {
		for _, key := range []string{"scenario", "namespace", "optedIn", "recoverySeconds", "controllerSettings"} {
			assert.Contains(t, row, key)
		}
		settings := row["controllerSettings"].(map[string]any)
		assert.Equal(t, 50.0, settings["nodeMonitorGracePeriodSeconds"])
		assert.Equal(t, true, settings["kubernetesDefaults"])
	}
	assert.Equal(t, 82.4, rows[0]["recoverySeconds"])
	assert.Nil(t, rows[2]["recoverySeconds"], "no recovery to time: null, not 0")

	table := rep.Table()
	assert.Contains(t, table, "| 82.4 s |")
	assert.Contains(t, table, "| 4.3× |")
	assert.Contains(t, table, "node-monitor-grace-period 50s")
	assert.NotContains(t, table, "FAILED")
}

func TestShortVersionShortensOnlyTheTimings(t *testing.T) {
	s := Short()
	assert.False(t, reportSettings(s.Settings).KubernetesDefaults)
	assert.True(t, reportSettings(Measured().Settings).KubernetesDefaults)
	assert.Less(t, s.Settings.NodeLeaseDuration/4, s.Settings.NodeMonitorGracePeriod/2,
		"several Lease renewals fit in the grace period, or live nodes would flap")
	assert.Equal(t, KubernetesDefaults.DefaultTolerationSeconds, s.Settings.DefaultTolerationSeconds)
}
