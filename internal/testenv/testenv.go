// Package testenv starts one real kube-apiserver and etcd (controller-runtime
// envtest, through internal/controlplane) per test binary, with the HAPolicy CRD
// installed.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/internal/controlplane"
)

var (
	once    sync.Once
	env     *envtest.Environment
	cfg     *rest.Config
	startEr error
)

// RepoRoot is the folder of the repository's go.mod.
func RepoRoot() (string, error) { return controlplane.RepoRoot() }

// Start returns the connection to the shared API server, starting it on first use.
func Start(t testing.TB) *rest.Config {
	t.Helper()
	once.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			startEr = err
			return
		}
		if env, startEr = controlplane.New(root); startEr != nil {
			return
		}
		cfg, startEr = env.Start()
	})
	if startEr != nil {
		t.Fatalf("starting kube-apiserver and etcd: %v", startEr)
	}
	return cfg
}

// Environment returns the running environment (nil before Start).
func Environment() *envtest.Environment { return env }

// Stop stops the API server if it was started; call it from TestMain.
func Stop() {
	if env != nil {
		_ = env.Stop()
	}
}

// Binary builds `ha-injector` into a temporary folder of t, as `make build` and the
// Dockerfile build it (static, trimmed paths), and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "ha-injector")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/ha-injector")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ha-injector: %v\n%s", err, out)
	}
	return bin
}

// Kubeconfig writes the shared API server's kubeconfig into a temporary folder of t
// and returns its path. Start must have been called.
func Kubeconfig(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
