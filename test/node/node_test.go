//go:build node

package node

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
)

var probed = []string{"net.ipv4.tcp_retries2", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}

// TestRealNode installs the chart for real (the Helm Go SDK, the image built without
// Docker, self-managed certificates) on a node with a real kubelet, and runs pods
// created through the webhook it serves: its pods, called by the API server through
// their Service.
func TestRealNode(t *testing.T) {
	// The webhook's warnings come back on every pod the test creates; the
	// client would log them through controller-runtime's logger, which
	// otherwise prints a stack trace saying it was never set.
	ctrllog.SetLogger(logr.Discard())
	n := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	installChart(ctx, t, n, root)

	// A Deployment in an opted-in namespace: its pod runs; tcp_retries2 from the init
	// container, the keepalive ones from the pod's securityContext; the host keeps its own.
	t.Run("opted-in Deployment", func(t *testing.T) {
		hostBefore := readSysctls(t)
		ns := namespace(ctx, t, n, "opted-in", nil)
		d := workloads.Deployment(ns, "probe", workloads.Replicas(1), workloads.PodSpec(probeSpec()))
		require.NoError(t, n.Client.Create(ctx, d))
		assert.Equal(t, "true", d.Labels[policies.InjectedLabel], "the webhook injected the Deployment")
		pod := waitDeploymentPod(ctx, t, n, d)
		require.Len(t, pod.Spec.InitContainers, 1, "the ha-sysctl init container")
		s := pod.Status.InitContainerStatuses[0]
		require.NotNil(t, s.State.Terminated, "init container %s finished", s.Name)
		assert.Equal(t, int32(0), s.State.Terminated.ExitCode, "init container %s: %s", s.Name, s.State.Terminated.Message)
		inPod := readProbeLog(ctx, t, n, pod)
		t.Logf("inside the pod: %v; on the host: %v", inPod, hostBefore)
		assert.Equal(t, injectedSysctls, inPod)
		assert.Equal(t, hostBefore, readSysctls(t), "the host's values are unchanged")
	})

	// Pod Security restricted allows no privileged container: the pod gets the safe
	// sysctls only, and tcp_retries2 keeps the kernel's default in its network namespace.
	t.Run("restricted namespace", func(t *testing.T) {
		restrictedProbe(ctx, t, n, namespace(ctx, t, n, "restricted", restrictedLabels))
	})

	// An ha-sysctl that cannot write (the pod's own init container of that name, not
	// privileged, which the webhook keeps): /proc/sys is read-only in it, so nothing is
	// set, the pod runs all the same, and the reason is in the init container's
	// termination message.
	t.Run("ha-sysctl that cannot write", func(t *testing.T) {
		ns := namespace(ctx, t, n, "unprivileged", nil)
		pod := runProbe(ctx, t, n, ns, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{
				Name: policies.SysctlContainerName, Image: ourImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/ha-sysctl", "net.ipv4.tcp_retries2=9"},
			}}
		})
		require.Len(t, pod.Spec.InitContainers, 1)
		assert.Nil(t, pod.Spec.InitContainers[0].SecurityContext, "the pod's own ha-sysctl is kept as it is")
		s := pod.Status.InitContainerStatuses[0].State.Terminated
		require.NotNil(t, s)
		assert.Equal(t, int32(0), s.ExitCode, "a sysctl not set does not fail the pod")
		t.Logf("termination message: %q", s.Message)
		assert.Contains(t, s.Message, "ha-sysctl: 1 of 1 sysctls not set")
		assert.Contains(t, s.Message, "net.ipv4.tcp_retries2")
		assert.Equal(t, "15", readProbeLog(ctx, t, n, pod)["net.ipv4.tcp_retries2"])
	})

	// The TCP leg between real pods (tcp_test.go).
	t.Run("TCP to a dead peer", func(t *testing.T) { tcpDeadPeer(ctx, t, n) })

	// The same release switched to native mode (native_test.go).
	t.Run("native mode", func(t *testing.T) { nativeMode(ctx, t, n, root) })
}

// injectedSysctls are what the default policy sets in a pod's network namespace where
// the ha-sysctl init container may run.
var injectedSysctls = map[string]string{
	"net.ipv4.tcp_retries2":         "9",
	"net.ipv4.tcp_keepalive_time":   "30",
	"net.ipv4.tcp_keepalive_intvl":  "30",
	"net.ipv4.tcp_keepalive_probes": "5",
}

// restrictedLabels make a namespace enforce Pod Security "restricted".
var restrictedLabels = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}

// restrictedProbe runs a probe pod that Pod Security restricted accepts in ns, which
// enforces it: restricted allows no privileged container, so the pod gets the safe
// sysctls only, and tcp_retries2 keeps the kernel's default in its network namespace.
func restrictedProbe(ctx context.Context, t *testing.T, n *Node, ns string) {
	t.Helper()
	pod := runProbe(ctx, t, n, ns, func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{
			RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
	})
	assert.Empty(t, pod.Spec.InitContainers, "no privileged init container under restricted")
	inPod := readProbeLog(ctx, t, n, pod)
	t.Logf("inside the pod: %v", inPod)
	assert.Equal(t, map[string]string{
		"net.ipv4.tcp_retries2":         "15",
		"net.ipv4.tcp_keepalive_time":   "30",
		"net.ipv4.tcp_keepalive_intvl":  "30",
		"net.ipv4.tcp_keepalive_probes": "5",
	}, inPod)
}

