// Package testenv starts one real kube-apiserver and etcd (controller-runtime
// envtest, through test/harness/controlplane) per test binary, with the HAPolicy CRD
// installed.
package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/test/harness/controlplane"
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

// CreateUnchecked stores an HAPolicy that the installed CRD's CEL rules would refuse,
// as one stored under an older CRD (one without a rule added since) is: the CRD's
// x-kubernetes-validations are taken out for the moment of the create, then put back.
// Tests of one API server must not run it beside other writes of HAPolicies.
func CreateUnchecked(ctx context.Context, c client.Client, policy client.Object) error {
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	key := client.ObjectKey{Name: "hapolicies.ha-injector.io"}
	if err := c.Get(ctx, key, crd); err != nil {
		return err
	}
	original := runtime.DeepCopyJSONValue(crd.Object["spec"])
	crd.Object["spec"] = withoutValidations(crd.Object["spec"])
	if err := c.Update(ctx, crd); err != nil {
		return err
	}
	restore := func() error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, key, crd); err != nil {
				return err
			}
			crd.Object["spec"] = runtime.DeepCopyJSONValue(original)
			return c.Update(ctx, crd)
		})
	}
	// The API server takes the new schema up asynchronously: retry the create
	// (bounded) while it is still refused.
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		obj := policy.DeepCopyObject().(client.Object)
		if err = c.Create(ctx, obj); err == nil || !apierrors.IsInvalid(err) {
			break
		}
	}
	if rerr := restore(); err == nil {
		err = rerr
	}
	return err
}

// withoutValidations returns v without any x-kubernetes-validations, at any depth.
func withoutValidations(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if k != "x-kubernetes-validations" {
				out[k] = withoutValidations(e)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = withoutValidations(e)
		}
		return out
	}
	return v
}
