// Command bench-peers runs the peers benchmark (`make bench-peers`): ha-injector next to
// the minimal controller-runtime mutating webhook and to Kyverno (its MutatingPolicy and
// its ClusterPolicy), over TLS and through kube-apiserver. It prints one table and writes
// the same rows to _output/bench-peers.json. Kyverno is built first if it is not cached
// (hack/kyverno.sh).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ha-injector/ha-injector/test/bench"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

func main() {
	short := flag.Bool("short", false, "little load, every server (what make test runs)")
	out := flag.String("out", "", "JSON output (default: _output/bench-peers.json in the repository)")
	profiles := flag.String("cpuprofile-dir", "", "also write CPU profiles of ha-injector and Kyverno under the load over TLS into this folder")
	noKyverno := flag.Bool("no-kyverno", false, "leave Kyverno out (it is built on first use: several GB, many minutes)")
	flag.Parse()
	// The API clients log through controller-runtime; the report is the output.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *short, *out, *profiles, *noKyverno); err != nil {
		fmt.Fprintln(os.Stderr, "bench-peers:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, short bool, out, profiles string, noKyverno bool) error {
	start := time.Now()
	sizes := bench.PeersFull
	if short {
		sizes = bench.PeersShort
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(root, "_output", "bench-peers.json")
	}
	var opts bench.PeerOptions
	if !noKyverno {
		fmt.Fprintf(os.Stderr, "==> Building Kyverno %s (hack/kyverno.sh, once: cached outside the repository)\n", bench.KyvernoVersion)
		if opts.Kyverno, err = bench.KyvernoBuild(root, true); err != nil {
			return err
		}
	}
	if profiles != "" {
		if err := os.MkdirAll(profiles, 0o755); err != nil {
			return err
		}
		opts.ProfileDir = profiles
	}
	res, err := bench.RunPeers(ctx, sizes, os.Stderr, opts)
	if err != nil {
		return err
	}
	if err := bench.Print(os.Stdout, res.Rows); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "rows written to %s (%s in all)\n", out, time.Since(start).Round(time.Second))
	return bench.WriteJSON(out, res.Rows)
}
