package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memoryLimitKiB is the injected init container's memory limit, 16Mi.
const memoryLimitKiB = 16 * 1024

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// builtBinary builds ha-sysctl once, static and stripped as the image ships it.
func builtBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "ha-sysctl-test-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "ha-sysctl")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=binary-test", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = &buildError{err, out.String()}
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

type buildError struct {
	err    error
	output string
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.output }

// needNamespaces skips unless the test can make namespaces: root, and util-linux unshare.
func needNamespaces(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace with unshare; run the tests as root to exercise the real /proc/sys")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare (util-linux) to create a network namespace: " + err.Error())
	}
	return unshare
}

func hostValue(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.TrimSpace(string(data))
}

// TestBinaryInNetworkNamespace runs the built binary in a fresh network namespace, as the
// init container runs in the pod's, against the kernel's real /proc/sys: the values are
// set there, and the host's stay as they were.
func TestBinaryInNetworkNamespace(t *testing.T) {
	unshare := needNamespaces(t)
	bin := builtBinary(t)
	const retries2 = "/proc/sys/net/ipv4/tcp_retries2"
	before := hostValue(t, retries2)
	want := "9"
	if before == want {
		want = "8" // still proves the host's value is not the one written
	}

	cmd := exec.Command(unshare, "--net", "--", bin,
		"net.ipv4.tcp_retries2="+want, "net.ipv4.tcp_keepalive_time=30", "net/ipv4/tcp_rmem=4096 87380 6291456")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())

	assert.Equal(t, []string{
		"net.ipv4.tcp_retries2=" + want,
		"net.ipv4.tcp_keepalive_time=30",
		"net.ipv4.tcp_rmem=4096 87380 6291456", // the kernel reads it back with tabs
	}, lines(stdout.String()))
	assert.Empty(t, stderr.String())
	assert.Equal(t, before, hostValue(t, retries2), "the host's tcp_retries2 did not change")
}

// TestBinaryReportsReadOnlyProcSys runs the built binary where /proc/sys is read-only, as
// in an unprivileged container, with a termination log of its own (a tmpfs on /dev in a
// private mount namespace): nothing is set, the reason is in the termination log, and
// the exit code is 0, or 1 with --strict.
func TestBinaryReportsReadOnlyProcSys(t *testing.T) {
	unshare := needNamespaces(t)
	bin := builtBinary(t)
	const script = `set -e
mount -t tmpfs tmpfs /dev
: > /dev/termination-log
mount -o bind,ro /proc/sys /proc/sys
set +e
"$BIN" "$@"
rc=$?
cp /dev/termination-log "$LOG"
exit $rc`
	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"exits 0 without --strict", []string{"net.ipv4.tcp_retries2=9", "kernel.core_pattern=x"}, 0},
		{"exits 1 with --strict", []string{"--strict", "net.ipv4.tcp_retries2=9", "kernel.core_pattern=x"}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "termination-log")
			cmd := exec.Command(unshare, append([]string{"--net", "--mount", "--", "/bin/sh", "-c", script, "sh"}, tt.args...)...)
			cmd.Env = append(os.Environ(), "BIN="+bin, "LOG="+log)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if exit, ok := err.(*exec.ExitError); ok {
				code = exit.ExitCode()
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.wantCode, code, "stderr: %s", stderr.String())
			assert.Empty(t, stdout.String())
			assert.Contains(t, stderr.String(), "net.ipv4.tcp_retries2: read-only /proc/sys")
			data, err := os.ReadFile(log)
			require.NoError(t, err, "the script copies the termination log out")
			assert.Equal(t, "ha-sysctl: 2 of 2 sysctls not set:\n"+
				"net.ipv4.tcp_retries2: read-only /proc/sys: the container must be privileged\n"+
				"sysctl kernel.core_pattern is not namespaced: setting it from a pod would change the node\n", string(data))
		})
	}
}

