// Package controlplane finds the repository and starts a real kube-apiserver and etcd
// (controller-runtime's envtest) with the HAPolicy CRD installed, for the tests, the
// demo and the benchmarks. The binaries are built from Go modules by
// hack/control-plane.sh and cached outside the repository; KUBEBUILDER_ASSETS, when set,
// names a folder that already holds them.
package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/test/harness/proc"
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

// StartControllerManager starts a real kube-controller-manager against env's API
// server with only the named controllers (default: the Deployment and ReplicaSet
// controllers), its kubeconfig, log and certificates in dir, and returns once its
// /healthz answers (bounded: 30 s). Tests that judge what those controllers do with what
// the webhook stored (Pod Security rejecting a ReplicaSet's pods, a rollback reusing a
// ReplicaSet) or with the chart's hooks (the Job controller and the garbage collector)
// share it.
func StartControllerManager(env *envtest.Environment, dir, bin string, controllers ...string) (*proc.Process, error) {
	if len(controllers) == 0 {
		controllers = []string{"deployment-controller", "replicaset-controller"}
	}
	user, err := env.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "kube-controller-manager.kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	ports, err := proc.FreePorts(1)
	if err != nil {
		return nil, err
	}
	kcm, err := proc.Start("kube-controller-manager", filepath.Join(dir, "kube-controller-manager.log"), bin, nil,
		"--kubeconfig="+path,
		"--authentication-kubeconfig="+path,
		"--authorization-kubeconfig="+path,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[0]),
		"--cert-dir="+filepath.Join(dir, "kube-controller-manager"),
		"--controllers="+strings.Join(controllers, ","),
		// One instance: taking the lease would only delay the start.
		"--leader-elect=false",
	)
	if err != nil {
		return nil, err
	}
	// Its own serving certificate is self-signed; /healthz needs no credentials.
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a local probe of a process started here
	if err := proc.WaitHTTP(context.Background(), insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[0]), 30*time.Second, kcm.Alive); err != nil {
		_ = kcm.Stop(15 * time.Second)
		return nil, fmt.Errorf("kube-controller-manager: %w\n%s", err, proc.Tail(kcm.Log, 20))
	}
	return kcm, nil
}
