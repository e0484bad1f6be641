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
	PolicyTolerationSeconds  int64   `json:"policyTolerationSeconds"`
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
		PolicyTolerationSeconds:       s.PolicyTolerationSeconds,
		KubernetesDefaults:            s == KubernetesDefaults,
	}
}

// Row is one result. Times (…Seconds) count from the dead node's last heartbeat, the
// last renewal of its Lease; null means it did not happen.
type Row struct {
	Scenario  string `json:"scenario"`
	Title     string `json:"title"`
	Namespace string `json:"namespace"`
	OptedIn   bool   `json:"optedIn"`
	Workload  string `json:"workload"`
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

	ControllerSettings ControllerSettings `json:"controllerSettings"`
}

// Report is the result of a Run.
type Report struct {
	Settings    ControllerSettings
	Rows        []Row
	WallSeconds float64
}

// JSON is the rows as a JSON list, each with the controller settings.
func (r *Report) JSON() ([]byte, error) {
	rows := make([]Row, len(r.Rows))
	for i, row := range r.Rows {
		row.ControllerSettings = r.Settings
		rows[i] = row
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
	b.WriteString("| scenario | namespace | ha-injector | unreachable toleration | node marked unreachable | pod evicted | replacement Running | all replicas Running (recovery) | without / with |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, row := range r.Rows {
		if row.Scenario != ScenarioNodeLoss && row.Scenario != ScenarioStatefulSet {
			continue
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
			row.Title, row.Namespace, yesNo(row.OptedIn), tol,
			secs(row.UnreachableSeconds), secs(row.EvictedSeconds), replacement, recovery, ratio)
	}
	b.WriteString("\n")
	for _, row := range r.Rows {
		if row.Scenario == ScenarioNodeLoss {
			continue
		}
		mark := "ok"
		if !row.Passed {
			mark = "FAILED"
		}
		fmt.Fprintf(&b, "- %s, `%s`: %s [%s]\n", row.Title, row.Namespace, row.Outcome, mark)
	}
	s := r.Settings
	defaults := "shortened for the quick version"
	if s.KubernetesDefaults {
		defaults = "Kubernetes' defaults"
	}
	fmt.Fprintf(&b, "\nTimes are seconds after the dead node's last heartbeat (the last renewal of its Lease). "+
		"Kubernetes %s, KWOK %s; %s: node-monitor-grace-period %gs, node-monitor-period %gs, node Lease %g s (renewed every %g s), "+
		"DefaultTolerationSeconds %d s, ha-injector policy tolerations %d s; every other setting at its default.\n",
		s.KubernetesVersion, s.KWOKVersion, defaults, s.NodeMonitorGracePeriodSeconds, s.NodeMonitorPeriodSeconds,
		s.NodeLeaseDurationSeconds, s.NodeLeaseDurationSeconds/4, s.DefaultTolerationSeconds, s.PolicyTolerationSeconds)
	return b.String()
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
