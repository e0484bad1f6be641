package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// The TCP leg: how long a client's connection to a peer that died stays open, measured
// with real kernel sockets in a pair of network namespaces (netns.go), with the
// kernel's defaults (a pod not opted in) and with the sysctls the engine injects.

// ScenarioTCPDeadPeer is the "scenario" of the TCP rows.
const ScenarioTCPDeadPeer = "tcp-dead-peer"

// The two kinds of connection measured.
const (
	// ConnIdle has SO_KEEPALIVE on and nothing in flight: the keepalive probes decide.
	ConnIdle = "idle"
	// ConnSending has unacknowledged data in flight and no keepalive:
	// tcp_retries2 decides.
	ConnSending = "sending"
)

// The sysctls the measurement reads in each client namespace.
const (
	sysctlKeepaliveTime   = "net.ipv4.tcp_keepalive_time"
	sysctlKeepaliveIntvl  = "net.ipv4.tcp_keepalive_intvl"
	sysctlKeepaliveProbes = "net.ipv4.tcp_keepalive_probes"
	sysctlRetries2        = "net.ipv4.tcp_retries2"
)

var tcpSysctls = []string{sysctlKeepaliveTime, sysctlKeepaliveIntvl, sysctlKeepaliveProbes, sysctlRetries2}

// TCPMeasuredCap is how long `make failover` waits for a connection to fail. The
// opted-in connections fail well within it (3 to 4 minutes by the kernel's model);
// the kernel's defaults take 15 minutes to 2 hours 11 minutes, so those are reported
// as still open after it: a lower bound, next to the model's figure.
const TCPMeasuredCap = 5 * time.Minute

// The kernel's retransmission timer bounds (include/net/tcp.h) that tcp_model_timeout
// uses: the RTO starts at TCP_RTO_MIN and doubles up to TCP_RTO_MAX. They are also the
// defaults of net.ipv4.tcp_rto_min_us and tcp_rto_max_ms on kernels that have them.
const (
	tcpRTOMin = 200 * time.Millisecond
	tcpRTOMax = 120 * time.Second
)

// RetransmitTimeout is the kernel's own figure for how long a connection with
// unacknowledged data retransmits before it fails with ETIMEDOUT:
// tcp_model_timeout(sk, tcp_retries2, TCP_RTO_MIN) in net/ipv4/tcp_timer.c, which
// retransmits_timed_out compares with the time since the first unacknowledged
// transmission. The RTO doubles from 200 ms while that stays under 120 s
// (ilog2(120 s / 200 ms) = 9 doublings), then every retransmission waits 120 s. On a
// path whose RTT is not negligible the real RTO starts higher, and the connection
// fails at the first timer expiry past this figure.
func RetransmitTimeout(retries2 int) time.Duration {
	if retries2 < 0 {
		retries2 = 0
	}
	threshold := bits.Len64(uint64(tcpRTOMax/tcpRTOMin)) - 1 // ilog2
	if retries2 <= threshold {
		return time.Duration((2<<retries2)-1) * tcpRTOMin
	}
	return time.Duration((2<<threshold)-1)*tcpRTOMin + time.Duration(retries2-threshold)*tcpRTOMax
}

// KeepaliveTimeout is when an idle connection with SO_KEEPALIVE to a silent peer
// fails, counted from the last packet received (tcp_keepalive_timer in
// net/ipv4/tcp_timer.c): the first probe after tcp_keepalive_time, then one every
// tcp_keepalive_intvl, and the error once tcp_keepalive_probes have gone unanswered.
func KeepaliveTimeout(timeSeconds, intvlSeconds, probes int) time.Duration {
	return time.Duration(timeSeconds+probes*intvlSeconds) * time.Second
}

