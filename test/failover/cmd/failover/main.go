// Command failover is `make failover`: it runs the measured failover scenarios of
// package failover in a simulated cluster with Kubernetes' default timings, and beside
// them the TCP leg in network namespaces (root only; -tcp=false leaves it out), prints
// the tables (Markdown, as the README quotes them) and writes the rows as JSON. It
// exits 1 if a scenario did not turn out as documented. It takes about 6 minutes.
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

	"github.com/ha-injector/ha-injector/internal/controlplane"
	"github.com/ha-injector/ha-injector/test/failover"
)

func main() {
	jsonPath := flag.String("json", "_output/failover.json", "where to write the rows as JSON (relative to the repository)")
	dir := flag.String("dir", "_output/failover", "folder for the components' logs (relative to the repository; emptied first)")
	tcp := flag.Bool("tcp", true, "also measure the TCP leg: real sockets in network namespaces, which needs root")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *jsonPath, *dir, *tcp); err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, jsonPath, dir string, tcp bool) error {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	if !filepath.IsAbs(jsonPath) {
		jsonPath = filepath.Join(root, jsonPath)
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(root, dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	bins, err := failover.FindBinaries(root)
	if err != nil {
		return err
	}
	opts := failover.Measured()
	if !tcp {
		opts.TCP = nil
	}
	start := time.Now()
	opts.Log = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%5.0fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	rep, err := failover.Run(ctx, root, bins, opts, dir)
	if err != nil {
		return err
	}
	// etcd's data is of no use after the run; the logs stay for reading.
	if err := os.RemoveAll(filepath.Join(dir, "etcd")); err != nil {
		return err
	}
	data, err := rep.JSON()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(jsonPath), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(jsonPath, append(data, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Println(rep.Table())
	fmt.Printf("Wall time %.0f s. Rows written to %s; component logs in %s.\n", rep.WallSeconds, jsonPath, dir)
	if problems := rep.Problems(); len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "not as documented:", p)
		}
		return fmt.Errorf("%d scenario(s) did not turn out as documented", len(problems))
	}
	return nil
}
