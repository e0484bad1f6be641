package bench

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ha-injector/ha-injector/test/harness/proc"
)

// stopGracefully sends SIGTERM and fails unless p exits 0 within timeout: a replica
// going away must do so cleanly.
func stopGracefully(p *proc.Process, timeout time.Duration) error {
	if err := p.Stop(timeout); err != nil {
		return err
	}
	if _, err := p.Exited(); err != nil {
		return fmt.Errorf("%s exited with %v after SIGTERM", p.Name, err)
	}
	return nil
}

// procRSS is the resident set size of p, from /proc.
func procRSS(p *proc.Process) (int64, error) { return procStatus(p, "VmRSS") }

// procPeakRSS is p's peak resident set size (VmHWM), in bytes.
func procPeakRSS(p *proc.Process) (int64, error) { return procStatus(p, "VmHWM") }

// procStatus reads a field in kB of /proc/PID/status, in bytes.
func procStatus(p *proc.Process, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc status", field)
}

// waitTLS waits (bounded) until addr completes a TLS handshake trusted by ca, or the
// process exits.
func waitTLS(p *proc.Process, addr string, ca []byte, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err := p.Alive(); err != nil {
			return err
		}
		if _, err := servedSerial(addr, ca); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s: no TLS on %s within %s", p.Name, addr, timeout)
}

// servedSerial is the serial number of the certificate addr serves.
func servedSerial(addr string, ca []byte) (*big.Int, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// Go runtime metrics of serve, from its Prometheus endpoint.
const (
	heapInUseMetric = "go_memstats_heap_inuse_bytes"
	// allocatedMetric is the Go runtime's cumulative count of bytes allocated on the
	// heap (runtime.MemStats.TotalAlloc): it only grows, whatever the GC frees.
	allocatedMetric = "go_memstats_alloc_bytes_total"
)

// goMetric reads the unlabelled metric name from a Prometheus endpoint.
func goMetric(metricsURL, name string) (float64, error) {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in the metrics", name)
}

// balancer spreads new TCP connections over backends in turn, skipping one that refuses
// the connection, like a Service's endpoints from which a terminating pod is removed.
type balancer struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint32
	wg       sync.WaitGroup
}

func newBalancer(backends ...string) (*balancer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &balancer{ln: ln, backends: backends}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

func (b *balancer) addr() string { return b.ln.Addr().String() }

func (b *balancer) close() {
	b.ln.Close()
	b.wg.Wait()
}

func (b *balancer) serve() {
	defer b.wg.Done()
	for {
		conn, err := b.ln.Accept()
		if err != nil {
			return
		}
		go b.handle(conn)
	}
}

func (b *balancer) handle(client net.Conn) {
	defer client.Close()
	start := int(b.next.Add(1))
	for i := range b.backends {
		server, err := net.DialTimeout("tcp", b.backends[(start+i)%len(b.backends)], time.Second)
		if err != nil {
			continue
		}
		defer server.Close()
		done := make(chan struct{}, 2)
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			done <- struct{}{}
		}
		go pipe(server, client)
		go pipe(client, server)
		<-done
		<-done
		return
	}
}

// apiServerPID finds the kube-apiserver process serving on port (envtest starts it
// with --secure-port=PORT and keeps its process to itself), from /proc.
func apiServerPID(port string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if filepath.Base(args[0]) == "kube-apiserver" && slices.Contains(args[1:], "--secure-port="+port) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no kube-apiserver process with --secure-port=%s", port)
}
