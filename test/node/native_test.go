//go:build node

package node

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
)

// nativeMode switches the release to native mode (helm upgrade with
// admission.mode=native) and runs pods on the node again: the webhook
// configuration is gone, the API server injects each pod itself from the chart's
// MutatingAdmissionPolicy, and serve, as a controller, binds the default
// HAPolicy. The sysctls read inside the pods are the webhook's.
func nativeMode(ctx context.Context, t *testing.T, n *Node, root string) {
	chrt, err := chartrender.Load(root)
	require.NoError(t, err)
	values := chartValues()
	values["admission"] = map[string]any{"mode": "native"}
	upgrade := action.NewUpgrade(helmConfiguration(t, n))
	upgrade.Namespace = releaseNamespace
	upgrade.WaitStrategy = kube.StatusWatcherStrategy
	upgrade.Timeout = 3 * time.Minute
	start := time.Now()
	_, err = upgrade.RunWithContext(ctx, release, chrt, values)
	if err != nil {
		logReleasePods(ctx, t, n)
	}
	require.NoError(t, err, "helm upgrade to native mode")
	t.Logf("helm upgrade to native mode, waited for: %v", time.Since(start).Round(time.Second))

	err = n.Client.Get(ctx, client.ObjectKey{Name: release}, &admissionregistrationv1.MutatingWebhookConfiguration{})
	assert.True(t, apierrors.IsNotFound(err), "no webhook configuration in native mode: %v", err)
	require.NoError(t, n.Client.Get(ctx, client.ObjectKey{Name: release}, &admissionregistrationv1.MutatingAdmissionPolicy{}), "the chart's MutatingAdmissionPolicy")

	t.Run("opted-in Deployment", func(t *testing.T) {
		hostBefore := readSysctls(t)
		ns := namespace(ctx, t, n, "native-opted-in", nil)
		d := workloads.Deployment(ns, "probe", workloads.Replicas(1), workloads.PodSpec(probeSpec()))
		require.NoError(t, n.Client.Create(ctx, d))
		assert.NotContains(t, d.Labels, policies.InjectedLabel, "native mode leaves the Deployment as it is")
		assert.Empty(t, d.Spec.Template.Spec.InitContainers)
		pod := waitDeploymentPod(ctx, t, n, d)
		rec := policies.ReadRecord(pod.Annotations)
		require.NotNil(t, rec, "the pod carries native mode's record")
		assert.True(t, rec.Native, "written by the API server's admission policy")
		require.Len(t, pod.Spec.InitContainers, 1, "the ha-sysctl init container")
		s := pod.Status.InitContainerStatuses[0]
		require.NotNil(t, s.State.Terminated, "init container %s finished", s.Name)
		assert.Equal(t, int32(0), s.State.Terminated.ExitCode, "init container %s: %s", s.Name, s.State.Terminated.Message)
		inPod := readProbeLog(ctx, t, n, pod)
		t.Logf("inside the pod: %v; on the host: %v", inPod, hostBefore)
		assert.Equal(t, injectedSysctls, inPod)
		assert.Equal(t, hostBefore, readSysctls(t), "the host's values are unchanged")
		assert.Equal(t, ptr.To[int64](30), tolerationSeconds(pod, corev1.TaintNodeUnreachable), "the unreachable toleration shortened")
	})

	t.Run("restricted namespace", func(t *testing.T) {
		restrictedProbe(ctx, t, n, namespace(ctx, t, n, "native-restricted", restrictedLabels))
	})
}

// tolerationSeconds is the seconds of pod's first NoExecute toleration of key.
func tolerationSeconds(pod *corev1.Pod, key string) *int64 {
	for _, tol := range pod.Spec.Tolerations {
		if tol.Key == key && tol.Effect == corev1.TaintEffectNoExecute {
			return tol.TolerationSeconds
		}
	}
	return nil
}
