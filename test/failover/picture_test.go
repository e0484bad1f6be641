package failover

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/test/harness/svg"
)

// pictureReport is a report with a row of every side of every pictured scenario, its
// times made up for the test (each distinct, so each can be found in the picture).
func pictureReport() *Report {
	f := func(v float64) *float64 { return &v }
	return &Report{
		Settings: ControllerSettings{KubernetesDefaults: true, DefaultTolerationSeconds: 300, PolicyUnreachableSeconds: 30},
		Rows: []Row{
			{Scenario: ScenarioPlacement, Namespace: OptedIn, OptedIn: true, Side: SideWebhook},
			{Scenario: ScenarioNodeLoss, Namespace: OptedIn, OptedIn: true, Side: SideWebhook, Workload: "Deployment/web-server", Node: "node-2",
				TolerationSeconds: ptr.To[int64](30), KilledSeconds: f(-3.1), UnreachableSeconds: f(41.2), EvictedSeconds: f(71.3),
				ReplacementSeconds: f(84.4), RecoverySeconds: f(85.5)},
			{Scenario: ScenarioNodeLoss, Namespace: NativeNS, OptedIn: true, Side: SideNative, Workload: "Deployment/web-server", Node: "node-2",
				TolerationSeconds: ptr.To[int64](30), KilledSeconds: f(-3.1), UnreachableSeconds: f(41.2), EvictedSeconds: f(71.6),
				ReplacementSeconds: f(86.7), RecoverySeconds: f(87.8)},
			{Scenario: ScenarioNodeLoss, Namespace: NotOptedIn, Side: SideNone, Workload: "Deployment/web-server", Node: "node-2",
				TolerationSeconds: ptr.To[int64](300), KilledSeconds: f(-3.1), UnreachableSeconds: f(41.2), EvictedSeconds: f(341.9),
				ReplacementSeconds: f(354.1), RecoverySeconds: f(355.2)},
			{Scenario: ScenarioStatefulSet, Namespace: OptedIn, OptedIn: true, Side: SideWebhook, Workload: "StatefulSet/db", Node: "node-2",
				TolerationSeconds: ptr.To[int64](30), KilledSeconds: f(-3.1), UnreachableSeconds: f(41.2), EvictedSeconds: f(72.3),
				TaintedSeconds: f(362.4), ReplacementSeconds: f(381.5), RecoverySeconds: f(382.6)},
			{Scenario: ScenarioNotReadyHiccup, Namespace: OptedIn, OptedIn: true, Node: "node-1", Victims: 1, NotReadyTolerationSeconds: ptr.To[int64](60),
				NotReadyTaintSeconds: f(5.1), NotReadyForSeconds: f(45.2), NotReadyTaintRemovedSeconds: f(49.3), Evicted: ptr.To(0), WatchedSeconds: f(75.4)},
			{Scenario: ScenarioNotReadyHiccup, Namespace: NotOptedIn, Node: "node-1", Victims: 1, NotReadyTolerationSeconds: ptr.To[int64](300),
				NotReadyTaintSeconds: f(5.1), NotReadyForSeconds: f(45.2), NotReadyTaintRemovedSeconds: f(49.3), Evicted: ptr.To(0), WatchedSeconds: f(75.4)},
			{Scenario: ScenarioNotReadyControl, Namespace: OptedIn, Node: "node-1", Victims: 1, NotReadyTolerationSeconds: ptr.To[int64](30),
				NotReadyTaintSeconds: f(5.1), NotReadyForSeconds: f(45.2), NotReadyTaintRemovedSeconds: f(49.3), Evicted: ptr.To(1), EvictedSeconds: f(35.6), WatchedSeconds: f(75.4)},
			{Scenario: ScenarioZoneLoss, Namespace: OptedIn, OptedIn: true, Workload: "Deployment/web-server", DeadZone: "zone-a", Victims: 1,
				MinReady: ptr.To(2), SecondsWithoutReady: f(0), KilledSeconds: f(-2.2), UnreachableSeconds: f(40.3), EvictedSeconds: f(70.4),
				ReplacementSeconds: f(75.5), RecoverySeconds: f(75.5)},
			{Scenario: ScenarioZoneLoss, Namespace: HardZoneNS, OptedIn: true, Workload: "Deployment/web-server", DeadZone: "zone-a", Victims: 1,
				MinReady: ptr.To(2), SecondsWithoutReady: f(0), KilledSeconds: f(-2.2), UnreachableSeconds: f(40.3), EvictedSeconds: f(70.6),
				ReplacementSeconds: f(76.7), RecoverySeconds: f(76.7)},
			{Scenario: ScenarioZoneLoss, Namespace: NotOptedIn, Workload: "Deployment/" + ZoneControl, DeadZone: "zone-a", Victims: 1,
				MinReady: ptr.To(2), SecondsWithoutReady: f(0), KilledSeconds: f(-2.2), UnreachableSeconds: f(40.3), EvictedSeconds: f(70.8)},
			{Scenario: ScenarioZoneLoss, Namespace: NotOptedIn, Workload: "Deployment/web-server", DeadZone: "zone-a", Victims: 3,
				MinReady: ptr.To(0), SecondsWithoutReady: f(310.9), KilledSeconds: f(-2.2), UnreachableSeconds: f(40.3), EvictedSeconds: f(340.1),
				ReplacementSeconds: f(351.2), RecoverySeconds: f(352.3)},
		},
		TCP: []TCPRow{
			{Scenario: ScenarioTCPDeadPeer, Connection: ConnIdle, OptedIn: true, FailedAfterSeconds: f(185.1), ModelSeconds: 185, Kernel: "6.1.0"},
			{Scenario: ScenarioTCPDeadPeer, Connection: ConnIdle, StillOpenAfterSeconds: f(300), ModelSeconds: 7875, Kernel: "6.1.0"},
			{Scenario: ScenarioTCPDeadPeer, Connection: ConnSending, OptedIn: true, FailedAfterSeconds: f(203.2), ModelSeconds: 204.6, Kernel: "6.1.0"},
			{Scenario: ScenarioTCPDeadPeer, Connection: ConnSending, StillOpenAfterSeconds: f(300), ModelSeconds: 924.6, Kernel: "6.1.0"},
		},
	}
}

