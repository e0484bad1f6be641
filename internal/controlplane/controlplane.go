// Package controlplane finds the repository and starts a real kube-apiserver and etcd
// (controller-runtime's envtest) with the HAPolicy CRD installed, for the tests, the
// demo and the benchmarks. The binaries are built from Go modules by
// hack/control-plane.sh and cached outside the repository; KUBEBUILDER_ASSETS, when set,
// names a folder that already holds them.
package controlplane

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RepoRoot is the folder of the repository's go.mod, found from the working directory up.
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
			return "", fmt.Errorf("no ha-injector go.mod above the working directory: run this inside the repository")
		}
		dir = parent
	}
}

// Assets returns the folder with kube-apiserver and etcd, building them if needed.
func Assets(root string) (string, error) {
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

// New returns an environment (not started) with the chart's CRDs.
func New(root string) (*envtest.Environment, error) {
	dir, err := Assets(root)
	if err != nil {
		return nil, err
	}
	return &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDDirectoryPaths:     []string{filepath.Join(root, "charts", "ha-injector", "crds")},
		ErrorIfCRDPathMissing: true,
	}, nil
}
