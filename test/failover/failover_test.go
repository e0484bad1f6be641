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

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

// TestShortFailover is the quick version of `make failover`: a simulated cluster of 3
// nodes with shortened timings, the opted-in namespaces only (the webhook's and native
// mode's). It asserts that what ha-injector promises happens with the real scheduler and
// controllers — replicas on distinct nodes, a Required policy that neither deadlocks a
// rolling update nor leaves a fourth replica Pending, and a dead node's pod replaced on
// a surviving node, in both modes — not how fast.
func TestShortFailover(t *testing.T) {
	// Beside TestTCPDeadPeerShort, which mostly waits on the kernel's timers.
	t.Parallel()
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
	assert.Equal(t, ptr.To(opts.Settings.PolicyUnreachableSeconds), loss.TolerationSeconds, "the pod carried the policy's toleration")
	require.NotNil(t, loss.UnreachableSeconds, "the node was marked unreachable")
	require.NotNil(t, loss.EvictedSeconds, "its pod was evicted")
	require.NotNil(t, loss.RecoverySeconds, "all replicas ran again")
	assert.NotEmpty(t, loss.ReplacementNode)
	assert.NotEqual(t, loss.Node, loss.ReplacementNode, "the replacement runs on a surviving node")
	assert.LessOrEqual(t, *loss.UnreachableSeconds, *loss.EvictedSeconds)
	assert.LessOrEqual(t, *loss.EvictedSeconds, *loss.RecoverySeconds)
	assert.Equal(t, SideWebhook, loss.Side)

	// Native mode, killed with the same node: the API server shortened the toleration
	// at pod creation, and the recovery is the same.
	nativePlacement, ok := rep.Find(ScenarioPlacement, NativeNS)
	require.True(t, ok)
	assert.Len(t, nativePlacement.Placement, 3, "native mode's anti-affinity puts the 3 replicas on 3 nodes")
	nativeLoss, ok := rep.Find(ScenarioNodeLoss, NativeNS)
	require.True(t, ok)
	assert.Equal(t, SideNative, nativeLoss.Side)
	assert.Equal(t, loss.Node, nativeLoss.Node, "the same node died")
	assert.Equal(t, ptr.To(opts.Settings.PolicyUnreachableSeconds), nativeLoss.TolerationSeconds, "the pod carried the policy's toleration, from native mode")
	require.NotNil(t, nativeLoss.EvictedSeconds, "its pod was evicted")
	require.NotNil(t, nativeLoss.RecoverySeconds, "all replicas ran again")
	assert.NotEqual(t, nativeLoss.Node, nativeLoss.ReplacementNode, "the replacement runs on a surviving node")
	assert.True(t, nativeLoss.Passed, nativeLoss.Outcome)

	// The not-ready hiccup: the taint came and went, and evicted the control only.
	hiccup, ok := rep.Find(ScenarioNotReadyHiccup, OptedIn)
	require.True(t, ok)
	require.NotNil(t, hiccup.NotReadyTaintSeconds, "the node was tainted not-ready: %s", hiccup.Outcome)
	require.NotNil(t, hiccup.NotReadyTaintRemovedSeconds, "and untainted: %s", hiccup.Outcome)
	assert.Equal(t, ptr.To(opts.Settings.PolicyNotReadySeconds), hiccup.NotReadyTolerationSeconds, "the pod carried the policy's not-ready toleration")
	assert.Equal(t, ptr.To(0), hiccup.Evicted, hiccup.Outcome)
	assert.Positive(t, *hiccup.LeaseRenewals, "the Lease was renewed while the node reported NotReady")
	assert.GreaterOrEqual(t, *hiccup.WatchedSeconds, *hiccup.NotReadyTaintSeconds+float64(opts.Settings.PolicyNotReadySeconds),
		"watched past the moment the pod would have been evicted had the taint stayed")
	assert.Greater(t, *hiccup.NotReadyForSeconds, opts.Settings.NodeMonitorGracePeriod.Seconds(), "NotReady for longer than the grace period")
	control, ok := rep.Find(ScenarioNotReadyControl, OptedIn)
	require.True(t, ok)
	assert.Equal(t, ptr.To(1), control.Evicted, "the control, tolerating not-ready for less than the hiccup, was evicted: %s", control.Outcome)

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

	rep.TCP = []TCPRow{
		{Scenario: ScenarioTCPDeadPeer, Connection: ConnSending, OptedIn: true, FailedAfterSeconds: ptr.To(205.8), ModelSeconds: 204.6, Passed: true,
			Sysctls: map[string]string{sysctlRetries2: "9"}},
		{Scenario: ScenarioTCPDeadPeer, Connection: ConnIdle, StillOpenAfterSeconds: ptr.To(300.0), ModelSeconds: 7875, Passed: true,
			Sysctls: map[string]string{sysctlKeepaliveTime: "7200", sysctlKeepaliveIntvl: "75", sysctlKeepaliveProbes: "9"}},
	}
	data, err = rep.JSON()
	require.NoError(t, err)
	rows = nil
	require.NoError(t, json.Unmarshal(data, &rows))
	require.Len(t, rows, 5)
	tcp := rows[3]
	assert.Equal(t, "tcp-dead-peer", tcp["scenario"])
	assert.Equal(t, "sending", tcp["connection"])
	assert.Equal(t, 205.8, tcp["failedAfterSeconds"])
	assert.NotContains(t, tcp, "stillOpenAfterSeconds")
	assert.Contains(t, rows[4], "failedAfterSeconds", "null when capped, not absent")
	assert.Nil(t, rows[4]["failedAfterSeconds"])
	assert.Equal(t, 300.0, rows[4]["stillOpenAfterSeconds"])
	assert.Equal(t, 7875.0, rows[4]["modelSeconds"])

	table := rep.Table()
	assert.Contains(t, table, "| sending, data unacknowledged | yes | tcp_retries2 9 | 205.8 s | 204.6 s |")
	assert.Contains(t, table, "| still open after 300 s | 7875 s (131 min) |")
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
	assert.Nil(t, s.TCP, "the short TCP leg is TestTCPDeadPeerShort")
}

