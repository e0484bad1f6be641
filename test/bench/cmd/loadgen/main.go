// Command loadgen sends AdmissionReviews to a running webhook over TLS with keep-alive
// and prints throughput and latency percentiles:
//
//	go run ./test/bench/cmd/loadgen -url https://127.0.0.1:9443 -ca ca.crt -c 8 -d 10s
//	go run ./test/bench/cmd/loadgen -url ... -ca ... -rate 2000 -n 20000 -kind pod
//
// The requests are a Pod CREATE (as the API server sends it after DefaultTolerationSeconds)
// and a Deployment CREATE in -namespace, which must be opted in for the webhook to work;
// -kind large sends the ~1 MiB Pod of 1000 environment variables instead, and -kind
// update a Deployment UPDATE re-applying the manifest over the injected Deployment (whose
// CREATE it first sends to -url, which must then be ha-injector).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ha-injector/ha-injector/test/bench"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
)

func main() {
	url := flag.String("url", "https://127.0.0.1:9443", "the webhook server")
	caFile := flag.String("ca", "", "PEM file of the CA that signed the server's certificate (required)")
	conns := flag.Int("c", 8, "concurrent connections, one request in flight each")
	duration := flag.Duration("d", 10*time.Second, "how long to send (0: until -n requests)")
	requests := flag.Int("n", 0, "stop after this many requests (0: until -d)")
	rate := flag.Float64("rate", 0, "fixed requests per second across all connections (0: as fast as answered)")
	kind := flag.String("kind", "both", "pod, deployment, both, large (a ~1 MiB Pod) or update (a Deployment UPDATE; -url must be ha-injector)")
	ns := flag.String("namespace", "bench", "namespace of the requests")
	flag.Parse()
	if err := run(*url, *caFile, *conns, *duration, *requests, *rate, *kind, *ns); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
}

func run(url, caFile string, conns int, duration time.Duration, requests int, rate float64, kind, ns string) error {
	if caFile == "" {
		return fmt.Errorf("-ca is required")
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	mix, err := reviews(ctx, kind, url, ca, ns)
	if err != nil {
		return err
	}
	res, err := loadgen.Run(ctx, loadgen.Config{BaseURL: url, CA: ca, Concurrency: conns, Duration: duration, Requests: requests, Rate: rate, Mix: mix})
	if err != nil {
		return err
	}
	fmt.Printf("requests %d, errors %d, %.1fs, %.0f req/s\n", res.Sent, res.Errors, res.Elapsed.Seconds(), res.Throughput())
	for _, p := range []float64{50, 90, 99, 99.9} {
		fmt.Printf("p%-5g %s\n", p, res.Percentile(p))
	}
	if res.FirstErr != nil {
		fmt.Printf("first error: %v\n", res.FirstErr)
	}
	return nil
}

// reviews are the AdmissionReviews of -kind.
func reviews(ctx context.Context, kind, url string, ca []byte, ns string) ([]loadgen.Request, error) {
	switch kind {
	case "large":
		r, err := bench.LargePodReview(ns)
		return []loadgen.Request{r}, err
	case "update":
		hc, err := loadgen.NewClient(ca, 1)
		if err != nil {
			return nil, err
		}
		defer hc.CloseIdleConnections()
		r, err := bench.DeploymentUpdateReview(ctx, hc, url, ns)
		return []loadgen.Request{r}, err
	}
	mix, err := bench.Reviews(ns)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "pod":
		return mix[:1], nil
	case "deployment":
		return mix[1:], nil
	case "both":
		return mix, nil
	}
	return nil, fmt.Errorf("-kind must be pod, deployment, both, large or update, not %q", kind)
}
