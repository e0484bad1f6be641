package failover

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Scenario names, the "scenario" field of the JSON rows.
const (
	ScenarioPlacement         = "placement"
	ScenarioRequiredRollout   = "required-rolling-update"
	ScenarioRequiredControl   = "required-rolling-update-without-matchLabelKeys"
	ScenarioRequiredDowngrade = "required-4-replicas-on-3-nodes"
	ScenarioNodeLoss          = "node-loss"
	ScenarioStatefulSet       = "node-loss-statefulset"
	ScenarioNotReadyHiccup    = "not-ready-hiccup"
	ScenarioNotReadyControl   = "not-ready-hiccup-control"
)

// ControllerSettings are the timings a run used, as they appear in every JSON row.
type ControllerSettings struct {
	KubernetesVersion             string  `json:"kubernetesVersion"`
	KWOKVersion                   string  `json:"kwokVersion"`
	NodeMonitorGracePeriodSeconds float64 `json:"nodeMonitorGracePeriodSeconds"`
	NodeMonitorPeriodSeconds      float64 `json:"nodeMonitorPeriodSeconds"`
	// NodeLeaseDurationSeconds is the kubelet's (KWOK's) Lease duration; it is renewed
	// every quarter of it.
	NodeLeaseDurationSeconds float64 `json:"nodeLeaseDurationSeconds"`
	DefaultTolerationSeconds int64   `json:"defaultTolerationSeconds"`
	PolicyNotReadySeconds    int64   `json:"policyNotReadySeconds"`
	PolicyUnreachableSeconds int64   `json:"policyUnreachableSeconds"`
	// KubernetesDefaults is true when all of the above are Kubernetes' and the chart's
	// defaults. Every other controller setting is always its default.
	KubernetesDefaults bool `json:"kubernetesDefaults"`
}

func reportSettings(s Settings) ControllerSettings {
	return ControllerSettings{
		KubernetesVersion:             KubernetesVersion,
		KWOKVersion:                   KWOKVersion,
		NodeMonitorGracePeriodSeconds: s.NodeMonitorGracePeriod.Seconds(),
		NodeMonitorPeriodSeconds:      s.NodeMonitorPeriod.Seconds(),
		NodeLeaseDurationSeconds:      s.NodeLeaseDuration.Seconds(),
		DefaultTolerationSeconds:      s.DefaultTolerationSeconds,
		PolicyNotReadySeconds:         s.PolicyNotReadySeconds,
		PolicyUnreachableSeconds:      s.PolicyUnreachableSeconds,
		KubernetesDefaults:            s == KubernetesDefaults,
	}
}