// createNamespace creates a namespace with labels and its default ServiceAccount.
func createNamespace(ctx context.Context, t *testing.T, n *Node, name string, labels map[string]string) *corev1.Namespace {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	require.NoError(t, n.Client.Create(ctx, ns))
	// The ServiceAccount controller makes it too, but pods cannot be created before it exists.
	if err := n.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}}); !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	return ns
}

// namespace creates a namespace opted in to the default policy, waits until the
// webhook is called for it, then adds labels.
func namespace(ctx context.Context, t *testing.T, n *Node, name string, labels map[string]string) string {
	t.Helper()
	ns := createNamespace(ctx, t, n, name, map[string]string{policies.PolicyLabel: "default"})
	// Before the other labels: WaitEffective's probe pod would not pass Pod Security restricted.
	require.NoError(t, localwebhook.WaitEffective(ctx, n.Client, name, 30*time.Second))
	if len(labels) > 0 {
		for k, v := range labels {
			ns.Labels[k] = v
		}
		require.NoError(t, n.Client.Update(ctx, ns))
	}
	return name
}

// runProbe creates a pod on the node whose container prints the probed sysctls, edited
// by edit (if not nil), waits until it runs and returns it as stored then.
func runProbe(ctx context.Context, t *testing.T, n *Node, ns string, edit func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe", Labels: map[string]string{"app": "probe"}},
		Spec:       probeSpec(),
	}
	pod.Spec.NodeName = nodeName
	if edit != nil {
		edit(pod)
	}
	// The webhook reads namespace labels from its informer, a moment behind the API
	// server's Pod Security admission: a namespace labelled just before may still get a
	// pod the webhook judged by its old labels, which Pod Security refuses. A controller
	// would create it again; so does this (bounded: 10 s).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		err := n.Client.Create(ctx, pod.DeepCopy())
		if err == nil || !apierrors.IsForbidden(err) || !time.Now().Before(deadline) {
			require.NoError(t, err)
			break
		}
	}
	t.Cleanup(func() { _ = n.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
	return waitRunning(ctx, t, n, pod)
}

// probeSpec is a pod whose container prints the probed sysctls and waits.
func probeSpec() corev1.PodSpec {
	return corev1.PodSpec{
		AutomountServiceAccountToken:  ptr.To(false),
		TerminationGracePeriodSeconds: ptr.To[int64](1),
		Containers: []corev1.Container{{
			Name: "probe", Image: probeImage, ImagePullPolicy: corev1.PullNever,
			Args: append([]string{"sysctls"}, probed...),
		}},
	}
}

// waitDeploymentPod waits (bounded: a minute) until a pod of d runs, and returns it.
func waitDeploymentPod(ctx context.Context, t *testing.T, n *Node, d *appsv1.Deployment) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		pods := &corev1.PodList{}
		require.NoError(t, n.Client.List(ctx, pods, client.InNamespace(d.Namespace), client.MatchingLabels(d.Spec.Selector.MatchLabels)))
		for i := range pods.Items {
			if pods.Items[i].Status.Phase == corev1.PodRunning {
				return &pods.Items[i]
			}
		}
		require.True(t, time.Now().Before(deadline), "no pod of Deployment %s/%s Running within a minute: %d pods; the kubelet's log: %s",
			d.Namespace, d.Name, len(pods.Items), filepath.Join(n.Dir, "kubelet.log"))
		time.Sleep(time.Second)
	}
}

func readSysctls(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range probed {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		require.NoError(t, err)
		out[name] = strings.TrimSpace(string(b))
	}
	return out
}

func waitRunning(ctx context.Context, t *testing.T, n *Node, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := &corev1.Pod{}
		require.NoError(t, n.Client.Get(ctx, client.ObjectKeyFromObject(pod), got))
		if got.Status.Phase == corev1.PodRunning {
			return got
		}
		require.True(t, time.Now().Before(deadline), "pod %s/%s not Running within a minute: phase %s, %+v; the kubelet's log: %s",
			pod.Namespace, pod.Name, got.Status.Phase, got.Status.ContainerStatuses, filepath.Join(n.Dir, "kubelet.log"))
		time.Sleep(time.Second)
	}
}

// readProbeLog reads the NAME=VALUE lines of the probe container's log (bounded: 30 s).
func readProbeLog(ctx context.Context, t *testing.T, n *Node, pod *corev1.Pod) map[string]string {
	t.Helper()
	path := n.containerLog(pod, pod.Spec.Containers[0].Name)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := map[string]string{}
		for _, l := range logLines(path) {
			if k, v, ok := strings.Cut(l.text, "="); ok {
				got[k] = v
			}
		}
		if len(got) == len(probed) {
			return got
		}
		require.True(t, time.Now().Before(deadline) && ctx.Err() == nil, "the probe's log %s within 30 s: %q", path, proc.Tail(path, 20))
		time.Sleep(200 * time.Millisecond)
	}
}