func TestTheHiccupIsShorterThanTheNotReadyToleration(t *testing.T) {
	assert.Equal(t, v1alpha1.DefaultNotReady, KubernetesDefaults.PolicyNotReadySeconds)
	assert.Equal(t, v1alpha1.DefaultUnreachable, KubernetesDefaults.PolicyUnreachableSeconds)
	for name, o := range map[string]Options{"short": Short(), "measured": Measured()} {
		s := o.Settings
		assert.Less(t, o.NotReadyHiccup, time.Duration(s.PolicyNotReadySeconds)*time.Second, "%s: the policy's pods ride it out", name)
		assert.Greater(t, o.NotReadyHiccup, time.Duration(s.PolicyUnreachableSeconds)*time.Second, "%s: the control is evicted", name)
		assert.Greater(t, o.NotReadyHiccup, 2*s.NodeMonitorPeriod, "%s: the taint is seen", name)
	}
	assert.Greater(t, Short().NotReadyHiccup, Short().Settings.NodeMonitorGracePeriod,
		"the short hiccup outlasts the grace period: a NotReady node with a live Lease is never taken for a dead one")
}

// TestShortZoneLoss is the quick version of the zone loss: 3 + 1 + 1 nodes, every node
// of one zone killed at once. The default policy's spread leaves replicas in every zone,
// so one is always Running; a DoNotSchedule spread (nodeTaintsPolicy Honor) replaces the
// lost replica in the zones left, while the same spread without Honor, the control,
// leaves it Pending.
func TestShortZoneLoss(t *testing.T) {
	t.Parallel()
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	bins, err := FindBinaries(root)
	require.NoError(t, err, "building the cluster's binaries (hack/control-plane.sh, hack/cluster.sh)")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	dir := t.TempDir()
	opts := ShortZoneLoss()
	opts.Log = t.Logf
	rep, err := RunZoneLoss(ctx, root, bins, opts, dir)
	require.NoError(t, err)
	t.Logf("%.0f s in all\n%s", rep.WallSeconds, rep.Table())
	assert.Empty(t, rep.Problems())

	for _, ns := range []string{OptedIn, HardZoneNS} {
		row, ok := rep.Find(ScenarioZoneLoss, ns)
		require.True(t, ok, ns)
		assert.Len(t, row.Zones, 3, "%s: one replica per zone (placement %v)", ns, row.Placement)
		assert.Equal(t, 1, row.Victims, "%s: the lost zone held one replica", ns)
		require.NotNil(t, row.MinReady, ns)
		assert.Equal(t, 2, *row.MinReady, "%s: the other two stayed Running", ns)
		require.NotNil(t, row.RecoverySeconds, "%s: all 3 Running again off the lost zone", ns)
		require.NotNil(t, row.UnreachableSeconds, "%s: the zone's nodes were seen not Ready", ns)
		require.NotNil(t, row.EvictedSeconds, "%s: its pod in the lost zone was evicted", ns)
		require.NotNil(t, row.ReplacementSeconds, "%s: a replacement ran", ns)
		assert.LessOrEqual(t, *row.UnreachableSeconds, *row.EvictedSeconds, "%s: evicted once unreachable", ns)
		assert.LessOrEqual(t, *row.ReplacementSeconds, *row.RecoverySeconds, "%s: all Running no sooner than the replacement", ns)
		assert.NotEqual(t, row.DeadZone, zoneOfNode(row.ReplacementNode), "%s: the replacement runs in a zone left", ns)
	}
	spread, _ := rep.Find(ScenarioZoneLoss, OptedIn)
	assert.Equal(t, "maxSkew 1, ScheduleAnyway", spread.ZoneSpread, "the default policy's zone spread, as stored")
	hard, _ := rep.Find(ScenarioZoneLoss, HardZoneNS)
	assert.Equal(t, "maxSkew 1, DoNotSchedule, nodeTaintsPolicy Honor", hard.ZoneSpread)
	control, ok := rep.Find(ScenarioZoneLoss, NotOptedIn)
	require.True(t, ok)
	assert.Nil(t, control.RecoverySeconds, "the control's replacement stays Pending: %s", control.Outcome)
	assert.Contains(t, control.Outcome, "topology spread", "the scheduler says the spread is why")
	assert.Empty(t, processesMentioning(t, dir), "processes left running")
}

// zoneOfNode is the zone a zone loss's node is named after (zone-b-1: zone-b).
func zoneOfNode(node string) string {
	if i := strings.LastIndex(node, "-"); i > 0 {
		return node[:i]
	}
	return node
}
