//go:build node

package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/test/failover"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

// ScenarioTCPDeadPeerPods is the "scenario" of the rows in _output/node.json.
const ScenarioTCPDeadPeerPods = "tcp-dead-peer-pods"

// tcpCap is how long the clients are watched after the server's network is cut: past
// the latest the kernel's model allows for tcp_retries2 = 9 (204.6 s, and one more
// backoff), well short of 924.6 s for the default 15, which is reported as still open.
const tcpCap = 6 * time.Minute

// tcpDeadPeer measures the TCP leg between real pods: a client in an opted-in namespace
// and one in a namespace that is not, each writing to a server pod; the server's network
// is cut on the host (the host side of its veth taken down); each client's time to a
// failed write is read from its log. The rows go to _output/node.json.
func tcpDeadPeer(ctx context.Context, t *testing.T, n *Node) {
	server := plainNamespace(ctx, t, n, "tcp-server")
	srv := runPod(ctx, t, n, server, "server", []string{"serve", "7000"})
	iflink := ""
	waitLog(ctx, t, n, srv, "server", func(line string) bool {
		v, ok := strings.CutPrefix(line, "iflink=")
		iflink = v
		return ok
	})
	index, err := strconv.Atoi(iflink)
	require.NoError(t, err, "the server's iflink")
	veth, err := net.InterfaceByIndex(index)
	require.NoError(t, err, "the host side of the server's veth")

	target := net.JoinHostPort(srv.Status.PodIP, "7000")
	clients := map[bool]*corev1.Pod{
		true:  runPod(ctx, t, n, namespace(ctx, t, n, "tcp-opted-in", nil), "client", append([]string{"send", target}, probed...)),
		false: runPod(ctx, t, n, plainNamespace(ctx, t, n, "tcp-not-opted-in"), "client", append([]string{"send", target}, probed...)),
	}
	values := map[bool]map[string]string{}
	for optedIn, c := range clients {
		waitLog(ctx, t, n, c, "client", func(line string) bool { return line == "connected" })
		values[optedIn] = readProbeLog(ctx, t, n, c)
	}

	time.Sleep(2 * time.Second) // data flowing on both connections
	out, err := exec.Command("ip", "link", "set", "dev", veth.Name, "down").CombinedOutput()
	require.NoError(t, err, "ip link set dev %s down: %s", veth.Name, out)
	cut := time.Now()
	t.Logf("the server's network cut at %s (%s down); watching the clients for %s", cut.Format(time.RFC3339), veth.Name, tcpCap)

	failed := map[bool]*logLine{}
	for deadline := cut.Add(tcpCap); time.Now().Before(deadline) && len(failed) < len(clients); time.Sleep(time.Second) {
		for optedIn, c := range clients {
			if failed[optedIn] == nil {
				if f := findLog(n, c, "client", func(line string) bool { return strings.HasPrefix(line, "error: ") }); f != nil {
					failed[optedIn] = f
				}
			}
		}
		require.NoError(t, ctx.Err())
	}

	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	var rows []failover.TCPRow
	for _, optedIn := range []bool{true, false} {
		// As test/failover judges a sending connection.
		model, latest, how, err := failover.ModelFor(failover.ConnSending, values[optedIn])
		require.NoError(t, err)
		row := failover.TCPRow{
			Scenario: ScenarioTCPDeadPeerPods, Connection: failover.ConnSending, OptedIn: optedIn,
			Title:        fmt.Sprintf("a pod writing to a pod whose network is cut (namespace %s)", clients[optedIn].Namespace),
			Sysctls:      values[optedIn],
			ModelSeconds: model.Seconds(),
			Model:        how,
			Kernel:       strings.TrimSpace(string(kernel)),
		}
		if f := failed[optedIn]; f != nil {
			after := f.time.Sub(cut).Seconds()
			row.FailedAfterSeconds, row.Error = &after, strings.TrimPrefix(f.text, "error: ")
			// The write fails when the retransmissions time out, with ETIMEDOUT, or with the
			// last soft error the socket saw instead (tcp_write_err in net/ipv4/tcp_timer.c):
			// here EHOSTUNREACH, once the server's neighbour entry has failed behind the
			// veth that is down.
			row.Passed = after >= model.Seconds()-1 && after <= latest.Seconds() &&
				(strings.Contains(f.text, "timed out") || strings.Contains(f.text, "no route to host"))
			row.Outcome = fmt.Sprintf("failed after %.1f s (the model: %.1f s)", after, model.Seconds())
		} else {
			capped := tcpCap.Seconds()
			row.StillOpenAfterSeconds = &capped
			row.Passed = latest > tcpCap
			row.Outcome = fmt.Sprintf("still open after %.0f s (the model: %.1f s)", capped, model.Seconds())
		}
		t.Logf("opted in %t: %s; %v", optedIn, row.Outcome, values[optedIn])
		assert.True(t, row.Passed, "opted in %t: %s", optedIn, row.Outcome)
		rows = append(rows, row)
	}
	assert.Equal(t, "9", values[true]["net.ipv4.tcp_retries2"])
	assert.Equal(t, "15", values[false]["net.ipv4.tcp_retries2"])
	writeRows(t, rows)
}

func writeRows(t *testing.T, rows []failover.TCPRow) {
	t.Helper()
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	data, err := json.MarshalIndent(rows, "", "  ")
	require.NoError(t, err)
	path := filepath.Join(root, "_output", "node.json")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, append(data, '\n'), 0o644))
	t.Logf("rows written to %s", path)
}

// plainNamespace creates a namespace that does not opt in.
func plainNamespace(ctx context.Context, t *testing.T, n *Node, name string) string {
	t.Helper()
	return createNamespace(ctx, t, n, name, nil).Name
}

// runPod runs the probe with args as pod name in ns on the node (never restarted) and
// returns it once it runs.
func runPod(ctx context.Context, t *testing.T, n *Node, ns, name string, args []string) *corev1.Pod {
	t.Helper()
	return runProbe(ctx, t, n, ns, func(p *corev1.Pod) {
		p.Name, p.Labels = name, map[string]string{"app": name}
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
		p.Spec.Containers[0].Name, p.Spec.Containers[0].Args = name, args
	})
}

// findLog returns the first line of a container's log that match accepts, or nil.
func findLog(n *Node, pod *corev1.Pod, container string, match func(string) bool) *logLine {
	for _, l := range logLines(n.containerLog(pod, container)) {
		if match(l.text) {
			return &l
		}
	}
	return nil
}

// waitLog waits (bounded: 30 s) for a line of a container's log that match accepts.
func waitLog(ctx context.Context, t *testing.T, n *Node, pod *corev1.Pod, container string, match func(string) bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if findLog(n, pod, container, match) != nil {
			return
		}
		require.True(t, time.Now().Before(deadline) && ctx.Err() == nil, "%s/%s: the expected log line within 30 s", pod.Namespace, pod.Name)
	}
}
