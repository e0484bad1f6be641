// Package testenv starts one real kube-apiserver and etcd (controller-runtime
// envtest) per test binary, with the HAPolicy CRD installed. The binaries are
// built from Go modules by hack/control-plane.sh and cached outside the
// repository; KUBEBUILDER_ASSETS, when set, names a folder that already holds
// them.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

var (
	once    sync.Once
	env     *envtest.Environment
	cfg     *rest.Config
	startEr error
)

// RepoRoot is the folder of the repository's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/ha-injector/ha-injector\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no ha-injector go.mod above the working directory")
		}
		dir = parent
	}
}

// assets returns the folder with kube-apiserver and etcd, building them if needed.
func assets(root string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(root, "hack", "control-plane.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/control-plane.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Start returns the connection to the shared API server, starting it on first use.
func Start(t testing.TB) *rest.Config {
	t.Helper()
	once.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			startEr = err
			return
		}
		dir, err := assets(root)
		if err != nil {
			startEr = err
			return
		}
		env = &envtest.Environment{
			BinaryAssetsDirectory: dir,
			CRDDirectoryPaths:     []string{filepath.Join(root, "charts", "ha-injector", "crds")},
			ErrorIfCRDPathMissing: true,
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
