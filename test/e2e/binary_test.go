package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
)

// TestServeBinary builds the real binary (as `make build` does), runs
// `ha-injector serve` with its flags against the API server, waits until it
// is ready, and stops it with SIGTERM: it must exit 0 on its own.
func TestServeBinary(t *testing.T) {
	testenv.Start(t)
	dir := t.TempDir()
	bin := testenv.Binary(t)
	kubeconfig := testenv.Kubeconfig(t)
	kp, err := certs.SelfSigned([]string{"127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	require.NoError(t, kp.WriteFiles(filepath.Join(dir, "certs"), "serving.crt", "serving.key"))

	t.Run("an invalid flag value exits 2 before anything starts", func(t *testing.T) {
		cmd := exec.Command(bin, "serve", "--kubeconfig", kubeconfig, "--webhook-cert-path", filepath.Join(dir, "certs"),
			"--webhook-cert-name", "serving.crt", "--webhook-cert-key", "serving.key", "--tls-min-version", "1.0")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		assert.Equal(t, 2, exit.ExitCode())
		assert.Contains(t, stderr.String(), `--tls-min-version must be 1.2 or 1.3, not "1.0"`)
	})

	ports, err := proc.FreePorts(3)
	require.NoError(t, err)
	webhookPort, probePort, metricsPort := ports[0], ports[1], ports[2]
	cmd := exec.Command(bin, "serve",
		"--kubeconfig", kubeconfig,
		"--webhook-host", "127.0.0.1",
		"--webhook-port", fmt.Sprint(webhookPort),
		"--webhook-cert-path", filepath.Join(dir, "certs"),
		"--webhook-cert-name", "serving.crt",
		"--webhook-cert-key", "serving.key",
		"--shutdown-delay", "1s",
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", probePort),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		// Plain HTTP, so the flag is seen to reach the server; the default (HTTPS, a token
		// allowed to get /metrics) is TestMetricsNeedATokenAllowedToReadThem's.
		"--metrics-secure=false",
		"--tls-min-version", "1.3",
		"--zap-log-level", "info",
	)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})

	require.NoError(t, proc.WaitHTTP(context.Background(), nil, fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort), 30*time.Second, nil), logs.String())
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		assert.NoError(t, err, "exit status after SIGTERM\n%s", logs.String())
	case <-time.After(40 * time.Second):
		t.Fatalf("serve did not exit within 40s of SIGTERM\n%s", logs.String())
	}
	assert.True(t, strings.Contains(logs.String(), "Shutting down webhook server"), logs.String())
}

// syncBuffer is a bytes.Buffer safe to read while the process writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
