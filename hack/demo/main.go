// Command demo runs ha-injector for real on a laptop with nothing installed (`make demo`):
// the simulated cluster of `make failover` (test/failover: etcd, kube-apiserver, the real
// kube-controller-manager and kube-scheduler, and KWOK playing the kubelets of 6 fake
// nodes, 2 in each of 3 zones), `ha-injector serve` in this process, and the CRD,
// webhook configuration and default policy the Helm chart renders. It creates the example
// web-server Deployment in an opted-in namespace and, for comparison, in one that is not,
// prints what the API server stored and where the scheduler put the pods, shows the
// warnings of a Pod Security "restricted" namespace, prints what `ha-injector doctor` says
// of it all, then leaves a kubeconfig for kubectl until Ctrl-C or SIGTERM, and cleans up.
// With -mode=native (`make demo MODE=native`) the chart is rendered with
// admission.mode=native: its MutatingAdmissionPolicy is installed, serve runs in native
// mode and binds the default policy, and the API server injects the pods the ReplicaSet
// controller creates (native mode mutates pods, not Deployments).
//
// `demo kill-node NODE` (`make demo-kill-node NODE=...`), run beside it, kills one of
// its nodes as test/failover does (KWOK stops renewing the node's Lease) and watches
// the node lifecycle controller taint it and the pods move.
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
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/doctor"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/failover"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/examples"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/webhook"
)

// The demo's namespaces: opted in to the default policy, and not.
const (
	optedIn    = "demo"
	notOptedIn = "demo-plain"
	restricted = "demo-restricted"
)

// workDir is where the demo keeps its cluster (logs, etcd's data, the kubeconfig),
// relative to the repository; kill-node finds the kubeconfig there.
const workDir = "_output/demo"

