// Command failover is `make failover`: it runs the measured failover scenarios of
// package failover in a simulated cluster with Kubernetes' default timings, and beside
// them the TCP leg in network namespaces (root only; -tcp=false leaves it out), prints
// the tables (Markdown, as docs/failover.md quotes them) and writes the rows as JSON. It
// exits 1 if a scenario did not turn out as documented. Then, in a second cluster, the
// zone loss (-zone=false leaves it out). It takes about 12 minutes.
//
// It also draws each scenario's timeline (node loss, not-ready hiccup, TCP leg, zone
// loss) as SVG next to the JSON, failover-<scenario>.svg, and into -pictures-dir too
// when given (`make failover` passes docs/images). With -from it runs nothing: it
// draws the pictures of a JSON an earlier run wrote, next to that JSON and into
// -pictures-dir.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ha-injector/ha-injector/test/failover"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

func main() {
	jsonPath := flag.String("json", "_output/failover.json", "where to write the rows as JSON (relative to the repository)")
	dir := flag.String("dir", "_output/failover", "folder for the components' logs (relative to the repository; emptied first)")
	tcp := flag.Bool("tcp", true, "also measure the TCP leg: real sockets in network namespaces, which needs root")
	nodes := flag.Bool("nodes", true, "run the node scenarios (placement, Required, node loss, not-ready hiccup) and the TCP leg")
	zone := flag.Bool("zone", true, "also run the zone loss: every node of one zone killed at once, in a second cluster of 3 + 1 + 1 nodes")
	pictures := flag.String("pictures-dir", "", "also write the SVG pictures into this folder (relative to the repository), e.g. docs/images")
	from := flag.String("from", "", "run nothing: draw the pictures from this JSON of an earlier run (relative to the repository)")
	flag.Parse()
	if *from != "" {
		if err := redraw(*from, *pictures); err != nil {
			fmt.Fprintln(os.Stderr, "failover:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *jsonPath, *dir, *pictures, *nodes, *tcp, *zone); err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, jsonPath, dir, pictures string, nodes, tcp, zone bool) error {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	jsonPath, dir, pictures = inRepo(root, jsonPath), inRepo(root, dir), inRepo(root, pictures)
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
	rep := &failover.Report{}
	if nodes {
		if rep, err = failover.Run(ctx, root, bins, opts, dir); err != nil {
			return err
		}
	}
	if zone {
		zopts := failover.MeasuredZoneLoss()
		zopts.Log = opts.Log
		zrep, err := failover.RunZoneLoss(ctx, root, bins, zopts, filepath.Join(dir, "zone-loss"))
		if err != nil {
			return fmt.Errorf("the zone loss: %w", err)
		}
		rep.Settings = zrep.Settings
		rep.Rows = append(rep.Rows, zrep.Rows...)
		rep.WallSeconds += zrep.WallSeconds
	}
	// etcd's data is of no use after the run; the logs stay for reading.
	for _, d := range []string{filepath.Join(dir, "etcd"), filepath.Join(dir, "zone-loss", "etcd")} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
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
	// The committed pictures (-pictures-dir) are replaced only by a run that turned out as
	// documented; the ones next to the JSON always.
	if len(rep.Problems()) > 0 && pictures != "" {
		fmt.Fprintf(os.Stderr, "not drawing into %s: the run did not turn out as documented\n", pictures)
		pictures = ""
	}
	drawn, err := writePictures(rep, filepath.Dir(jsonPath), pictures)
	if err != nil {
		return err
	}
	fmt.Println(rep.Table())
	fmt.Printf("Wall time %.0f s. Rows written to %s; component logs in %s; pictures: %s.\n", rep.WallSeconds, jsonPath, dir, strings.Join(drawn, ", "))
	if problems := rep.Problems(); len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "not as documented:", p)
		}
		return fmt.Errorf("%d scenario(s) did not turn out as documented", len(problems))
	}
	return nil
}

// redraw draws the pictures of the JSON at from, next to it and into pictures.
func redraw(from, pictures string) error {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	from, pictures = inRepo(root, from), inRepo(root, pictures)
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	rep, err := failover.ParseReport(data)
	if err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	drawn, err := writePictures(rep, filepath.Dir(from), pictures)
	if err != nil {
		return err
	}
	if len(drawn) == 0 {
		return fmt.Errorf("%s has no rows of a scenario with a picture (%s)", from, strings.Join(failover.PictureScenarios, ", "))
	}
	fmt.Printf("Pictures of %s: %s.\n", from, strings.Join(drawn, ", "))
	return nil
}

// writePictures draws every scenario of the report that has a picture into each
// folder given (an empty one is skipped) and returns the files written.
func writePictures(rep *failover.Report, dirs ...string) ([]string, error) {
	pics, err := rep.Pictures()
	if err != nil {
		return nil, err
	}
	var written []string
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		for _, p := range pics {
			path := filepath.Join(d, failover.PictureFile(p.Scenario))
			if err := os.WriteFile(path, p.SVG, 0o644); err != nil {
				return nil, err
			}
			written = append(written, path)
		}
	}
	return written, nil
}

// inRepo is path relative to the repository's root, unless absolute or empty.
func inRepo(root, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(root, path)
}