const (
	release          = "ha-injector"
	releaseNamespace = "ha-injector-system"
)

// installChart installs charts/ha-injector as `helm install --wait` would, with the
// node's image and certs.mode=selfManaged (no cert-manager runs here), its hooks too (the
// CRD Job runs `ha-injector crds apply` in a pod), and waits until the API server calls
// the webhook's pods for an opted-in namespace.
// helmConfiguration is the Helm SDK's configuration for the release on n.
func helmConfiguration(t *testing.T, n *Node) *action.Configuration {
	t.Helper()
	kubeconfig := n.Kubeconfig
	cacheDir, ns := filepath.Join(n.Dir, "helm-cache"), releaseNamespace
	getter := genericclioptions.NewConfigFlags(false)
	getter.KubeConfig, getter.CacheDir, getter.Namespace = &kubeconfig, &cacheDir, &ns
	helm := action.NewConfiguration(action.ConfigurationSetLogger(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	require.NoError(t, helm.Init(getter, ns, "secret"))
	return helm
}

// chartValues are the release's values: the image built without Docker, self-managed
// certificates (webhook mode).
func chartValues() map[string]any {
	repo, tag, _ := strings.Cut(ourImage, ":")
	return map[string]any{
		"image":       map[string]any{"repository": repo, "tag": tag, "pullPolicy": "Never"},
		"certManager": map[string]any{"enabled": false},
		"certs":       map[string]any{"mode": "selfManaged"},
	}
}

func installChart(ctx context.Context, t *testing.T, n *Node, root string) {
	t.Helper()
	helm := helmConfiguration(t, n)
	chrt, err := chartrender.Load(root)
	require.NoError(t, err)
	values := chartValues()
	install := action.NewInstall(helm)
	install.ReleaseName, install.Namespace, install.CreateNamespace = release, releaseNamespace, true
	install.WaitStrategy = kube.StatusWatcherStrategy
	install.Timeout = 3 * time.Minute
	start := time.Now()
	r, err := install.RunWithContext(ctx, chrt, values)
	if err != nil {
		logReleasePods(ctx, t, n)
	}
	require.NoError(t, err, "helm install")
	rel := r.(*releasev1.Release)
	require.Equal(t, rcommon.StatusDeployed, rel.Info.Status, rel.Info.Description)
	t.Logf("helm install with its hooks, waited for: %v", time.Since(start).Round(time.Second))

	// Every webhook pod Ready, and the API server calls them.
	deploy := &appsv1.Deployment{}
	require.NoError(t, n.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: release}, deploy))
	assert.Equal(t, *deploy.Spec.Replicas, deploy.Status.ReadyReplicas, "every webhook replica Ready")
	if !t.Run("webhook effective", func(t *testing.T) { namespace(ctx, t, n, "webhook-effective", nil) }) {
		logReleasePods(ctx, t, n)
		hooks := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := n.Client.Get(ctx, client.ObjectKey{Name: release}, hooks); err == nil {
			for _, w := range hooks.Webhooks {
				t.Logf("webhook %s: caBundle %d bytes, service %+v", w.Name, len(w.ClientConfig.CABundle), w.ClientConfig.Service)
			}
		}
		eps := &corev1.EndpointsList{}
		_ = n.Client.List(ctx, eps, client.InNamespace(releaseNamespace))
		for _, e := range eps.Items {
			t.Logf("endpoints %s: %+v", e.Name, e.Subsets)
		}
		t.FailNow()
	}
}

// logReleasePods logs, for a failure's message, the state of the release's pods and
// containers and the end of each container's log.
func logReleasePods(ctx context.Context, t *testing.T, n *Node) {
	t.Helper()
	pods := &corev1.PodList{}
	_ = n.Client.List(ctx, pods, client.InNamespace(releaseNamespace))
	for _, p := range pods.Items {
		t.Logf("pod %s on %q: %s", p.Name, p.Spec.NodeName, p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			switch {
			case c.State.Terminated != nil:
				s := c.State.Terminated
				t.Logf("  container %s: exit %d %s: %s", c.Name, s.ExitCode, s.Reason, s.Message)
			case c.State.Waiting != nil:
				t.Logf("  container %s: waiting %s: %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message)
			}
			t.Logf("  its log:\n%s", proc.Tail(n.containerLog(&p, c.Name), 15))
		}
	}
}

type logLine struct {
	time time.Time
	text string
}

// logLines reads a container's log as the kubelet writes it (CRI format: TIME STREAM
// TAG TEXT); nil when there is none yet.
func logLines(path string) []logLine {
	data, _ := os.ReadFile(path)
	var lines []logLine
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) < 4 {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			continue
		}
		lines = append(lines, logLine{time: at, text: f[3]})
	}
	return lines
}
