package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
)

// Print writes the rows as one table: scenario, metric, ours, baseline, ratio, target.
func Print(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tMETRIC\tOURS\tBASELINE\tRATIO\tTARGET")
	for _, r := range rows {
		baseline, ratio, target := "-", "-", "-"
		if r.Baseline != nil {
			baseline = fmt.Sprintf("%.3g %s", *r.Baseline, r.Unit)
		}
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2fx", *r.Ratio)
		}
		if r.Target != "" {
			target = r.Target
			if r.Met != nil && *r.Met {
				target += " (met)"
			} else {
				target += " (MISSED)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%.3g %s\t%s\t%s\t%s\n", r.Scenario, r.Metric, r.Ours, r.Unit, baseline, ratio, target)
	}
	return tw.Flush()
}

// WriteJSON writes the rows as a JSON list, for scripts.
func WriteJSON(path string, rows []Row) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
