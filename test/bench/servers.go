package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/test/harness/proc"
)

// server is a running webhook server: its process and its HTTPS base URL.
type server struct {
	proc    *proc.Process
	url     string
	addr    string
	probe   string
	metrics string
	pprof   string
}

// servers starts and stops the benchmark's processes.
type servers struct {
	bin, work, kubeconfig, certDir string
	ca                             []byte
	// chart is what the chart gives serve by default (GOMEMLIMIT, the
	// large-request budget); every serve here runs with it.
	chart chartLimits
	all   []*proc.Process
}

// freeAddrs returns n distinct 127.0.0.1:port addresses that were free a moment ago.
func freeAddrs(n int) ([]string, error) {
	ports, err := proc.FreePorts(n)
	if err != nil {
		return nil, err
	}
	addrs := make([]string, n)
	for i, p := range ports {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return addrs, nil
}

// startOurs starts `ha-injector serve` as the chart runs it (default log level, the
// chart's GOMEMLIMIT and large-request budget), with its probes and metrics on
// 127.0.0.1, and waits until it is ready.
func (s *servers) startOurs(name string) (*server, error) {
	addrs, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addrs[0])
	args := []string{"serve",
		"--kubeconfig=" + s.kubeconfig,
		"--webhook-host=" + host, "--webhook-port=" + port,
		"--webhook-cert-path=" + s.certDir,
		"--health-probe-bind-address=" + addrs[1],
		"--metrics-bind-address=" + addrs[2],
		// The benchmarks read serve's Go runtime metrics without a token.
		"--metrics-secure=false",
		"--pprof-bind-address=" + addrs[3],
		"--graceful-shutdown-timeout=10s",
		// Shorter than the chart's 5s so the resilience runs stay short; the
		// drain is the same.
		"--shutdown-delay=2s",
	}
	p, err := proc.Start(name, filepath.Join(s.work, name+".log"), filepath.Join(s.bin, "ha-injector"), s.chart.env, append(args, s.chart.args...)...)
	if err != nil {
		return nil, err
	}
	s.all = append(s.all, p)
	srv := &server{proc: p, url: "https://" + addrs[0], addr: addrs[0], probe: "http://" + addrs[1], metrics: "http://" + addrs[2] + "/metrics", pprof: "http://" + addrs[3]}
	return srv, proc.WaitHTTP(context.Background(), nil, srv.probe+"/readyz", 60*time.Second, p.Alive)
}

// startNoop starts the baseline server with the same certificate.
func (s *servers) startNoop() (*server, error) {
	addrs, err := freeAddrs(1)
	if err != nil {
		return nil, err
	}
	addr := addrs[0]
	host, port, _ := net.SplitHostPort(addr)
	p, err := proc.Start("noop", filepath.Join(s.work, "noop.log"), filepath.Join(s.bin, "noop"), nil,
		"--webhook-host="+host, "--webhook-port="+port, "--webhook-cert-path="+s.certDir)
	if err != nil {
		return nil, err
	}
	s.all = append(s.all, p)
	return &server{proc: p, url: "https://" + addr, addr: addr}, waitTLS(p, addr, s.ca, 30*time.Second)
}

func (s *servers) stopAll() {
	for _, p := range s.all {
		_ = p.Stop(15 * time.Second)
	}
}

// resilience sends load through a local load balancer to two replicas; one gets
// SIGTERM mid-run, then the survivor's certificate is rotated mid-run. Every request
// must be answered.
func (s *servers) resilience(ctx context.Context, sizes Sizes, step func(string, ...any), first *server, ca *certs.CA) ([]Row, error) {
	second, err := s.startOurs("serve-2")
	if err != nil {
		return nil, err
	}
	lb, err := newBalancer(first.addr, second.addr)
	if err != nil {
		return nil, err
	}
	defer lb.close()
	mix, err := Reviews(benchNamespace)
	if err != nil {
		return nil, err
	}
	load := func(during func()) (loadgen.Result, error) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(sizes.ResilienceTime / 3)
			during()
		}()
		res, err := loadgen.Run(ctx, loadgen.Config{BaseURL: "https://" + lb.addr(), CA: s.ca, Concurrency: sizes.Concurrency, Duration: sizes.ResilienceTime, Mix: mix})
		<-done
		return res, err
	}

	step("Resilience: two replicas behind a load balancer, one gets SIGTERM mid-run")
	var stopErr error
	term, err := load(func() { stopErr = stopGracefully(first.proc, 30*time.Second) })
	if err != nil {
		return nil, err
	}
	if stopErr != nil {
		return nil, stopErr
	}
	step("Resilience: the serving certificate is rotated on disk mid-run")
	var newSerial fmt.Stringer
	var rotateErr error
	rot, err := load(func() {
		kp, serial, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
		if err == nil {
			err = kp.WriteFiles(s.certDir, "tls.crt", "tls.key")
		}
		newSerial, rotateErr = serial, err
	})
	if err != nil {
		return nil, err
	}
	if rotateErr != nil {
		return nil, rotateErr
	}
	served, err := servedSerial(second.addr, s.ca)
	if err != nil {
		return nil, err
	}
	rotated := served.String() == newSerial.String()
	termRow := row("resilience, one of two replicas gets SIGTERM mid-run", "failed requests", "count", float64(term.Errors), nil).target("0", term.Errors == 0)
	rotRow := row("resilience, certificate rotated mid-run", "failed requests", "count", float64(rot.Errors), nil).target("0 and the new certificate served", rot.Errors == 0 && rotated)
	rows := []Row{
		row("resilience, one of two replicas gets SIGTERM mid-run", "requests answered", "count", float64(term.Sent-term.Errors), nil),
		termRow,
		row("resilience, certificate rotated mid-run", "requests answered", "count", float64(rot.Sent-rot.Errors), nil),
		rotRow,
	}
	if term.FirstErr != nil {
		step("first failure across SIGTERM: %v", term.FirstErr)
	}
	if rot.FirstErr != nil {
		step("first failure across the rotation: %v", rot.FirstErr)
	}
	return rows, nil
}

// profile records a CPU profile of srv while the admission mix runs against it as fast
// as it answers, and writes it to path (read it with go tool pprof).
func (s *servers) profile(ctx context.Context, srv *server, concurrency int, seconds int, path string) error {
	mix, err := Reviews(benchNamespace)
	if err != nil {
		return err
	}
	loadDone := make(chan error, 1)
	go func() {
		_, err := loadgen.Run(ctx, loadgen.Config{BaseURL: srv.url, CA: s.ca, Concurrency: concurrency, Duration: time.Duration(seconds+1) * time.Second, Mix: mix})
		loadDone <- err
	}()
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", srv.pprof, seconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: HTTP %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return <-loadDone
}