// TCPRow is one TCP measurement: a client connection whose peer died.
type TCPRow struct {
	Scenario   string `json:"scenario"`
	Title      string `json:"title"`
	Connection string `json:"connection"`
	// OptedIn: the client's namespace has the sysctls the engine injects for the policy;
	// otherwise a fresh namespace's, which are the kernel's defaults.
	OptedIn bool `json:"optedIn"`
	// Passed says the connection behaved as the model says: failed with ETIMEDOUT
	// close to the model's figure, or, when the model's figure is beyond the cap,
	// still open at the cap.
	Passed  bool   `json:"passed"`
	Outcome string `json:"outcome"`
	// Sysctls are the client namespace's values during the measurement.
	Sysctls map[string]string `json:"sysctls"`
	// SetBy are the commands that set them (the engine's init container command with
	// /ha-sysctl mapped to the built binary; the pod securityContext's sysctls).
	SetBy []string `json:"setBy,omitempty"`
	// FailedAfterSeconds is when a read on the connection returned an error (null: it
	// did not within the cap), counted from the last packet received from the peer
	// (idle) or from the write of the data never acknowledged (sending).
	FailedAfterSeconds *float64 `json:"failedAfterSeconds"`
	// Error is what that read returned.
	Error string `json:"error,omitempty"`
	// StillOpenAfterSeconds is the cap, when the connection was still open then.
	StillOpenAfterSeconds *float64 `json:"stillOpenAfterSeconds,omitempty"`
	// ModelSeconds is the kernel's own figure for these sysctls (KeepaliveTimeout or
	// RetransmitTimeout), and Model how it is computed.
	ModelSeconds float64 `json:"modelSeconds"`
	Model        string  `json:"model"`
	// Kernel is the release the measurement ran on (uname -r).
	Kernel string `json:"kernel"`
}

// TCPOptions choose what MeasureTCP does.
type TCPOptions struct {
	// Policy is the HAPolicy whose injected sysctls the opted-in client gets.
	Policy *v1alpha1.HAPolicy
	// Cap bounds the wait for each connection to fail.
	Cap time.Duration
	// HASysctl is the path of ha-sysctl built from cmd/ha-sysctl: the injected init
	// container's /ha-sysctl.
	HASysctl string
	// Log reports progress; nil is silent.
	Log func(format string, args ...any)
}

// sysctlImage is the image the engine is told the installation runs ha-sysctl from.
// Nothing runs it here: its /ha-sysctl is TCPOptions.HASysctl.
const sysctlImage = "ha-injector"

// MeasureTCP measures the four connections concurrently, each in a namespace pair of
// its own: idle and sending, with the kernel's defaults and with the sysctls the
// engine injects into workload (a Deployment of an opted-in namespace) for the policy.
// It returns one row per connection, in a fixed order; a measurement the harness could
// not make is a row that did not pass, saying why.
func MeasureTCP(ctx context.Context, workload *appsv1.Deployment, opts TCPOptions) []TCPRow {
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	type tcpCase struct {
		conn    string
		optedIn bool
	}
	cases := []tcpCase{{ConnIdle, false}, {ConnIdle, true}, {ConnSending, false}, {ConnSending, true}}
	rows := make([]TCPRow, len(cases))
	for i, c := range cases {
		rows[i] = TCPRow{Scenario: ScenarioTCPDeadPeer, Connection: c.conn, OptedIn: c.optedIn, Kernel: kernelRelease()}
		rows[i].Title = fmt.Sprintf("TCP, %s connection, peer dead", c.conn)
	}
	fail := func(err error) []TCPRow {
		for i := range rows {
			rows[i].Outcome = "not measured: " + err.Error()
		}
		return rows
	}
	if err := canUseNetns(); err != nil {
		return fail(err)
	}
	inj, err := injectedSysctls(opts.Policy, workload)
	if err != nil {
		return fail(err)
	}
	if _, err := os.Stat(opts.HASysctl); err != nil {
		return fail(fmt.Errorf("ha-sysctl: %w", err))
	}
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Go(func() {
			m := &tcpMeasurement{row: &rows[i], cap: opts.Cap, logf: logf}
			if c.optedIn {
				m.apply = inj.commands(opts.HASysctl)
			}
			m.run(ctx)
		})
	}
	wg.Wait()
	return rows
}

// injection is what the engine injects for the sysctls.
type injection struct {
	// initCommand is the ha-sysctl init container's command.
	initCommand []string
	// podSysctls are the pod securityContext's sysctls, NAME=VALUE.
	podSysctls []string
}