// Row is one result of the cluster. Times (…Seconds) count from the dead node's last
// heartbeat, the last renewal of its Lease (not-ready hiccup: from the moment the node
// reported NotReady); null means it did not happen.
type Row struct {
	Scenario  string `json:"scenario"`
	Title     string `json:"title"`
	Namespace string `json:"namespace"`
	OptedIn   bool   `json:"optedIn"`
	// Side says how ha-injector reached the pods (placement and node loss): "webhook",
	// "native" (native mode: the API server applied the policy itself) or "none".
	Side     string `json:"side,omitempty"`
	Workload string `json:"workload"`
	// Passed says the scenario turned out as ha-injector's documentation says.
	Passed  bool   `json:"passed"`
	Outcome string `json:"outcome"`
	// Placement is the workload's pods per node (for node loss: before the node died).
	Placement map[string]int `json:"placement,omitempty"`

	// Node loss only.
	Node string `json:"node,omitempty"`
	// Victims is the number of the workload's pods on the node.
	Victims int `json:"victims,omitempty"`
	// TolerationSeconds is their toleration of the unreachable taint.
	TolerationSeconds *int64     `json:"tolerationSeconds,omitempty"`
	LastHeartbeat     *time.Time `json:"lastHeartbeat,omitempty"`
	// KilledSeconds is when KWOK was told to stop (negative: before the last heartbeat
	// it had already sent).
	KilledSeconds *float64 `json:"killedSeconds,omitempty"`
	// UnreachableSeconds is when the node was seen not Ready.
	UnreachableSeconds *float64 `json:"unreachableSeconds,omitempty"`
	// EvictedSeconds is when all the workload's pods on the node were marked for deletion.
	EvictedSeconds *float64 `json:"evictedSeconds,omitempty"`
	// ReplacementSeconds is when the first replacement was Running on a surviving node.
	ReplacementSeconds *float64 `json:"replacementSeconds,omitempty"`
	ReplacementNode    string   `json:"replacementNode,omitempty"`
	// TaintedSeconds is when the out-of-service taint was added (StatefulSet only).
	TaintedSeconds *float64 `json:"outOfServiceTaintSeconds,omitempty"`
	// RecoverySeconds is when every replica was Running again off the dead node.
	RecoverySeconds *float64 `json:"recoverySeconds"`
	// Ratio is this row's recovery time over the opted-in namespace's (without/with).
	Ratio *float64 `json:"ratioWithoutToWith,omitempty"`

	// Not-ready hiccup only (Node, Victims and EvictedSeconds too).
	// NotReadyTolerationSeconds is the pods' toleration of the not-ready taint.
	NotReadyTolerationSeconds *int64 `json:"notReadyTolerationSeconds,omitempty"`
	// NotReadyForSeconds is how long the node reported Ready=False.
	NotReadyForSeconds *float64 `json:"notReadyForSeconds,omitempty"`
	// NotReadyTaintSeconds and NotReadyTaintRemovedSeconds are when the
	// node.kubernetes.io/not-ready:NoExecute taint was first seen, and seen gone.
	NotReadyTaintSeconds        *float64 `json:"notReadyTaintSeconds,omitempty"`
	NotReadyTaintRemovedSeconds *float64 `json:"notReadyTaintRemovedSeconds,omitempty"`
	// LeaseRenewals counts the renewals of the node's Lease seen while it reported NotReady.
	LeaseRenewals *int `json:"leaseRenewals,omitempty"`
	// Evicted is how many of the Victims were evicted.
	Evicted *int `json:"evicted,omitempty"`
	// WatchedSeconds is how long evictions were watched for: past the moment the
	// pods would have been evicted had the taint stayed.
	WatchedSeconds *float64 `json:"watchedSeconds,omitempty"`

	// Zone loss only (Placement, Node: the lost zone's nodes, Victims, LastHeartbeat:
	// the zone's last, UnreachableSeconds: every node of the zone seen not Ready,
	// EvictedSeconds, ReplacementSeconds, RecoverySeconds and ReplacementNode too).
	// Zones are the zones the workload's replicas ran in before the loss.
	Zones []string `json:"zones,omitempty"`
	// ZoneSpread is the pods' topology spread constraint on the zone key, as stored
	// ("" when they had none).
	ZoneSpread string `json:"zoneSpread,omitempty"`
	// DeadZone is the zone whose every node was killed at once.
	DeadZone string `json:"deadZone,omitempty"`
	// MinReady is the fewest of the workload's replicas Running at any moment after the
	// loss; SecondsWithoutReady how long none was.
	MinReady            *int     `json:"minReady,omitempty"`
	SecondsWithoutReady *float64 `json:"secondsWithoutReady,omitempty"`

	ControllerSettings ControllerSettings `json:"controllerSettings"`
}

// Report is the result of a Run.
type Report struct {
	Settings ControllerSettings
	Rows     []Row
	// TCP are the TCP leg's rows, when it ran.
	TCP         []TCPRow
	WallSeconds float64
}

// JSON is the rows as a JSON list, the cluster's each with the controller settings,
// then the TCP leg's.
func (r *Report) JSON() ([]byte, error) {
	rows := make([]any, 0, len(r.Rows)+len(r.TCP))
	for _, row := range r.Rows {
		row.ControllerSettings = r.Settings
		rows = append(rows, row)
	}
	for _, row := range r.TCP {
		rows = append(rows, row)
	}
	return json.MarshalIndent(rows, "", "  ")
}

// Problems lists the scenarios that did not turn out as expected.
func (r *Report) Problems() []string {
	var out []string
	for _, row := range r.Rows {
		if !row.Passed {
			out = append(out, fmt.Sprintf("%s (%s): %s", row.Title, row.Namespace, row.Outcome))
		}
	}
	for _, row := range r.TCP {
		if !row.Passed {
			out = append(out, fmt.Sprintf("%s (%s): %s", row.Title, optedInText(row.OptedIn), row.Outcome))
		}
	}
	return out
}

