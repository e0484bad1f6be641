package failover

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/examples"
)

func TestRetransmitTimeoutIsTheKernelsModel(t *testing.T) {
	for _, tc := range []struct {
		retries2 int
		want     time.Duration
	}{
		// ha-injector's default: 1023 × 200 ms.
		{9, 204600 * time.Millisecond},
		// The kernel's default: 204.6 s, then 6 retransmissions 120 s apart.
		{15, 924600 * time.Millisecond},
		{3, 3 * time.Second},
		{0, 200 * time.Millisecond},
		// Past the doubling: each one more adds TCP_RTO_MAX.
		{10, 324600 * time.Millisecond},
	} {
		t.Run(fmt.Sprintf("tcp_retries2=%d", tc.retries2), func(t *testing.T) {
			assert.Equal(t, tc.want, RetransmitTimeout(tc.retries2))
		})
	}
}

func TestKeepaliveTimeoutIsTimePlusProbesIntervals(t *testing.T) {
	assert.Equal(t, 7875*time.Second, KeepaliveTimeout(7200, 75, 9), "the kernel's defaults")
	assert.Equal(t, 180*time.Second, KeepaliveTimeout(30, 30, 5), "ha-injector's default policy")
}

func TestTheDefaultPolicyInjectsWhatTheModelsAssume(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	workload, err := examples.WebServer(root)
	require.NoError(t, err)
	inj, err := injectedSysctls(v1alpha1.NewDefault(), workload)
	require.NoError(t, err)
	assert.Equal(t, "/ha-sysctl", inj.initCommand[0])
	var set []string
	for _, cmd := range inj.commands("/bin/ha-sysctl") {
		assert.Equal(t, "/bin/ha-sysctl", cmd[0])
		for _, arg := range cmd[1:] {
			if !strings.HasPrefix(arg, "--") {
				set = append(set, arg)
			}
		}
	}
	var want []string
	for name, value := range v1alpha1.DefaultSysctls() {
		want = append(want, name+"="+string(value))
	}
	assert.ElementsMatch(t, want, set, "every sysctl of the policy is set, once")
}

// shortTCPCap bounds the short measurement: the small values below fail well within
// it (3 s and 1.4 s by the models, 3.5 s at worst for the sending connection, see
// ModelFor) and the kernel's defaults (15 minutes and more) do not.
const shortTCPCap = 8 * time.Second