// svgTexts is the text of the picture's <text> elements; the picture must be a
// well-formed SVG.
func svgTexts(t *testing.T, picture []byte) []string {
	t.Helper()
	texts, err := svg.Texts(picture)
	require.NoError(t, err)
	return texts
}

func TestPicturesDrawEveryScenarioOfTheReport(t *testing.T) {
	pics, err := pictureReport().Pictures()
	require.NoError(t, err)
	var got []string
	for _, p := range pics {
		got = append(got, p.Scenario)
	}
	assert.Equal(t, []string{ScenarioNodeLoss, ScenarioNotReadyHiccup, ScenarioTCPDeadPeer, ScenarioZoneLoss}, got)

	want := map[string][]string{
		ScenarioNodeLoss: {"with ha-injector", "with ha-injector, native mode", "without ha-injector", "StatefulSet db, tolerates unreachable 30 s",
			"tolerates unreachable 300 s", "-3.1 s", "0 s", "41.2 s", "71.3 s", "84.4 s", "85.5 s", "87.8 s", "341.9 s", "355.2 s", "362.4 s", "382.6 s",
			"marked unreachable (tainted)", "pods evicted", "replacement Running", "all replicas Running", "out-of-service taint (by hand)", "node-2"},
		ScenarioNotReadyHiccup: {"with ha-injector", "without ha-injector", "control (opted out)", "tolerates not-ready 60 s, 0 of 1 pods evicted",
			"tolerates not-ready 30 s, 1 of 1 pods evicted", "5.1 s", "45.2 s", "49.3 s", "35.6 s", "75.4 s", "not-ready taint added", "node-1"},
		ScenarioTCPDeadPeer: {"with ha-injector (sysctls)", "without ha-injector (kernel defaults)", "185.1 s", "203.2 s", "300 s", "204.6 s",
			"fails at 7875 s (131 min) by the model", "fails at 924.6 s (15 min) by the model", "connection failed (ETIMEDOUT)", "6.1.0"},
		ScenarioZoneLoss: {"with ha-injector, default policy", "with ha-injector, zone spread DoNotSchedule", "without ha-injector",
			"control: DoNotSchedule spread, no nodeTaintsPolicy", "none Ready for 310.9 s", "never fewer than 2 Ready", "replacement never Running",
			"-2.2 s", "40.3 s", "70.4 s", "75.5 s", "76.7 s", "340.1 s", "352.3 s", "zone-a"},
	}
	for _, p := range pics {
		all := strings.Join(svgTexts(t, p.SVG), "\n")
		for _, w := range want[p.Scenario] {
			assert.Contains(t, all, w, "%s: the picture says %q", p.Scenario, w)
		}
	}
}

func TestPicturesLeaveOutScenariosNotRun(t *testing.T) {
	rep := pictureReport()
	rep.TCP = nil
	var rows []Row
	for _, row := range rep.Rows {
		if row.Scenario != ScenarioZoneLoss {
			rows = append(rows, row)
		}
	}
	rep.Rows = rows
	pics, err := rep.Pictures()
	require.NoError(t, err)
	require.Len(t, pics, 2)
	assert.Equal(t, ScenarioNodeLoss, pics[0].Scenario)
	assert.Equal(t, ScenarioNotReadyHiccup, pics[1].Scenario)

	_, err = rep.Picture(ScenarioZoneLoss)
	assert.ErrorContains(t, err, "no zone-loss rows")
	_, err = rep.Picture(ScenarioTCPDeadPeer)
	assert.ErrorContains(t, err, "no tcp-dead-peer rows")
	_, err = rep.Picture(ScenarioPlacement)
	assert.ErrorContains(t, err, "no picture for scenario")

	none, err := (&Report{}).Pictures()
	require.NoError(t, err)
	assert.Empty(t, none)
}

func TestPicturesAreTheSameFromTheJSON(t *testing.T) {
	rep := pictureReport()
	data, err := rep.JSON()
	require.NoError(t, err)
	back, err := ParseReport(data)
	require.NoError(t, err)
	assert.Equal(t, rep.Settings, back.Settings)
	require.Len(t, back.TCP, len(rep.TCP))
	want, err := rep.Pictures()
	require.NoError(t, err)
	got, err := back.Pictures()
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for i := range want {
		assert.Equal(t, string(want[i].SVG), string(got[i].SVG), "%s: drawn alike from the report and from its JSON", want[i].Scenario)
	}
	_, err = ParseReport([]byte(`{"scenario": "node-loss"}`))
	assert.Error(t, err, "a JSON that is not a list of rows")
}