// Find returns the first row of the scenario in the namespace.
func (r *Report) Find(scenario, namespace string) (Row, bool) {
	for _, row := range r.Rows {
		if row.Scenario == scenario && row.Namespace == namespace {
			return row, true
		}
	}
	return Row{}, false
}

// Table is the node-loss rows as a Markdown table, then the other scenarios' outcomes
// and the settings.
func (r *Report) Table() string {
	var b strings.Builder
	first := true
	for _, row := range r.Rows {
		if row.Scenario != ScenarioNodeLoss && row.Scenario != ScenarioStatefulSet {
			continue
		}
		if first {
			b.WriteString("| scenario | namespace | ha-injector | unreachable toleration | node marked unreachable | pod evicted | replacement Running | all replicas Running (recovery) | without / with |\n")
			b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
			first = false
		}
		tol := "none"
		if row.TolerationSeconds != nil {
			tol = fmt.Sprintf("%d s", *row.TolerationSeconds)
		}
		replacement, recovery := secs(row.ReplacementSeconds), secs(row.RecoverySeconds)
		if row.TaintedSeconds != nil {
			replacement = fmt.Sprintf("none until the out-of-service taint at %s, then %s", secs(row.TaintedSeconds), replacement)
		}
		ratio := ""
		if row.Ratio != nil {
			ratio = fmt.Sprintf("%.1f×", *row.Ratio)
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s | %s | %s | %s | %s |\n",
			row.Title, row.Namespace, haInjector(row), tol,
			secs(row.UnreachableSeconds), secs(row.EvictedSeconds), replacement, recovery, ratio)
	}
	r.hiccupTable(&b)
	r.zoneTable(&b)
	r.tcpTable(&b)
	b.WriteString("\n")
	for _, row := range r.Rows {
		if row.Scenario == ScenarioNodeLoss {
			continue
		}
		fmt.Fprintf(&b, "- %s, `%s`: %s [%s]\n", row.Title, row.Namespace, row.Outcome, okFailed(row.Passed))
	}
	for _, row := range r.TCP {
		fmt.Fprintf(&b, "- %s, %s: %s [%s]\n", row.Title, optedInText(row.OptedIn), row.Outcome, okFailed(row.Passed))
	}
	s := r.Settings
	defaults := "shortened for the quick version"
	if s.KubernetesDefaults {
		defaults = "Kubernetes' defaults"
	}
	fmt.Fprintf(&b, "\nTimes are seconds after the dead node's last heartbeat (the last renewal of its Lease); for the not-ready hiccup, after the node reported NotReady. "+
		"Kubernetes %s, KWOK %s; %s: node-monitor-grace-period %gs, node-monitor-period %gs, node Lease %g s (renewed every %g s), "+
		"DefaultTolerationSeconds %d s, ha-injector policy tolerations not-ready %d s and unreachable %d s; every other setting at its default.\n",
		s.KubernetesVersion, s.KWOKVersion, defaults, s.NodeMonitorGracePeriodSeconds, s.NodeMonitorPeriodSeconds,
		s.NodeLeaseDurationSeconds, s.NodeLeaseDurationSeconds/4, s.DefaultTolerationSeconds, s.PolicyNotReadySeconds, s.PolicyUnreachableSeconds)
	if len(r.TCP) > 0 {
		fmt.Fprintf(&b, "TCP: real sockets of the kernel (Linux %s) in two network namespaces joined by a veth pair; the peer dies when a blackhole "+
			"route in its namespace drops everything it sends. An idle connection's time counts from the last packet received, a sending one's "+
			"from the write never acknowledged; the model is the kernel's own figure (tcp_keepalive_timer, tcp_model_timeout).\n", r.TCP[0].Kernel)
	}
	return b.String()
}