// TestTCPDeadPeerShort is the TCP leg of `make failover` with small sysctls: a policy
// whose values are 1 s keepalive time and interval, 2 probes and tcp_retries2 2, given
// to a fresh network namespace through the engine's injection and ha-sysctl, as in
// the measured version. It shows that the values take effect: with them both
// connections fail with ETIMEDOUT, not before the kernel's model says and within the
// cap, while the same connections with the kernel's defaults are still open at the cap.
func TestTCPDeadPeerShort(t *testing.T) {
	t.Parallel()
	if err := canUseNetns(); err != nil {
		t.Skipf("skipped: %v; the TCP leg needs real network namespaces", err)
	}
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	haSysctl, err := BuildHASysctl(ctx, root, t.TempDir())
	require.NoError(t, err)
	workload, err := examples.WebServer(root)
	require.NoError(t, err)
	policy := v1alpha1.NewDefault()
	small := map[string]string{sysctlKeepaliveTime: "1", sysctlKeepaliveIntvl: "1", sysctlKeepaliveProbes: "2", sysctlRetries2: "2"}
	policy.Spec.Sysctls.Values = map[string]v1alpha1.SysctlValue{}
	for name, value := range small {
		policy.Spec.Sysctls.Values[name] = v1alpha1.SysctlValue(value)
	}

	start := time.Now()
	rows := MeasureTCP(ctx, workload, TCPOptions{Policy: policy, Cap: shortTCPCap, HASysctl: haSysctl, Log: t.Logf})
	t.Logf("measured in %.1f s", time.Since(start).Seconds())
	require.Len(t, rows, 4)
	kernelDefaults := map[string]string{sysctlKeepaliveTime: "7200", sysctlKeepaliveIntvl: "75", sysctlKeepaliveProbes: "9", sysctlRetries2: "15"}
	for _, row := range rows {
		t.Run(fmt.Sprintf("%s, opted in %v", row.Connection, row.OptedIn), func(t *testing.T) {
			require.NotContains(t, row.Outcome, "not measured")
			assert.Equal(t, ScenarioTCPDeadPeer, row.Scenario)
			if !row.OptedIn {
				assert.Equal(t, kernelDefaults, row.Sysctls, "a fresh namespace has the kernel's defaults")
				assert.Nil(t, row.FailedAfterSeconds, "with the kernel's defaults the connection outlives the cap: %s", row.Outcome)
				assert.Equal(t, shortTCPCap.Seconds(), *row.StillOpenAfterSeconds)
				assert.True(t, row.Passed, row.Outcome)
				return
			}
			assert.Equal(t, small, row.Sysctls, "the injected commands set the policy's values")
			require.NotNil(t, row.FailedAfterSeconds, "with the policy's values the connection fails within the cap: %s", row.Outcome)
			assert.Nil(t, row.StillOpenAfterSeconds)
			assert.Contains(t, row.Error, "connection timed out", "ETIMEDOUT")
			if row.Connection == ConnIdle {
				assert.Equal(t, 3.0, row.ModelSeconds, "1 + 2 × 1 s")
			} else {
				assert.Equal(t, 1.4, row.ModelSeconds, "(2 << 2) - 1 = 7 RTOs of 200 ms")
			}
			// Generous: the kernel cannot give up before its model's time, and does
			// so well before the cap.
			assert.GreaterOrEqual(t, *row.FailedAfterSeconds, 0.8*row.ModelSeconds)
			assert.Less(t, *row.FailedAfterSeconds, shortTCPCap.Seconds())
		})
	}

	// Every namespace this process made is gone.
	entries, err := os.ReadDir("/run/netns")
	if !os.IsNotExist(err) {
		require.NoError(t, err)
	}
	prefix := fmt.Sprintf("ha-failover-%d-", os.Getpid())
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), prefix), "network namespace %s left behind", e.Name())
	}
}

func TestJudgeFollowsTheKernelsLogic(t *testing.T) {
	policy := map[string]string{sysctlKeepaliveTime: "30", sysctlKeepaliveIntvl: "30", sysctlKeepaliveProbes: "5", sysctlRetries2: "9"}
	kernel := map[string]string{sysctlKeepaliveTime: "7200", sysctlKeepaliveIntvl: "75", sysctlKeepaliveProbes: "9", sysctlRetries2: "15"}
	timedOut := &net.OpError{Op: "read", Net: "tcp4", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}
	unreachable := &net.OpError{Op: "read", Net: "tcp4", Err: os.NewSyscallError("read", syscall.EHOSTUNREACH)}
	for _, tc := range []struct {
		name    string
		conn    string
		sysctls map[string]string
		err     error
		elapsed time.Duration
		passed  bool
	}{
		// Measured on Linux 6.18, HZ 250: the keepalive timers a little late, the
		// RTO 204 ms and counted from the first retransmission.
		{"idle fails a little after the model", ConnIdle, policy, timedOut, 184400 * time.Millisecond, true},
		{"sending fails a little after the model", ConnSending, policy, timedOut, 213100 * time.Millisecond, true},
		{"sending fails one backoff after the model", ConnSending, policy, timedOut, 325 * time.Second, true},
		{"idle fails long after the model", ConnIdle, policy, timedOut, 240 * time.Second, false},
		{"idle fails before the model", ConnIdle, policy, timedOut, 170 * time.Second, false},
		{"an error other than ETIMEDOUT", ConnSending, policy, unreachable, 205 * time.Second, false},
		{"open at the cap, the model beyond it", ConnIdle, kernel, os.ErrDeadlineExceeded, TCPMeasuredCap, true},
		{"open at the cap, the model within it", ConnSending, policy, os.ErrDeadlineExceeded, TCPMeasuredCap, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			model, latest, _, err := ModelFor(tc.conn, tc.sysctls)
			require.NoError(t, err)
			row := &TCPRow{}
			(&tcpMeasurement{row: row, cap: TCPMeasuredCap}).judge(tc.err, tc.elapsed, model, latest)
			assert.Equal(t, tc.passed, row.Passed, row.Outcome)
		})
	}
}
