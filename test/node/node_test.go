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

// TestSysctlsInsideARealPod: a pod created in an opted-in namespace, through the webhook,
// runs on a real kubelet; the ha-sysctl init container succeeds, and the app container
// reads the policy's values from /proc/sys (tcp_retries2 from the init container, the
// keepalive ones from the pod's securityContext), while the host keeps its own.
func TestSysctlsInsideARealPod(t *testing.T) {
	n := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	hostBefore := readSysctls(t, "")

	certDir := filepath.Join(n.Dir, "webhook-certs")
	ca, err := localwebhook.ServingCert(certDir, "ha-injector-node-ca")
	require.NoError(t, err)
	srv, err := localwebhook.StartWith(n.Config, certDir, func(cfg *webhook.Config) { cfg.SysctlImage = ourImage })
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	require.NoError(t, localwebhook.Install(ctx, n.Client, root, localwebhook.ProvidedValues(nil), srv.URL(), ca.PEM, true))

	ns := "opted-in"
	require.NoError(t, n.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{policies.PolicyLabel: "default"}}}))
	require.NoError(t, n.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}))
	require.NoError(t, localwebhook.WaitEffective(ctx, n.Client, ns, 30*time.Second))

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app", Labels: map[string]string{"app": "probe"}},
		Spec: corev1.PodSpec{
			NodeName:                     nodeName,
			AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{
				Name: "probe", Image: probeImage, ImagePullPolicy: corev1.PullNever,
				Args: append([]string{"sysctls"}, probed...),
			}},
		},
	}
	require.NoError(t, n.Client.Create(ctx, pod))
	require.NotEmpty(t, pod.Spec.InitContainers, "the webhook injected the ha-sysctl init container")
	running := waitRunning(ctx, t, n, pod)
	for _, s := range running.Status.InitContainerStatuses {
		require.NotNil(t, s.State.Terminated, "init container %s finished", s.Name)
		assert.Equal(t, int32(0), s.State.Terminated.ExitCode, "init container %s: %s", s.Name, s.State.Terminated.Message)
	}

	inPod := readProbeLog(ctx, t, n, running)
	t.Logf("inside the pod: %v; on the host: %v", inPod, hostBefore)
	assert.Equal(t, map[string]string{
		"net.ipv4.tcp_retries2":         "9",
		"net.ipv4.tcp_keepalive_time":   "30",
		"net.ipv4.tcp_keepalive_intvl":  "30",
		"net.ipv4.tcp_keepalive_probes": "5",
	}, inPod)
	assert.Equal(t, hostBefore, readSysctls(t, ""), "the host's values are unchanged")

	require.NoError(t, n.Client.Delete(ctx, running, client.GracePeriodSeconds(0)))
}

func readSysctls(t *testing.T, _ string) map[string]string {
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
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got := &corev1.Pod{}
		require.NoError(t, n.Client.Get(ctx, client.ObjectKeyFromObject(pod), got))
		if got.Status.Phase == corev1.PodRunning {
			return got
		}
		require.True(t, time.Now().Before(deadline), "pod %s/%s not Running within 2 minutes: phase %s, %+v; the kubelet's log: %s",
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