// injectedSysctls runs the engine (policies.Mutate, as the webhook does) on the
// workload in an opted-in namespace and returns what it injected for the sysctls.
func injectedSysctls(policy *v1alpha1.HAPolicy, workload *appsv1.Deployment) (injection, error) {
	if policy == nil {
		return injection{}, errors.New("no policy")
	}
	m, err := policies.Mutate(policies.Context{
		Policy:      policy,
		Namespace:   policies.Namespace{Name: OptedIn, Labels: map[string]string{policies.PolicyLabel: policy.Name}},
		SysctlImage: sysctlImage,
	}, workload)
	if err != nil {
		return injection{}, err
	}
	d, ok := m.Object.(*appsv1.Deployment)
	if !ok {
		return injection{}, fmt.Errorf("the engine returned a %T", m.Object)
	}
	var inj injection
	spec := d.Spec.Template.Spec
	for _, c := range spec.InitContainers {
		if c.Name == policies.SysctlContainerName {
			inj.initCommand = c.Command
		}
	}
	if spec.SecurityContext != nil {
		for _, s := range spec.SecurityContext.Sysctls {
			inj.podSysctls = append(inj.podSysctls, s.Name+"="+s.Value)
		}
	}
	if len(inj.initCommand) == 0 && len(inj.podSysctls) == 0 {
		return injection{}, fmt.Errorf("the engine injected no sysctls into %s (decisions: %v)", workload.Name, m.Decisions)
	}
	if len(inj.initCommand) > 0 && inj.initCommand[0] != "/ha-sysctl" {
		return injection{}, fmt.Errorf("the %s init container runs %q, not /ha-sysctl", policies.SysctlContainerName, inj.initCommand)
	}
	return inj, nil
}

// commands are the command lines that give a client namespace the injected sysctls:
// the init container's command as injected, /ha-sysctl being the built binary, and the
// securityContext's sysctls, which the kubelet's runtime writes, through the same
// binary with --strict.
func (inj injection) commands(haSysctl string) [][]string {
	var out [][]string
	if len(inj.podSysctls) > 0 {
		out = append(out, append([]string{haSysctl, "--strict"}, inj.podSysctls...))
	}
	if len(inj.initCommand) > 0 {
		out = append(out, append([]string{haSysctl}, inj.initCommand[1:]...))
	}
	return out
}

// tcpMeasurement is one connection's measurement, filling row.
type tcpMeasurement struct {
	row  *TCPRow
	cap  time.Duration
	logf func(string, ...any)
	// apply are the commands run in the client namespace before connecting (none:
	// the kernel's defaults).
	apply [][]string
}

func (m *tcpMeasurement) run(ctx context.Context) {
	row := m.row
	who := "kernel defaults"
	if row.OptedIn {
		who = "opted in"
	}
	err := m.measure(ctx)
	if err != nil {
		row.Passed = false
		row.Outcome = "not measured: " + err.Error()
	}
	m.logf("TCP %s connection (%s): %s", row.Connection, who, row.Outcome)
}