// TestBinaryPeakRSS checks the binary fits the init container's memory limit (16Mi) with
// room to spare, measured on a real run (in a network namespace when the test can make
// one).
//
// The kernel's rusage of the child (cmd.ProcessState's Maxrss) cannot show a figure
// below this test process's own peak: os/exec starts children with vfork, and at exec the
// kernel keeps the larger of the old and new images' high-water marks (golang/go#32054).
// It is logged, and is an upper bound. The figure asserted is the child's own: VmHWM of
// its last image, read from /proc while it is stopped on its way out under ptrace.
func TestBinaryPeakRSS(t *testing.T) {
	bin := builtBinary(t)
	args := []string{bin, "--version"}
	if unshare, err := exec.LookPath("unshare"); err == nil && os.Geteuid() == 0 {
		// unshare execs ha-sysctl in place: the last image is ha-sysctl's.
		args = []string{unshare, "--net", "--", bin,
			"net.ipv4.tcp_retries2=9", "net.ipv4.tcp_keepalive_time=30", "net.ipv4.tcp_keepalive_intvl=30", "net.ipv4.tcp_keepalive_probes=5"}
	} else {
		t.Log("not root or no unshare: measuring --version, the start-up alone, so as not to touch the host's sysctls")
	}

	cmd := exec.Command(args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	hwm, err := runToExitStop(cmd)
	if err != nil {
		t.Logf("no ptrace (%v): asserting the rusage figure, an upper bound", err)
		cmd = exec.Command(args[0], args[1:]...)
		stdout.Reset()
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())
		hwm = -1
	}
	require.True(t, cmd.ProcessState.Success(), "stderr: %s", stderr.String())
	rusage, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	require.True(t, ok)
	maxrss := rusage.Maxrss // KiB on Linux
	t.Logf("args %q, output %q", args[1:], stdout.String())
	t.Logf("rusage Maxrss: %d KiB (%.1f MiB), floored at this test process's peak", maxrss, float64(maxrss)/1024)
	if hwm < 0 {
		assert.Less(t, maxrss, int64(memoryLimitKiB), "peak RSS under the init container's 16Mi memory limit")
		return
	}
	t.Logf("ha-sysctl peak RSS (VmHWM at exit): %d KiB (%.1f MiB)", hwm, float64(hwm)/1024)
	assert.Positive(t, hwm)
	assert.Less(t, hwm, int64(memoryLimitKiB), "peak RSS under the init container's 16Mi memory limit")
}

// runToExitStop runs cmd to its end under ptrace and returns VmHWM (KiB) of its last image,
// read when it stops at PTRACE_EVENT_EXIT, before the kernel takes its memory away. An
// error means ptrace was not available and cmd did not run.
func runToExitStop(cmd *exec.Cmd) (hwm int64, err error) {
	// Ptrace requests must come from the thread that started the tracee.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid, reaped := cmd.Process.Pid, false
	defer func() {
		if err != nil && !reaped {
			cmd.Process.Kill() // SIGKILL ends a stopped tracee too
			cmd.Wait()
		}
	}()
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, syscall.WALL, nil); err != nil { // stopped after its first exec
		return 0, err
	}
	if err := syscall.PtraceSetOptions(pid, syscall.PTRACE_O_TRACEEXIT|syscall.PTRACE_O_TRACEEXEC); err != nil {
		return 0, err
	}
	sig := 0
	for {
		if err := syscall.PtraceCont(pid, sig); err != nil {
			return 0, err
		}
		sig = 0
		if _, err := syscall.Wait4(pid, &ws, syscall.WALL, nil); err != nil {
			return 0, err
		}
		if ws.Exited() || ws.Signaled() {
			reaped = true
			return 0, fmt.Errorf("exited without an exit stop: status %#x", uint32(ws))
		}
		switch ws.TrapCause() {
		case syscall.PTRACE_EVENT_EXIT:
			hwm = vmHWM(pid)
			if err := syscall.PtraceCont(pid, 0); err != nil {
				return 0, err
			}
			reaped = true
			if err := cmd.Wait(); err != nil {
				return 0, err
			}
			if hwm < 0 {
				return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
			}
			return hwm, nil
		case 0: // a signal for the tracee (the Go runtime's SIGURG): pass it on
			sig = int(ws.StopSignal())
		}
	}
}

// vmHWM reads the high-water mark of a process's resident set, in KiB, or -1.
func vmHWM(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}

func TestBinaryVersionIsStamped(t *testing.T) {
	out, err := exec.Command(builtBinary(t), "--version").Output()
	require.NoError(t, err)
	assert.Equal(t, "ha-sysctl binary-test\n", string(out))
}
