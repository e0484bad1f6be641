package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// defaultTree is a fake /proc/sys: a few namespaced sysctls, and two that would change the
// node, with the kernel's defaults (tcp_rmem with tabs, as the kernel prints it).
var defaultTree = map[string]string{
	"net/ipv4/tcp_retries2":             "15\n",
	"net/ipv4/tcp_keepalive_time":       "7200\n",
	"net/ipv4/tcp_rmem":                 "4096\t131072\t6291456\n",
	"net/ipv4/conf/eth0.100/forwarding": "0\n",
	"kernel/core_pattern":               "core\n",
	"vm/swappiness":                     "60\n",
}

// fakeProcSys writes files under a temporary root and returns the root and the path of an
// empty termination log beside it.
func fakeProcSys(t *testing.T, files map[string]string) (root, terminationLog string) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "sys")
	for p, v := range files {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, p), []byte(v), 0o644))
	}
	terminationLog = filepath.Join(dir, "termination-log")
	require.NoError(t, os.WriteFile(terminationLog, nil, 0o644))
	return root, terminationLog
}

// testConfig points run at a fake tree, of whatever filesystem the temporary folder is on.
func testConfig(t *testing.T, root, terminationLog string) config {
	t.Helper()
	fsType, err := statfsType(root)
	require.NoError(t, err)
	return config{procSys: root, procSysFS: fsType, terminationLog: terminationLog}
}

func readTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		out[rel] = string(data)
		return err
	}))
	return out
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string          // exact lines
		wantStderr []string          // substrings; none: stderr is empty
		changed    map[string]string // files that change; the others must not
		wantLog    []string          // substrings of the termination log; none: it stays empty
	}{
		{
			name:       "sets the TCP sysctls and prints them as read back",
			args:       []string{"net.ipv4.tcp_retries2=9", "net.ipv4.tcp_keepalive_time=30"},
			wantStdout: []string{"net.ipv4.tcp_retries2=9", "net.ipv4.tcp_keepalive_time=30"},
			changed:    map[string]string{"net/ipv4/tcp_retries2": "9", "net/ipv4/tcp_keepalive_time": "30"},
		},
		{
			name:       "accepts the slash form and prints the dotted name",
			args:       []string{"net/ipv4/conf/eth0.100/forwarding=1", "net/ipv4/tcp_retries2=9"},
			wantStdout: []string{"net.ipv4.conf.eth0/100.forwarding=1", "net.ipv4.tcp_retries2=9"},
			changed:    map[string]string{"net/ipv4/conf/eth0.100/forwarding": "1", "net/ipv4/tcp_retries2": "9"},
		},
		{
			name:       "prints a multi-value sysctl with single spaces",
			args:       []string{"net.ipv4.tcp_rmem=4096   87380  6291456"},
			wantStdout: []string{"net.ipv4.tcp_rmem=4096 87380 6291456"},
			changed:    map[string]string{"net/ipv4/tcp_rmem": "4096   87380  6291456"},
		},
		{
			name:       "refuses sysctls that would change the node, sets the rest and exits 0",
			args:       []string{"kernel.core_pattern=x", "net.ipv4.tcp_retries2=9", "vm.swappiness=1"},
			wantStdout: []string{"net.ipv4.tcp_retries2=9"},
			wantStderr: []string{"kernel.core_pattern is not namespaced: setting it from a pod would change the node", "vm.swappiness is not namespaced"},
			changed:    map[string]string{"net/ipv4/tcp_retries2": "9"},
			wantLog:    []string{"ha-sysctl: 2 of 3 sysctls not set:\n", "kernel.core_pattern is not namespaced", "vm.swappiness is not namespaced"},
		},
		{
			name:       "exits 1 with --strict when a sysctl would change the node",
			args:       []string{"--strict", "kernel.core_pattern=x", "vm.swappiness=1", "net.ipv4.tcp_retries2=9"},
			wantCode:   1,
			wantStdout: []string{"net.ipv4.tcp_retries2=9"},
			wantStderr: []string{"kernel.core_pattern is not namespaced", "vm.swappiness is not namespaced"},
			changed:    map[string]string{"net/ipv4/tcp_retries2": "9"},
			wantLog:    []string{"2 of 3 sysctls not set", "kernel.core_pattern", "vm.swappiness"},
		},
		{
			name:       "exits 0 with --strict when everything was set",
			args:       []string{"--strict", "net.ipv4.tcp_retries2=9"},
			wantStdout: []string{"net.ipv4.tcp_retries2=9"},
			changed:    map[string]string{"net/ipv4/tcp_retries2": "9"},
		},
		{
			name:       "reports a sysctl this kernel does not have and creates nothing",
			args:       []string{"net.ipv4.tcp_no_such_thing=1", "net.ipv4.tcp_retries2=9"},
			wantStdout: []string{"net.ipv4.tcp_retries2=9"},
			wantStderr: []string{"net.ipv4.tcp_no_such_thing: unknown sysctl"},
			changed:    map[string]string{"net/ipv4/tcp_retries2": "9"},
			wantLog:    []string{"1 of 2 sysctls not set", "net.ipv4.tcp_no_such_thing: unknown sysctl"},
		},
		{
			name:       "reports a folder given as a sysctl",
			args:       []string{"net.ipv4=1"},
			wantStderr: []string{"net.ipv4: not a sysctl"},
			wantLog:    []string{"net.ipv4: not a sysctl"},
		},
		{
			name:       "refuses a value with a shell metacharacter and writes nothing",
			args:       []string{"net.ipv4.tcp_retries2=9;reboot"},
			wantStderr: []string{`invalid value "9;reboot" for net.ipv4.tcp_retries2`},
			wantLog:    []string{"1 of 1 sysctls not set", `invalid value "9;reboot"`},
		},
		{
			name:       "refuses a name that climbs out of /proc/sys",
			args:       []string{"net/../../etc=1"},
			wantStderr: []string{`invalid sysctl name "net/../../etc"`},
			wantLog:    []string{`invalid sysctl name`},
		},
		{
			name:       "reports a usage error with no arguments and exits 2",
			args:       nil,
			wantCode:   2,
			wantStderr: []string{"no NAME=VALUE given", "Usage: ha-sysctl"},
			wantLog:    []string{"usage error: no NAME=VALUE given"},
		},
		{
			name:       "reports an argument without = and writes nothing, not even the valid ones",
			args:       []string{"net.ipv4.tcp_retries2=9", "net.ipv4.tcp_keepalive_time"},
			wantCode:   2,
			wantStderr: []string{`"net.ipv4.tcp_keepalive_time" is not NAME=VALUE`},
			wantLog:    []string{"usage error"},
		},
		{
			name:       "reports an unknown flag and exits 2",
			args:       []string{"--force", "net.ipv4.tcp_retries2=9"},
			wantCode:   2,
			wantStderr: []string{"flag provided but not defined: -force"},
			wantLog:    []string{"usage error"},
		},
		{
			name:       "prints the usage on --help",
			args:       []string{"--help"},
			wantStdout: lines(usage),
		},
		{
			name:       "prints the version",
			args:       []string{"--version"},
			wantStdout: []string{"ha-sysctl dev"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, log := fakeProcSys(t, defaultTree)
			var stdout, stderr bytes.Buffer
			code := run(tt.args, testConfig(t, root, log), &stdout, &stderr)

			assert.Equal(t, tt.wantCode, code)
			assert.Equal(t, tt.wantStdout, lines(stdout.String()))
			if len(tt.wantStderr) == 0 {
				assert.Empty(t, stderr.String())
			}
			for _, s := range tt.wantStderr {
				assert.Contains(t, stderr.String(), s)
			}
			want := map[string]string{}
			for p, v := range defaultTree {
				want[p] = v
			}
			for p, v := range tt.changed {
				want[p] = v
			}
			assert.Equal(t, want, readTree(t, root), "only the accepted sysctls are written")
			data, err := os.ReadFile(log)
			require.NoError(t, err)
			if len(tt.wantLog) == 0 {
				assert.Empty(t, string(data))
			}
			for _, s := range tt.wantLog {
				assert.Contains(t, string(data), s)
			}
		})
	}
}

