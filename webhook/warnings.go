package webhook

import (
	"fmt"
	"unicode/utf8"

	"github.com/ha-injector/ha-injector/policies"
)

// The API server keeps at most 4096 runes of warnings per request and cuts
// each to 256 runes once over that; staying within both keeps them whole.
const (
	maxWarningRunes      = 256
	maxTotalWarningRunes = 4096
	warningPrefix        = "ha-injector: "
)

// warningsFor turns the engine's decisions into admission warnings, which
// kubectl prints (the caller sends none for objects made by controllers). When nothing was (or, under Audit, would be) applied, the
// "kept" decisions are left out, so the pods of an already compliant
// Deployment pass silently; workload-level skips (opted out, DaemonSet and
// mirror pods) are counted in the metrics, not shouted at controllers.
func warningsFor(decisions []policies.Decision) []string {
	quiet := len(policies.AppliedFeatures(decisions)) == 0
	var lines []string
	for _, d := range decisions {
		if d.Feature == policies.FeatureWorkload || (quiet && d.Action == policies.Kept) {
			continue
		}
		lines = append(lines, truncate(warningPrefix+d.String()))
	}
	return limitTotal(lines)
}

// limitTotal keeps whole warnings within the total budget and says how many were left out.
func limitTotal(lines []string) []string {
	total := 0
	for i, l := range lines {
		n := utf8.RuneCountInString(l)
		if total+n > maxTotalWarningRunes-100 {
			return append(lines[:i:i], fmt.Sprintf("%s%d more decisions in the %s annotation and the webhook log", warningPrefix, len(lines)-i, policies.StatusAnnotation))
		}
		total += n
	}
	return lines
}

func truncate(s string) string {
	if utf8.RuneCountInString(s) <= maxWarningRunes {
		return s
	}
	r := []rune(s)
	return string(r[:maxWarningRunes-3]) + "..."
}
