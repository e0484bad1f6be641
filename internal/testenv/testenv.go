// Package testenv starts one real kube-apiserver and etcd (controller-runtime
// envtest, through internal/controlplane) per test binary, with the HAPolicy CRD
// installed.
package testenv

import (
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
