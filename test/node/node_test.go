//go:build node

package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/controlplane"
	"github.com/ha-injector/ha-injector/internal/localwebhook"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/webhook"
)

var probed = []string{"net.ipv4.tcp_retries2", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}

// TestRealNode runs pods on a real kubelet, created through the webhook (serve in this
// process, called by the API server through the chart's webhook configuration).
func TestRealNode(t *testing.T) {
	n := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)

	certDir := filepath.Join(n.Dir, "webhook-certs")
	ca, err := localwebhook.ServingCert(certDir, "ha-injector-node-ca")
	require.NoError(t, err)
	srv, err := localwebhook.StartWith(n.Config, certDir, func(cfg *webhook.Config) { cfg.SysctlImage = ourImage })
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	require.NoError(t, localwebhook.Install(ctx, n.Client, root, localwebhook.ProvidedValues(nil), srv.URL(), ca.PEM, true))

	// tcp_retries2 from the init container, the keepalive ones from the pod's
	// securityContext; the host keeps its own.
	t.Run("opted-in pod", func(t *testing.T) {
		hostBefore := readSysctls(t)
		pod := runProbe(ctx, t, n, namespace(ctx, t, n, "opted-in", nil), nil)
		require.Len(t, pod.Spec.InitContainers, 1, "the webhook injected the ha-sysctl init container")
		s := pod.Status.InitContainerStatuses[0]
		require.NotNil(t, s.State.Terminated, "init container %s finished", s.Name)
		assert.Equal(t, int32(0), s.State.Terminated.ExitCode, "init container %s: %s", s.Name, s.State.Terminated.Message)
		inPod := readProbeLog(ctx, t, n, pod)
		t.Logf("inside the pod: %v; on the host: %v", inPod, hostBefore)
		assert.Equal(t, map[string]string{
			"net.ipv4.tcp_retries2":         "9",
			"net.ipv4.tcp_keepalive_time":   "30",
			"net.ipv4.tcp_keepalive_intvl":  "30",
			"net.ipv4.tcp_keepalive_probes": "5",
		}, inPod)
		assert.Equal(t, hostBefore, readSysctls(t), "the host's values are unchanged")
	})

	// Pod Security restricted allows no privileged container: the pod gets the safe
	// sysctls only, and tcp_retries2 keeps the kernel's default in its network namespace.
	t.Run("restricted namespace", func(t *testing.T) {
		ns := namespace(ctx, t, n, "restricted", map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
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
}

// namespace creates an opted-in namespace (default policy) with labels and its
// default ServiceAccount (no controller-manager runs to create it), and waits until
// the webhook is called for it.
func namespace(ctx context.Context, t *testing.T, n *Node, name string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{policies.PolicyLabel: "default"}}}
	require.NoError(t, n.Client.Create(ctx, ns))
	require.NoError(t, n.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}}))
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
		Spec: corev1.PodSpec{
			NodeName:                      nodeName,
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "probe", Image: probeImage, ImagePullPolicy: corev1.PullNever,
				Args: append([]string{"sysctls"}, probed...),
			}},
		},
	}
	if edit != nil {
		edit(pod)
	}
	require.NoError(t, n.Client.Create(ctx, pod))
	t.Cleanup(func() { _ = n.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
	return waitRunning(ctx, t, n, pod)
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

// readProbeLog reads the probe container's log from the kubelet's pod logs folder
// (podLogsDir/NAMESPACE_NAME_UID/CONTAINER/0.log, CRI format: TIME STREAM TAG LINE).
func readProbeLog(ctx context.Context, t *testing.T, n *Node, pod *corev1.Pod) map[string]string {
	t.Helper()
	path := filepath.Join(n.Dir, "kubelet", "pod-logs", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID), "probe", "0.log")
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		got := map[string]string{}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.SplitN(line, " ", 4)
			if len(f) == 4 {
				if k, v, ok := strings.Cut(f[3], "="); ok {
					got[k] = v
				}
			}
		}
		if len(got) == len(probed) {
			return got
		}
		require.True(t, time.Now().Before(deadline) && ctx.Err() == nil, "the probe's log %s within 30 s: %q", path, data)
		time.Sleep(200 * time.Millisecond)
	}
}