// hiccupTable is the not-ready hiccup's rows as a Markdown table.
func (r *Report) hiccupTable(b *strings.Builder) {
	first := true
	for _, row := range r.Rows {
		if row.Scenario != ScenarioNotReadyHiccup && row.Scenario != ScenarioNotReadyControl {
			continue
		}
		if first {
			b.WriteString("\n| scenario | namespace | ha-injector | not-ready toleration | node NotReady, Lease renewed | not-ready taint | pods on the node | evicted |\n")
			b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
			first = false
		}
		tol := "none"
		if row.NotReadyTolerationSeconds != nil {
			tol = fmt.Sprintf("%d s", *row.NotReadyTolerationSeconds)
		}
		notReady := secs(row.NotReadyForSeconds)
		if row.LeaseRenewals != nil {
			notReady += fmt.Sprintf(" (%d renewals)", *row.LeaseRenewals)
		}
		taint := "never"
		if row.NotReadyTaintSeconds != nil {
			taint = fmt.Sprintf("%s to %s", secs(row.NotReadyTaintSeconds), secs(row.NotReadyTaintRemovedSeconds))
		}
		evicted := "?"
		if row.Evicted != nil {
			evicted = fmt.Sprint(*row.Evicted)
			if *row.Evicted > 0 {
				evicted += " at " + secs(row.EvictedSeconds)
			}
		}
		fmt.Fprintf(b, "| %s | `%s` | %s | %s | %s | %s | %d | %s |\n",
			row.Title, row.Namespace, yesNo(row.OptedIn), tol, notReady, taint, row.Victims, evicted)
	}
}

// zoneTable is the zone loss's rows as a Markdown table.
func (r *Report) zoneTable(b *strings.Builder) {
	first := true
	for _, row := range r.Rows {
		if row.Scenario != ScenarioZoneLoss {
			continue
		}
		if first {
			fmt.Fprintf(b, "\n| zone loss (%s: %s) | namespace | ha-injector | replicas' zones | replicas in the lost zone | fewest Running after the loss | none Running for | all Running again | zone spread |\n", row.DeadZone, row.Node)
			b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
			first = false
		}
		minReady, without := "?", "?"
		if row.MinReady != nil {
			minReady = fmt.Sprint(*row.MinReady)
		}
		if row.SecondsWithoutReady != nil {
			without = fmt.Sprintf("%.1f s", *row.SecondsWithoutReady)
		}
		spread := row.ZoneSpread
		if spread == "" {
			spread = "none of its own"
		}
		fmt.Fprintf(b, "| %s | `%s` | %s | %s | %d | %s | %s | %s | %s |\n",
			row.Title, row.Namespace, yesNo(row.OptedIn), strings.Join(row.Zones, ", "), row.Victims, minReady, without, secs(row.RecoverySeconds), spread)
	}
}

// tcpTable is the TCP leg's rows as a Markdown table.
func (r *Report) tcpTable(b *strings.Builder) {
	if len(r.TCP) == 0 {
		return
	}
	b.WriteString("\n| connection to a dead peer | ha-injector | sysctls in the pod's network namespace | failed (ETIMEDOUT) after | the kernel's model |\n")
	b.WriteString("| --- | --- | --- | --- | --- |\n")
	for _, row := range r.TCP {
		what, sysctls := "idle, SO_KEEPALIVE on", fmt.Sprintf("tcp_keepalive_time %s, _intvl %s, _probes %s",
			row.Sysctls[sysctlKeepaliveTime], row.Sysctls[sysctlKeepaliveIntvl], row.Sysctls[sysctlKeepaliveProbes])
		if row.Connection == ConnSending {
			what, sysctls = "sending, data unacknowledged", "tcp_retries2 "+row.Sysctls[sysctlRetries2]
		}
		failed := "not measured"
		switch {
		case row.FailedAfterSeconds != nil:
			failed = secs(row.FailedAfterSeconds)
		case row.StillOpenAfterSeconds != nil:
			failed = fmt.Sprintf("still open after %.0f s", *row.StillOpenAfterSeconds)
		}
		if row.Sysctls == nil {
			sysctls = ""
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", what, yesNo(row.OptedIn), sysctls, failed, formatSeconds(time.Duration(row.ModelSeconds*float64(time.Second))))
	}
}

func okFailed(passed bool) string {
	if passed {
		return "ok"
	}
	return "FAILED"
}

func optedInText(optedIn bool) string {
	if optedIn {
		return "opted in"
	}
	return "kernel defaults"
}

func secs(f *float64) string {
	if f == nil {
		return "never"
	}
	return fmt.Sprintf("%.1f s", *f)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// haInjector says whether ha-injector served a row's pods, and how if not by its webhook.
func haInjector(row Row) string {
	if row.Side == SideNative {
		return "yes, native mode"
	}
	return yesNo(row.OptedIn)
}