// TestRunReportsAValueTheKernelReadsBackDifferently: /dev/null bind-mounted over a sysctl
// (in a mount namespace of this test's own thread) swallows what is written, as a kernel
// that clamps or ignores a value would. A bind mount, not a symlink: ha-sysctl refuses a
// symlink that leads out of its tree.
func TestRunReportsAValueTheKernelReadsBackDifferently(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount /dev/null over a file of the fake tree; run the tests as root")
	}
	root, log := fakeProcSys(t, defaultTree)
	cfg := testConfig(t, root, log)
	var stdout, stderr bytes.Buffer
	var code int
	done := make(chan error)
	go func() {
		// Never unlocked: the thread, and the mount namespace only it is in, end with
		// this goroutine.
		runtime.LockOSThread()
		done <- func() error {
			if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
				return err
			}
			if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
				return err
			}
			if err := syscall.Mount("/dev/null", filepath.Join(root, "net/ipv4/tcp_retries2"), "", syscall.MS_BIND, ""); err != nil {
				return err
			}
			code = run([]string{"net.ipv4.tcp_retries2=9"}, cfg, &stdout, &stderr)
			return nil
		}()
	}()
	require.NoError(t, <-done, "a private bind mount of /dev/null")
	assert.Equal(t, 0, code)
	assert.Empty(t, stdout.String())
	assert.Contains(t, stderr.String(), `net.ipv4.tcp_retries2: wrote "9" but the kernel reads back ""`)
	data, err := os.ReadFile(log)
	require.NoError(t, err)
	assert.Contains(t, string(data), "reads back")
}

// TestRunRefusesASymlinkOutOfTheTree: a sysctl that is a symlink leading out of the tree
// (or a folder on the way that is one) is not written through; the rest is set, the reason
// reported, and the exit code is 0.
func TestRunRefusesASymlinkOutOfTheTree(t *testing.T) {
	root, log := fakeProcSys(t, defaultTree)
	outside := filepath.Join(t.TempDir(), "outside")
	require.NoError(t, os.WriteFile(outside, []byte("15\n"), 0o644))
	p := filepath.Join(root, "net/ipv4/tcp_retries2")
	require.NoError(t, os.Remove(p))
	require.NoError(t, os.Symlink(outside, p))
	require.NoError(t, os.Symlink(filepath.Dir(outside), filepath.Join(root, "net/escape")))
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(outside), "tcp_fin_timeout"), []byte("60\n"), 0o644))

	var stdout, stderr bytes.Buffer
	code := run([]string{"net.ipv4.tcp_retries2=9", "net.escape.tcp_fin_timeout=1", "net.ipv4.tcp_keepalive_time=30"}, testConfig(t, root, log), &stdout, &stderr)
	assert.Equal(t, 0, code)
	assert.Equal(t, []string{"net.ipv4.tcp_keepalive_time=30"}, lines(stdout.String()))
	assert.Contains(t, stderr.String(), "net.ipv4.tcp_retries2: refused: "+p+" leads out of the sysctl tree")
	assert.Contains(t, stderr.String(), "net.escape.tcp_fin_timeout: refused:")
	data, err := os.ReadFile(outside)
	require.NoError(t, err)
	assert.Equal(t, "15\n", string(data), "the file outside the tree is untouched")
	data, err = os.ReadFile(filepath.Join(filepath.Dir(outside), "tcp_fin_timeout"))
	require.NoError(t, err)
	assert.Equal(t, "60\n", string(data))
	data, err = os.ReadFile(log)
	require.NoError(t, err)
	assert.Contains(t, string(data), "2 of 3 sysctls not set")
}

// TestRunRefusesATreeThatIsNotProcfs: main asks for procfs; a temporary folder is not, so
// nothing is written, the reason is reported, and the pod still starts (exit 0).
func TestRunRefusesATreeThatIsNotProcfs(t *testing.T) {
	root, log := fakeProcSys(t, defaultTree)
	cfg := testConfig(t, root, log)
	cfg.procSysFS = procSuperMagic
	var stdout, stderr bytes.Buffer
	code := run([]string{"net.ipv4.tcp_retries2=9"}, cfg, &stdout, &stderr)
	assert.Equal(t, 0, code)
	assert.Empty(t, stdout.String())
	assert.Contains(t, stderr.String(), root+" is not procfs")
	assert.Equal(t, defaultTree, readTree(t, root), "nothing written")
	data, err := os.ReadFile(log)
	require.NoError(t, err)
	assert.Contains(t, string(data), "is not procfs")

	cfg.procSysFS = procSuperMagic
	code = run([]string{"--strict", "net.ipv4.tcp_retries2=9"}, cfg, &stdout, &stderr)
	assert.Equal(t, 1, code, "--strict still fails on it")
}