func (m *tcpMeasurement) measure(ctx context.Context) (err error) {
	row := m.row
	tag := row.Connection
	if row.OptedIn {
		tag += "-in"
	} else {
		tag += "-out"
	}
	pair, err := newNetnsPair(ctx, tag)
	if err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		closed  bool
		closers []io.Closer
		peers   sync.WaitGroup
	)
	// keep registers a socket for the cleanup, or closes it if that has run.
	keep := func(c io.Closer) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			_ = c.Close()
			return false
		}
		closers = append(closers, c)
		return true
	}
	defer func() {
		// Sockets first: they keep their namespace alive.
		mu.Lock()
		closed = true
		for _, c := range slices.Backward(closers) {
			_ = c.Close()
		}
		mu.Unlock()
		peers.Wait()
		err = errors.Join(err, pair.Close())
	}()

	for _, cmd := range m.apply {
		out, err := runIn(ctx, pair.client, cmd[0], cmd[1:]...)
		if err != nil {
			return err
		}
		row.SetBy = append(row.SetBy, strings.Join(append([]string{"ha-sysctl"}, cmd[1:]...), " ")+" → "+strings.Join(strings.Fields(out), " "))
	}
	if row.Sysctls, err = readSysctls(ctx, pair.client, tcpSysctls); err != nil {
		return err
	}
	model, latest, how, err := ModelFor(row.Connection, row.Sysctls)
	if err != nil {
		return err
	}
	row.ModelSeconds, row.Model = round(model.Seconds()), how

	// The peer: an echo server in the server namespace.
	var ln net.Listener
	if err := inNetns(pair.server, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(serverAddr, "0"))
		return err
	}); err != nil {
		return err
	}
	keep(ln)
	peers.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Closed by the cleanup: once dead, the peer may never hear the client close.
			if keep(c) {
				peers.Go(func() { _, _ = io.Copy(c, c) })
			}
		}
	})

	// The client, in its namespace. KeepAlive -1: Go's dialer would otherwise turn
	// on keepalive with its own 15 s timings (TCP_KEEPIDLE, TCP_KEEPINTVL), which win
	// over the namespace's sysctls; the measurement is of the sysctls.
	var conn *net.TCPConn
	if err := inNetns(pair.client, func() error {
		d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
		c, err := d.DialContext(ctx, "tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		conn = c.(*net.TCPConn)
		return nil
	}); err != nil {
		return err
	}
	keep(conn)
	if row.Connection == ConnIdle {
		if err := setsockopt(conn, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1); err != nil {
			return err
		}
	}
	if err := checkSocket(conn, row); err != nil {
		return err
	}

	// One exchange, so that both ends are established and the RTT measured.
	if _, err := conn.Write([]byte("ping")); err != nil {
		return err
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := io.ReadFull(conn, make([]byte, 4)); err != nil {
		return fmt.Errorf("the echo before the peer died: %w", err)
	}
	// The idle connection's clock starts at the last packet received, as the
	// keepalive timer's does.
	start := time.Now()
	if err := pair.killPeer(ctx); err != nil {
		return err
	}
	if row.Connection == ConnSending {
		start = time.Now()
		if _, err := conn.Write([]byte("data the dead peer never acknowledges")); err != nil {
			return err
		}
	}
	if err := conn.SetReadDeadline(start.Add(m.cap)); err != nil {
		return err
	}
	// The read returns when the kernel gives up on the connection, or at the cap.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	_, readErr := conn.Read(make([]byte, 64))
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	m.judge(readErr, elapsed, model, latest)
	return nil
}

// judge fills the row's outcome from what the read returned after elapsed: a pass is
// ETIMEDOUT between the model's time and latest, or still open at the cap when the
// model's time is beyond it.
func (m *tcpMeasurement) judge(readErr error, elapsed, model, latest time.Duration) {
	row := m.row
	modelText := fmt.Sprintf("the kernel's model: %s", formatSeconds(model))
	switch {
	case errors.Is(readErr, os.ErrDeadlineExceeded):
		row.StillOpenAfterSeconds = ptr.To(round(m.cap.Seconds()))
		row.Passed = model > m.cap
		row.Outcome = fmt.Sprintf("still open after %s (%s)", formatSeconds(m.cap), modelText)
		if !row.Passed {
			row.Outcome += ": it should have failed"
		}
	case readErr == nil:
		row.Outcome = "the dead peer answered: the read returned data"
	default:
		row.FailedAfterSeconds = ptr.To(round(elapsed.Seconds()))
		row.Error = readErr.Error()
		timedOut := errors.Is(readErr, syscall.ETIMEDOUT)
		// Not before the model's time (less a second: the idle clock here starts just
		// after the last packet arrived, the kernel's a moment before).
		within := elapsed >= model-time.Second && elapsed <= latest
		row.Passed = timedOut && within
		row.Outcome = fmt.Sprintf("failed after %s with %q (%s)", formatSeconds(elapsed), readErr.Error(), modelText)
		if !timedOut {
			row.Outcome += ": not ETIMEDOUT"
		} else if !within {
			row.Outcome += ": not what the model says"
		}
	}
}

// ModelFor is the kernel's figure for the connection kind with these sysctls, the
// latest a connection may fail and still follow the kernel's logic, and how the figure
// is computed.
//
// Kernel timers are never early, but the timer wheel fires a long one up to an eighth
// of its length late (kernel/time/timer.c: 2 s granularity for timers of 16 s to 131 s
// at HZ 250), so an idle connection fails at the model's time plus up to an eighth.
// A sending one fails at the first retransmission timeout that finds the time since
// its first retransmission past the model's time (retransmits_timed_out). That first
// retransmission comes one RTO (or a tail loss probe and one RTO) after the write, and
// the real RTO is a little over 200 ms (200 ms plus the RTT, rounded up to a jiffy),
// so the check can miss the model's time by a hair and pass only one backoff later:
// its latest is the model's time plus an eighth plus the next backoff. Both get 2 s
// more for the reader's own wake-up.
func ModelFor(conn string, values map[string]string) (model, latest time.Duration, how string, err error) {
	ints := map[string]int{}
	for _, name := range tcpSysctls {
		v, err := strconv.Atoi(values[name])
		if err != nil {
			return 0, 0, "", fmt.Errorf("%s = %q: %w", name, values[name], err)
		}
		ints[name] = v
	}
	if conn == ConnIdle {
		t, i, p := ints[sysctlKeepaliveTime], ints[sysctlKeepaliveIntvl], ints[sysctlKeepaliveProbes]
		model = KeepaliveTimeout(t, i, p)
		return model, model + model/8 + 2*time.Second, fmt.Sprintf("tcp_keepalive_time + tcp_keepalive_probes × tcp_keepalive_intvl = %d + %d × %d s", t, p, i), nil
	}
	r := ints[sysctlRetries2]
	model = RetransmitTimeout(r)
	return model, model + model/8 + min(tcpRTOMin<<(r+1), tcpRTOMax) + 2*time.Second,
		fmt.Sprintf("tcp_model_timeout(tcp_retries2 = %d): RTO from 200 ms doubling up to 120 s", r), nil
}

// checkSocket makes sure the client socket carries no option of its own that would
// override the namespace's sysctls, and that it sees the namespace's keepalive values
// (getsockopt reports the sysctl when the socket sets none).
func checkSocket(conn *net.TCPConn, row *TCPRow) error {
	for _, o := range []struct {
		name  string
		opt   int
		value string
	}{
		{"TCP_KEEPIDLE", syscall.TCP_KEEPIDLE, row.Sysctls[sysctlKeepaliveTime]},
		{"TCP_KEEPINTVL", syscall.TCP_KEEPINTVL, row.Sysctls[sysctlKeepaliveIntvl]},
		{"TCP_KEEPCNT", syscall.TCP_KEEPCNT, row.Sysctls[sysctlKeepaliveProbes]},
		{"TCP_USER_TIMEOUT", tcpUserTimeout, "0"},
	} {
		got, err := getsockopt(conn, syscall.IPPROTO_TCP, o.opt)
		if err != nil {
			return fmt.Errorf("getsockopt %s: %w", o.name, err)
		}
		if strconv.Itoa(got) != o.value {
			return fmt.Errorf("the client socket has %s %d, not the namespace's %s", o.name, got, o.value)
		}
	}
	return nil
}

// tcpUserTimeout is TCP_USER_TIMEOUT (include/uapi/linux/tcp.h), which package syscall
// does not name.
const tcpUserTimeout = 18

func setsockopt(conn *net.TCPConn, level, opt, value int) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), level, opt, value) }); err != nil {
		return err
	}
	return serr
}

func getsockopt(conn *net.TCPConn, level, opt int) (int, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var value int
	var serr error
	if err := raw.Control(func(fd uintptr) { value, serr = syscall.GetsockoptInt(int(fd), level, opt) }); err != nil {
		return 0, err
	}
	return value, serr
}

func kernelRelease() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(data))
}

// formatSeconds writes a duration as seconds, with minutes when long.
func formatSeconds(d time.Duration) string {
	s := round(d.Seconds())
	if d >= 10*time.Minute {
		return fmt.Sprintf("%s s (%.0f min)", strconv.FormatFloat(s, 'f', -1, 64), d.Minutes())
	}
	return strconv.FormatFloat(s, 'f', -1, 64) + " s"
}

// BuildHASysctl builds cmd/ha-sysctl (standard library only, seconds) into dir and
// returns its path.
func BuildHASysctl(ctx context.Context, root, dir string) (string, error) {
	out := filepath.Join(dir, "ha-sysctl")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/ha-sysctl")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ha-sysctl: %w\n%s", err, msg)
	}
	return out, nil
}
