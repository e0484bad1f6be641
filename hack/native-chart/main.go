// Command native-chart writes native mode's admission policy fragments
// (internal/native.ChartFragments) into the chart under the folder given
// (hack/generate.sh passes its output root).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ha-injector/ha-injector/internal/native"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: native-chart OUT_ROOT")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "native-chart:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	m, v, err := native.ChartFragments()
	if err != nil {
		return err
	}
	for file, data := range map[string][]byte{native.ChartMutatingFile: m, native.ChartValidatingFile: v} {
		path := filepath.Join(root, "charts", "ha-injector", file)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