func TestRunWithoutTerminationLogCreatesNone(t *testing.T) {
	root, log := fakeProcSys(t, defaultTree)
	require.NoError(t, os.Remove(log))
	var stdout, stderr bytes.Buffer
	code := run([]string{"kernel.core_pattern=x"}, testConfig(t, root, log), &stdout, &stderr)
	assert.Equal(t, 0, code)
	assert.Contains(t, stderr.String(), "would change the node")
	assert.NotContains(t, stderr.String(), "termination log", "a missing termination log is not an error")
	assert.NoFileExists(t, log)
}

func TestRunAppendsAtMost4096BytesToTheTerminationLog(t *testing.T) {
	root, log := fakeProcSys(t, defaultTree)
	require.NoError(t, os.WriteFile(log, []byte("earlier\n"), 0o644))
	var args []string
	for range 40 {
		args = append(args, "net.ipv4.tcp_retries2="+strings.Repeat("!", 200))
	}
	var stdout, stderr bytes.Buffer
	code := run(args, testConfig(t, root, log), &stdout, &stderr)
	assert.Equal(t, 0, code)
	data, err := os.ReadFile(log)
	require.NoError(t, err)
	written, ok := strings.CutPrefix(string(data), "earlier\n")
	require.True(t, ok, "appended, not overwritten")
	assert.LessOrEqual(t, len(written), maxTerminationMessage, "the kubelet keeps the last 4096 bytes: the summary fits in them")
	assert.True(t, strings.HasPrefix(written, "ha-sysctl: 40 of 40 sysctls not set:\n"), "the head of the summary is kept")
	assert.True(t, strings.HasSuffix(written, "(cut: the container log has all of it)\n"))
	assert.Equal(t, 40, strings.Count(stderr.String(), "not set:"), "stderr has every failure")
}

// TestRunReportsAReadOnlyProcSys makes the fake tree read-only the way an unprivileged
// container sees /proc/sys: as root, with a read-only bind mount in a mount namespace of
// this test's own thread (root writes through file modes); otherwise with file modes.
func TestRunReportsAReadOnlyProcSys(t *testing.T) {
	root, log := fakeProcSys(t, defaultTree)
	var stdout, stderr bytes.Buffer
	var code int
	want := "permission denied: the container must be privileged and run as root"
	if os.Geteuid() == 0 {
		want = "read-only /proc/sys: the container must be privileged"
		done := make(chan error)
		go func() {
			// Never unlocked: the thread, and the mount namespace only it is in, end
			// with this goroutine.
			runtime.LockOSThread()
			done <- func() error {
				if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
					return err
				}
				if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
					return err
				}
				if err := syscall.Mount(root, root, "", syscall.MS_BIND, ""); err != nil {
					return err
				}
				if err := syscall.Mount("", root, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
					return err
				}
				code = run([]string{"net.ipv4.tcp_retries2=9"}, testConfig(t, root, log), &stdout, &stderr)
				return nil
			}()
		}()
		require.NoError(t, <-done, "a private read-only bind mount")
	} else {
		require.NoError(t, os.Chmod(filepath.Join(root, "net/ipv4/tcp_retries2"), 0o444))
		code = run([]string{"net.ipv4.tcp_retries2=9"}, testConfig(t, root, log), &stdout, &stderr)
	}
	assert.Equal(t, 0, code, "never blocks the pod")
	assert.Empty(t, stdout.String())
	assert.Contains(t, stderr.String(), "net.ipv4.tcp_retries2: "+want)
	data, err := os.ReadFile(log)
	require.NoError(t, err)
	assert.Contains(t, string(data), want)
	assert.Equal(t, "15\n", readTree(t, root)["net/ipv4/tcp_retries2"])
}
