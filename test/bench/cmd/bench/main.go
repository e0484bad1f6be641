// Command bench runs the load benchmarks (`make bench`): it prints one table of
// scenario, ours, baseline and ratio, writes the same rows to _output/bench.json and
// draws their ratios in _output/bench-ratios.svg (RatiosPicture).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ha-injector/ha-injector/test/bench"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

func main() {
	short := flag.Bool("short", false, "little load, every scenario (what make test runs)")
	out := flag.String("out", "", "JSON output (default: _output/bench.json in the repository)")
	profile := flag.String("cpuprofile", "", "also write a CPU profile of serve under the admission load to this file")
	apiProfiles := flag.String("apiserver-cpuprofile-dir", "", "also write CPU profiles of kube-apiserver creating pods with native mode, with the webhook, with no admission and with native mode's floor into this folder")
	flag.Parse()
	// The API clients log through controller-runtime; the report is the output.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *short, *out, bench.Profiles{Serve: *profile, APIServerDir: *apiProfiles}); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, short bool, out string, profiles bench.Profiles) error {
	sizes := bench.Full
	if short {
		sizes = bench.Short
	}
	if out == "" {
		root, err := controlplane.RepoRoot()
		if err != nil {
			return err
		}
		out = filepath.Join(root, "_output", "bench.json")
	}
	rows, err := bench.Run(ctx, sizes, os.Stderr, profiles)
	if err != nil {
		return err
	}
	if err := bench.Print(os.Stdout, rows); err != nil {
		return err
	}
	if err := bench.WriteJSON(out, rows); err != nil {
		return err
	}
	svg, err := bench.RatiosPicture(rows)
	if err != nil {
		return err
	}
	picture := filepath.Join(filepath.Dir(out), bench.RatiosFile)
	if err := os.WriteFile(picture, svg, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "rows written to %s, their ratios drawn in %s\n", out, picture)
	return nil
}
