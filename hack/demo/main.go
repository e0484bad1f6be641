// Command demo runs ha-injector for real on a laptop with nothing installed (`make demo`):
// a local kube-apiserver and etcd (the test control plane), `ha-injector serve` in this
// process, and the CRD, webhook configuration and default policy the Helm chart renders.
// It creates the example web-server Deployment in an opted-in namespace, prints what the
// API server stored, shows the warnings of a Pod Security "restricted" namespace, prints
// what `ha-injector doctor` says of it all, then leaves a kubeconfig for kubectl until
// Ctrl-C or SIGTERM, and cleans up. With -mode=native (`make demo MODE=native`) the chart
// is rendered with admission.mode=native: its MutatingAdmissionPolicy is installed, serve
// runs in native mode and binds the default policy, and the API server injects a pod of
// the web-server template itself (native mode mutates pods, not Deployments).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/doctor"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/examples"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/webhook"
)

func main() {
	mode := flag.String("mode", webhook.AdmissionModeWebhook, "admission mode: webhook or native")
	flag.Parse()
	if *mode != webhook.AdmissionModeWebhook && *mode != webhook.AdmissionModeNative {
		fmt.Fprintf(os.Stderr, "demo: -mode must be %s or %s, not %q\n", webhook.AdmissionModeWebhook, webhook.AdmissionModeNative, *mode)
		os.Exit(2)
	}
	ctx := ctrl.SetupSignalHandler()
	if err := run(ctx, options{out: os.Stdout, native: *mode == webhook.AdmissionModeNative}); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// options are what a test changes; main uses the defaults.
type options struct {
	out io.Writer
	// ready, if set, is called with the kubeconfig path once everything is up.
	ready func(kubeconfig string)
	// native runs the demo in native mode.
	native bool
}

func run(ctx context.Context, opts options) (err error) {
	out := opts.out
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	work := filepath.Join(root, "_output", "demo")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	defer func() {
		if rmErr := os.RemoveAll(work); rmErr != nil && err == nil {
			err = rmErr
		}
	}()
	step := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }

	step("Starting a local kube-apiserver and etcd (built once by hack/control-plane.sh)")
	env, err := controlplane.New(root)
	if err != nil {
		return err
	}
	restCfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer func() {
		step("Stopping ha-injector serve, kube-apiserver and etcd")
		if stopErr := env.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()

	if opts.native {
		step("Native mode: installing what the Helm chart renders with admission.mode=native (the default HAPolicy, the MutatingAdmissionPolicy" +
			" and its companion ValidatingAdmissionPolicy), starting ha-injector serve --admission-mode=native (no webhook server, no certificate)," +
			" which binds the default policy, creating namespace demo, labelled ha-injector.io/policy=default")
	} else {
		step("Starting ha-injector serve on 127.0.0.1 with a certificate from a test CA, installing what the Helm chart renders" +
			" (the default HAPolicy and the MutatingWebhookConfiguration), creating namespace demo, labelled ha-injector.io/policy=default")
	}
	logPath := filepath.Join(work, "webhook.log")
	wh, err := localwebhook.Serve(ctx, restCfg, localwebhook.Options{
		CAName:         "ha-injector-demo-ca",
		Dir:            filepath.Join(work, "certs"),
		LogFile:        logPath,
		ProbeNamespace: "demo",
		Native:         opts.native,
	})
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := wh.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()

	w := &controlplane.Warnings{}
	clientCfg := rest.CopyConfig(restCfg)
	clientCfg.WarningHandler = w
	c, err := client.New(clientCfg, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return err
	}

	dep, err := examples.WebServer(root)
	if err != nil {
		return err
	}
	dep.Namespace = "demo"
	if opts.native {
		if err := showPod(ctx, out, c, w, dep); err != nil {
			return err
		}
	} else if err := showDeployment(ctx, out, c, w, dep); err != nil {
		return err
	}

	step("A second case: namespace demo-restricted enforces Pod Security \"restricted\"")
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo-restricted", Labels: map[string]string{
		policies.PolicyLabel: "default", policies.PodSecurityEnforceLabel: "restricted",
	}}}); err != nil {
		return err
	}
	pod := restrictedPod("demo-restricted")
	if opts.native {
		// The companion ValidatingAdmissionPolicy's binding takes effect on its own,
		// a moment after the mutating one's: dry runs until it warns (bounded).
		if err := waitWarned(ctx, c, w, pod, 30*time.Second); err != nil {
			return err
		}
	}
	if err := c.Create(ctx, pod); err != nil {
		return err
	}
	fmt.Fprintln(out, "The pod is admitted: no privileged init container, the safe sysctls in its securityContext.")
	printWarnings(out, w.Take())
	if err := printYAML(out, map[string]any{"spec": map[string]any{"securityContext": map[string]any{"sysctls": pod.Spec.SecurityContext.Sysctls}}}); err != nil {
		return err
	}

	user, err := env.AddUser(envtest.User{Name: "demo-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfigPath := filepath.Join(work, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	step("ha-injector doctor: is injection working here, and if not, why?")
	report, err := doctor.Run(ctx, restCfg, doctor.Options{DefaultSysctlImage: wh.Server.Config.SysctlImage})
	if err != nil {
		return err
	}
	if err := report.WriteText(out); err != nil {
		return err
	}
	step("The demo cluster runs until Ctrl-C. In another shell:")
	fmt.Fprintf(out, "export KUBECONFIG=%s\n", kubeconfigPath)
	if opts.native {
		fmt.Fprintln(out, "kubectl -n demo get pod web-server -o yaml")
		fmt.Fprintln(out, "kubectl get mutatingadmissionpolicies,mutatingadmissionpolicybindings")
	} else {
		fmt.Fprintln(out, "kubectl -n demo get deployment web-server -o yaml")
	}
	fmt.Fprintln(out, "kubectl get hapolicies")
	fmt.Fprintln(out, "go run ./cmd/ha-injector doctor")
	fmt.Fprintln(out, "kubectl create namespace team-a && kubectl label namespace team-a ha-injector.io/policy=default")
	fmt.Fprintln(out, "kubectl -n team-a run web --image=nginx:1.27 --dry-run=server -o yaml")
	fmt.Fprintf(out, "(serve's log: %s)\n", logPath)
	if opts.ready != nil {
		opts.ready(kubeconfigPath)
	}
	select {
	case <-ctx.Done():
	case <-wh.Server.Done():
		return fmt.Errorf("the webhook stopped: %v", wh.Server.Err())
	}
	return nil
}

// showDeployment creates the web-server Deployment, which the webhook mutates, and
// prints the injected parts of what the API server stored.
func showDeployment(ctx context.Context, out io.Writer, c client.Client, w *controlplane.Warnings, dep *appsv1.Deployment) error {
	fmt.Fprintln(out, "==> Creating the 3-replica web-server Deployment from examples/web-server.yaml")
	if err := c.Create(ctx, dep); err != nil {
		return err
	}
	printWarnings(out, w.Take())
	var stored appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKeyFromObject(dep), &stored); err != nil {
		return err
	}
	fmt.Fprintln(out, "==> What the API server stored (kubectl -n demo get deployment web-server -o yaml), the injected parts:")
	spec := stored.Spec.Template.Spec
	return printYAML(out, map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{policies.StatusAnnotation: stored.Annotations[policies.StatusAnnotation]}},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"affinity":       spec.Affinity,
			"tolerations":    spec.Tolerations,
			"initContainers": spec.InitContainers,
		}}},
	})
}