// The demo's node timings (-timings).
const (
	timingsKubernetes = "kubernetes"
	timingsShort      = "short"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "kill-node" {
		os.Exit(killNodeMain(os.Args[2:]))
	}
	mode := flag.String("mode", webhook.AdmissionModeWebhook, "admission mode: webhook or native")
	timings := flag.String("timings", timingsKubernetes, "node timings: kubernetes (Kubernetes' defaults: node-monitor-grace-period 50s, 40 s Lease)"+
		" or short (those of the short failover test: 8s, 4 s Lease, so a killed node's pods move sooner)")
	flag.Parse()
	if *mode != webhook.AdmissionModeWebhook && *mode != webhook.AdmissionModeNative {
		fmt.Fprintf(os.Stderr, "demo: -mode must be %s or %s, not %q\n", webhook.AdmissionModeWebhook, webhook.AdmissionModeNative, *mode)
		os.Exit(2)
	}
	settings, err := settingsFor(*timings)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	ctx := ctrl.SetupSignalHandler()
	if err := run(ctx, options{out: os.Stdout, native: *mode == webhook.AdmissionModeNative, settings: settings}); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// settingsFor returns the cluster's timings for -timings.
func settingsFor(timings string) (failover.Settings, error) {
	switch timings {
	case timingsKubernetes:
		return failover.KubernetesDefaults, nil
	case timingsShort:
		return failover.Short().Settings, nil
	}
	return failover.Settings{}, fmt.Errorf("-timings must be %s or %s, not %q", timingsKubernetes, timingsShort, timings)
}

// options are what a test changes; main uses the defaults.
type options struct {
	out io.Writer
	// ready, if set, is called with the kubeconfig path once everything is up.
	ready func(kubeconfig string)
	// native runs the demo in native mode.
	native bool
	// settings are the cluster's timings (only the controller manager's, the Lease's
	// and the default tolerations are used: the policy is the chart's default one).
	settings failover.Settings
}

// zones are the demo's nodes and their zones: 2 nodes in each of 3 zones.
var zones = map[string]string{
	"zone-a-1": "zone-a", "zone-a-2": "zone-a",
	"zone-b-1": "zone-b", "zone-b-2": "zone-b",
	"zone-c-1": "zone-c", "zone-c-2": "zone-c",
}

func run(ctx context.Context, opts options) (err error) {
	out := opts.out
	start := time.Now()
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	work := filepath.Join(root, workDir)
	// What a demo killed without its cleanup left (etcd's data of another cluster).
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	defer func() {
		if rmErr := os.RemoveAll(work); rmErr != nil && err == nil {
			err = rmErr
		}
	}()
	step := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }

	step("Starting a simulated cluster, as make failover does: etcd, kube-apiserver, kube-controller-manager (node-monitor-grace-period %s, "+
		"node-monitor-period %s), kube-scheduler, and KWOK playing the kubelets of %d nodes in 3 zones (%s Lease); "+
		"built once by hack/control-plane.sh and hack/cluster.sh",
		opts.settings.NodeMonitorGracePeriod, opts.settings.NodeMonitorPeriod, len(zones), opts.settings.NodeLeaseDuration)
	bins, err := failover.FindBinaries(root)
	if err != nil {
		return err
	}
	cl, err := failover.StartCluster(ctx, bins, opts.settings, work)
	if err != nil {
		return fmt.Errorf("starting the cluster: %w", err)
	}
	defer func() {
		step("Stopping ha-injector serve and the cluster")
		if stopErr := cl.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	if err := cl.AddZonedNodes(ctx, zones); err != nil {
		return err
	}
	if err := cl.InstallCRDs(root); err != nil {
		return err
	}
	for ns, labels := range map[string]map[string]string{
		optedIn:    {policies.PolicyLabel: "default"},
		notOptedIn: nil,
		restricted: {policies.PolicyLabel: "default", policies.PodSecurityEnforceLabel: "restricted"},
	} {
		if _, err := cl.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	for _, ns := range []string{optedIn, notOptedIn, restricted} {
		if err := cl.WaitServiceAccount(ctx, ns); err != nil {
			return err
		}
	}

	if opts.native {
		step("Native mode: installing what the Helm chart renders with admission.mode=native (the default HAPolicy, the MutatingAdmissionPolicy" +
			" and its companion ValidatingAdmissionPolicy), starting ha-injector serve --admission-mode=native (no webhook server, no certificate)," +
			" which binds the default policy to namespace demo, labelled ha-injector.io/policy=default")
	} else {
		step("Starting ha-injector serve on 127.0.0.1 with a certificate from the cluster's CA, installing what the Helm chart renders" +
			" (the default HAPolicy and the MutatingWebhookConfiguration) for namespace demo, labelled ha-injector.io/policy=default")
	}
	logPath := filepath.Join(work, "ha-injector.log")
	wh, err := localwebhook.Serve(ctx, cl.Config, localwebhook.Options{
		CA:             cl.CA,
		Dir:            filepath.Join(work, "webhook-certs"),
		LogFile:        logPath,
		ProbeNamespace: optedIn,
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
	clientCfg := rest.CopyConfig(cl.Config)
	clientCfg.WarningHandler = w
	c, err := client.New(clientCfg, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return err
	}

	dep, err := examples.WebServer(root)
	if err != nil {
		return err
	}
	step("Creating the 3-replica web-server Deployment from examples/web-server.yaml in namespace demo, and the same in namespace demo-plain, not opted in")
	for _, ns := range []string{optedIn, notOptedIn} {
		d := dep.DeepCopy()
		d.Namespace = ns
		if err := c.Create(ctx, d); err != nil {
			return err
		}
		printWarnings(out, w.Take())
	}
	if !opts.native {
		if err := showDeployment(ctx, out, c, client.ObjectKeyFromObject(dep)); err != nil {
			return err
		}
	}
	step("Waiting for the ReplicaSet controller, the scheduler and KWOK to run the pods")
	pods, err := waitRunning(ctx, cl.Client, optedIn, 3, 90*time.Second)
	if err != nil {
		return err
	}
	plain, err := waitRunning(ctx, cl.Client, notOptedIn, 3, 90*time.Second)
	if err != nil {
		return err
	}
	if opts.native {
		if err := showPod(out, &pods[0]); err != nil {
			return err
		}
	}
	step("Where they run (kubectl get pods -o wide, with each node's zone and how long each pod tolerates an unreachable node):")
	if err := printPods(ctx, out, cl.Client, []string{optedIn, notOptedIn}); err != nil {
		return err
	}
	fmt.Fprintf(out, "In demo, %d pods in %d zones, as the injected anti-affinity and zone spread prefer (the scheduler decides); its pods leave an unreachable node after %s, demo-plain's after %s.\n",
		len(pods), zonesOf(pods), unreachableToleration(&pods[0]), unreachableToleration(&plain[0]))

	step("A second case: namespace demo-restricted enforces Pod Security \"restricted\"")
	pod := restrictedPod(restricted)
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

	step("ha-injector doctor: is injection working here, and if not, why?")
	report, err := doctor.Run(ctx, cl.Config, doctor.Options{DefaultSysctlImage: wh.Server.Config.SysctlImage})
	if err != nil {
		return err
	}
	if err := report.WriteText(out); err != nil {
		return err
	}
	step("Ready in %.0f s. The demo cluster runs until Ctrl-C. In another shell:", time.Since(start).Seconds())
	fmt.Fprintf(out, "export KUBECONFIG=%s\n", cl.Kubeconfig)
	fmt.Fprintln(out, "kubectl get pods -A -o wide")
	if opts.native {
		fmt.Fprintln(out, "kubectl -n demo get pods -l app=web-server -o yaml")
		fmt.Fprintln(out, "kubectl get mutatingadmissionpolicies,mutatingadmissionpolicybindings")
	} else {
		fmt.Fprintln(out, "kubectl -n demo get deployment web-server -o yaml")
	}
	fmt.Fprintln(out, "kubectl get hapolicies")
	fmt.Fprintln(out, "go run ./cmd/ha-injector doctor")
	fmt.Fprintln(out, "kubectl create namespace team-a && kubectl label namespace team-a ha-injector.io/policy=default")
	fmt.Fprintln(out, "kubectl -n team-a run web --image=nginx:1.27 --dry-run=server -o yaml")
	victim := nodeToKill(pods, plain)
	fmt.Fprintf(out, "Kill a node (KWOK stops its heartbeats) and watch the pods move: make demo-kill-node NODE=%s\n", victim)
	grace := opts.settings.NodeMonitorGracePeriod
	fmt.Fprintf(out, "(the node is tainted unreachable about %s after; demo's pod there is replaced %s later, demo-plain's %s later)\n",
		grace, unreachableToleration(&pods[0]), unreachableToleration(&plain[0]))
	fmt.Fprintf(out, "(logs: serve's %s, the cluster's in %s)\n", logPath, work)
	if opts.ready != nil {
		opts.ready(cl.Kubeconfig)
	}
	select {
	case <-ctx.Done():
	case <-wh.Server.Done():
		return fmt.Errorf("the webhook stopped: %v", wh.Server.Err())
	}
	return cl.Exited()
}

// showDeployment prints the injected parts of the Deployment the API server stored in
// the opted-in namespace, which the webhook mutated.
func showDeployment(ctx context.Context, out io.Writer, c client.Client, key client.ObjectKey) error {
	key.Namespace = optedIn
	var stored appsv1.Deployment
	if err := c.Get(ctx, key, &stored); err != nil {
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

// showPod prints the injected parts of a pod the ReplicaSet controller created in the
// opted-in namespace, which the API server mutated (native mode mutates pods, not
// Deployments).
func showPod(out io.Writer, pod *corev1.Pod) error {
	fmt.Fprintf(out, "==> What the API server stored for the ReplicaSet's pod (kubectl -n demo get pod %s -o yaml), the injected parts:\n", pod.Name)
	return printYAML(out, map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{policies.StatusAnnotation: pod.Annotations[policies.StatusAnnotation]}},
		"spec": map[string]any{
			"affinity":       pod.Spec.Affinity,
			"tolerations":    pod.Spec.Tolerations,
			"initContainers": pod.Spec.InitContainers,
		},
	})
}

// waitRunning waits (bounded) until namespace has want Running web-server pods and
// returns them.
func waitRunning(ctx context.Context, cs kubernetes.Interface, namespace string, want int, timeout time.Duration) ([]corev1.Pod, error) {
	var running []corev1.Pod
	for deadline := time.Now().Add(timeout); ; {
		list, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=web-server"})
		if err != nil {
			return nil, err
		}
		running = slices.DeleteFunc(list.Items, func(p corev1.Pod) bool { return p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil })
		if len(running) >= want {
			return running, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d web-server pods Running in %s after %s", len(running), want, namespace, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// nodeToKill is a node that runs a pod of each namespace (the first opted-in pod's
// node if none does), sorted by name.
func nodeToKill(optedIn, plain []corev1.Pod) string {
	var nodes []string
	for _, p := range optedIn {
		nodes = append(nodes, p.Spec.NodeName)
	}
	slices.Sort(nodes)
	for _, n := range nodes {
		if slices.ContainsFunc(plain, func(p corev1.Pod) bool { return p.Spec.NodeName == n }) {
			return n
		}
	}
	return nodes[0]
}

// printPods prints the web-server pods of namespaces with kubectl get pods -o wide's
// columns (but AGE and the two rarely used ones), each pod's node's zone, and its
// toleration of an unreachable node.
func printPods(ctx context.Context, out io.Writer, cs kubernetes.Interface, namespaces []string) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	zoneOf := map[string]string{}
	for _, n := range nodes.Items {
		zoneOf[n.Name] = n.Labels[corev1.LabelTopologyZone]
	}
	tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tREADY\tSTATUS\tRESTARTS\tIP\tNODE\tZONE\tUNREACHABLE TOLERATED")
	for _, ns := range namespaces {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web-server"})
		if err != nil {
			return err
		}
		slices.SortFunc(list.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Spec.NodeName+a.Name, b.Spec.NodeName+b.Name) })
		for _, p := range list.Items {
			ready, restarts := 0, int32(0)
			for _, s := range p.Status.ContainerStatuses {
				if s.Ready {
					ready++
				}
				restarts += s.RestartCount
			}
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%d\t%s\t%s\t%s\t%s\n", ns, p.Name, ready, len(p.Spec.Containers), podStatus(&p), restarts,
				orNone(p.Status.PodIP), orNone(p.Spec.NodeName), orNone(zoneOf[p.Spec.NodeName]), unreachableToleration(&p))
		}
	}
	return tw.Flush()
}

// podStatus is kubectl's STATUS column, for the cases the demo has.
func podStatus(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	return string(p.Status.Phase)
}

// unreachableToleration is how long p tolerates the unreachable taint.
func unreachableToleration(p *corev1.Pod) string {
	for _, t := range p.Spec.Tolerations {
		if t.Key == corev1.TaintNodeUnreachable && t.TolerationSeconds != nil {
			return fmt.Sprintf("%d s", *t.TolerationSeconds)
		}
	}
	return "<none>"
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
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

// clientFor is a typed client from a kubeconfig file.
func clientFor(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.WarningHandler = rest.NoWarnings{}
	return kubernetes.NewForConfig(cfg)
}

// zonesOf counts the zones the pods were scheduled in.
func zonesOf(pods []corev1.Pod) int {
	seen := map[string]bool{}
	for i := range pods {
		if z, ok := zones[pods[i].Spec.NodeName]; ok {
			seen[z] = true
		}
	}
	return len(seen)
}