// showPod creates a pod of the web-server Deployment's template, as its ReplicaSet would
// (native mode mutates pods, not Deployments, and no controller runs here), and prints
// the injected parts of what the API server stored.
func showPod(ctx context.Context, out io.Writer, c client.Client, w *controlplane.Warnings, dep *appsv1.Deployment) error {
	fmt.Fprintln(out, "==> Creating a pod of the web-server Deployment's template (examples/web-server.yaml), as its ReplicaSet would")
	pod := &corev1.Pod{ObjectMeta: *dep.Spec.Template.ObjectMeta.DeepCopy(), Spec: *dep.Spec.Template.Spec.DeepCopy()}
	pod.Namespace, pod.Name = dep.Namespace, dep.Name
	if err := c.Create(ctx, pod); err != nil {
		return err
	}
	printWarnings(out, w.Take())
	fmt.Fprintln(out, "==> What the API server stored (kubectl -n demo get pod web-server -o yaml), the injected parts:")
	return printYAML(out, map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{policies.StatusAnnotation: pod.Annotations[policies.StatusAnnotation]}},
		"spec": map[string]any{
			"affinity":       pod.Spec.Affinity,
			"tolerations":    pod.Spec.Tolerations,
			"initContainers": pod.Spec.InitContainers,
		},
	})
}

// waitWarned dry-runs the creation of pod until the API server answers with one of
// ha-injector's warnings, or timeout passes; the warnings of the dry runs are dropped.
func waitWarned(ctx context.Context, c client.Client, w *controlplane.Warnings, pod *corev1.Pod, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; {
		err := c.Create(ctx, pod.DeepCopy(), client.DryRunAll)
		warned := slices.ContainsFunc(w.Take(), func(s string) bool { return strings.Contains(s, "ha-injector: ") })
		switch {
		case err != nil:
			return err
		case warned:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("the ValidatingAdmissionPolicy's warnings did not reach namespace %s within %s", pod.Namespace, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// restrictedPod is a pod that Pod Security "restricted" accepts as it is.
func restrictedPod(ns string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "web", Image: "nginxinc/nginx-unprivileged:1.27",
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
}

func printWarnings(out io.Writer, list []string) {
	for _, w := range list {
		fmt.Fprintf(out, "Warning: %s\n", w)
	}
}

func printYAML(out io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = out.Write(b)
	return err
}
