package doctor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/internal/doctor"
)

// The image and error the kubelet reports for an image that does not exist: containerd's
// CRI error, as the kubelet puts it in the waiting state (ErrImagePull: the error
// itself; ImagePullBackOff: "Back-off pulling image %q: " and the previous error, from
// pkg/kubelet/images) and in its Failed event ("Failed to pull image %q: %v").
const (
	missingImage = "ghcr.io/ha-injector/ha-injector:0.0.0-missing"
	pullError    = `rpc error: code = NotFound desc = failed to pull and unpack image "` + missingImage + `": failed to resolve reference "` + missingImage + `": ` + missingImage + `: not found`
)

// TestReleasePods: the pods of a failing install, their status written through the
// status subresource as the kubelet writes it, and the Events the kubelet and the Job
// controller leave: doctor names the pod, the image and the error of each, before and
// after Helm deleted the failed hook, and says nothing when the pods run.
func TestReleasePods(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	cs, err := kubernetes.NewForConfig(f.cfg)
	require.NoError(t, err)
	ns := "ha-pods"
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	opts := doctor.Options{ReleaseNamespace: ns}
	check := func(t *testing.T) doctor.Check {
		t.Helper()
		r := f.run(t, opts)
		t.Log("\n" + text(r))
		return one(t, r, "release-pods")
	}

	c := check(t)
	assert.Equal(t, doctor.OK, c.Status)
	assert.Equal(t, "0 pods in ha-pods, none waiting on an image, a failing container or a node", c.Message)

	// The chart's CRD hook: its Job, and the pod the Job controller made of its template.
	job, err := cs.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "ha-injector-crds"},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app.kubernetes.io/component": "crds-upgrade"}},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "crds", Image: missingImage, Args: []string{"crds", "apply"}}}},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	hookPod := createPod(t, cs, ns, "ha-injector-crds-x7k2q", job, missingImage)

	t.Run("a hook pod that cannot pull its image", func(t *testing.T) {
		writeStatus(t, cs, hookPod, func(s *corev1.PodStatus) {
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: "crds", Image: missingImage,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: pullError}}}}
		})
		c := check(t)
		assert.Equal(t, doctor.Fail, c.Status)
		assert.Equal(t, `pod ha-injector-crds-x7k2q of Job ha-injector-crds (the chart's CRD hook): container crds cannot pull image "`+missingImage+`": ErrImagePull: `+pullError, c.Message)
		assert.Contains(t, c.Fix, "the nodes cannot pull that image")

		writeStatus(t, cs, hookPod, func(s *corev1.PodStatus) {
			s.ContainerStatuses[0].State.Waiting = &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff",
				Message: fmt.Sprintf("Back-off pulling image %q: ErrImagePull: %s", missingImage, pullError)}
		})
		c = check(t)
		assert.Equal(t, doctor.Fail, c.Status)
		assert.Contains(t, c.Message, `container crds cannot pull image "`+missingImage+`": ImagePullBackOff: Back-off pulling image`)
		assert.Contains(t, c.Message, "not found", "the registry's answer")
	})

	t.Run("a webhook pod whose container exits", func(t *testing.T) {
		p := createPod(t, cs, ns, "ha-injector-5d8f7-abcde", nil, "ghcr.io/ha-injector/ha-injector:0.1.0")
		writeStatus(t, cs, p, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodRunning
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: "crds", Image: "ghcr.io/ha-injector/ha-injector:0.1.0", RestartCount: 3,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s restarting failed container=crds pod=ha-injector-5d8f7-abcde_ha-pods"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error",
					Message: `serve: reading the serving certificate: open /tmp/k8s-webhook-server/serving-certs/tls.crt: no such file or directory`}}}}
		})
		t.Cleanup(func() {
			_ = cs.CoreV1().Pods(ns).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		})
		c := check(t)
		assert.Equal(t, doctor.Fail, c.Status)
		require.Len(t, c.Items, 2, "the hook's pod and this one")
		assert.Contains(t, c.Items, `pod ha-injector-5d8f7-abcde: container crds (image "ghcr.io/ha-injector/ha-injector:0.1.0"): CrashLoopBackOff: back-off 40s restarting failed container=crds pod=ha-injector-5d8f7-abcde_ha-pods; last exit: exit code 1 (Error): serve: reading the serving certificate: open /tmp/k8s-webhook-server/serving-certs/tls.crt: no such file or directory`)
	})

	t.Run("a pod no node takes", func(t *testing.T) {
		p := createPod(t, cs, ns, "ha-injector-5d8f7-fghij", nil, "ghcr.io/ha-injector/ha-injector:0.1.0")
		writeStatus(t, cs, p, func(s *corev1.PodStatus) {
			s.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
				Message: "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."}}
		})
		t.Cleanup(func() {
			_ = cs.CoreV1().Pods(ns).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		})
		assert.Contains(t, check(t).Items, "pod ha-injector-5d8f7-fghij: no node takes it: 0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.")
	})

	t.Run("after Helm deleted the failed hook, its events", func(t *testing.T) {
		now := metav1.NewTime(time.Now())
		event := func(name string, obj corev1.ObjectReference, component, reason, message string) {
			_, err := cs.CoreV1().Events(ns).Create(ctx, &corev1.Event{
				ObjectMeta: metav1.ObjectMeta{Name: name}, InvolvedObject: obj, Type: corev1.EventTypeWarning, Reason: reason, Message: message,
				Source: corev1.EventSource{Component: component}, FirstTimestamp: now, LastTimestamp: now, Count: 1,
			}, metav1.CreateOptions{})
			require.NoError(t, err)
		}
		podRef := corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: hookPod.Name, UID: hookPod.UID, APIVersion: "v1", FieldPath: "spec.containers{crds}"}
		event("pull-failed", podRef, "kubelet", "Failed", fmt.Sprintf("Failed to pull image %q: %s", missingImage, pullError))
		event("err-image-pull", podRef, "kubelet", "Failed", "Error: ErrImagePull")
		event("job-deadline", corev1.ObjectReference{Kind: "Job", Namespace: ns, Name: job.Name, UID: job.UID, APIVersion: "batch/v1"},
			"job-controller", "DeadlineExceeded", "Job was active longer than specified deadline")

		// While the pod and the Job exist, their status speaks, not their events.
		c := check(t)
		assert.Empty(t, c.Items, "the pod's status only")
		assert.Contains(t, c.Message, "ImagePullBackOff")

		// Helm's hook-failed policy deletes the Job (background: the garbage collector,
		// not running here, would delete its pod next, as done here by hand).
		require.NoError(t, cs.BatchV1().Jobs(ns).Delete(ctx, job.Name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}))
		require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, hookPod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
		c = check(t)
		assert.Equal(t, doctor.Fail, c.Status)
		assert.Equal(t, []string{
			"Job ha-injector-crds (deleted since, seen in its events): DeadlineExceeded: Job was active longer than specified deadline",
			fmt.Sprintf("pod ha-injector-crds-x7k2q (deleted since, seen in its events): Failed to pull image %q: %s", missingImage, pullError),
		}, c.Items)
		assert.Contains(t, c.Fix, "the nodes cannot pull that image")
		require.NoError(t, cs.CoreV1().Events(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}))
	})

	t.Run("pods that run", func(t *testing.T) {
		p := createPod(t, cs, ns, "ha-injector-5d8f7-klmno", nil, "ghcr.io/ha-injector/ha-injector:0.1.0")
		writeStatus(t, cs, p, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodRunning
			s.ContainerStatuses = []corev1.ContainerStatus{{Name: "crds", Image: "ghcr.io/ha-injector/ha-injector:0.1.0", Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}
		})
		c := check(t)
		assert.Equal(t, doctor.OK, c.Status, c.Message)
		assert.Equal(t, "1 pod in ha-pods, none waiting on an image, a failing container or a node", c.Message)
	})
}

// createPod creates a pod of one container named crds, owned by job when given.
func createPod(t *testing.T, cs kubernetes.Interface, ns, name string, job *batchv1.Job, image string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "crds", Image: image}}},
	}
	if job != nil {
		p.Labels = job.Spec.Template.Labels
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)}}
	}
	p, err := cs.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	require.NoError(t, err)
	return p
}

// writeStatus changes a pod's status through the status subresource, as the kubelet does.
func writeStatus(t *testing.T, cs kubernetes.Interface, p *corev1.Pod, change func(*corev1.PodStatus)) {
	t.Helper()
	cur, err := cs.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
	require.NoError(t, err)
	if cur.Status.Phase == "" {
		cur.Status.Phase = corev1.PodPending
	}
	change(&cur.Status)
	_, err = cs.CoreV1().Pods(p.Namespace).UpdateStatus(context.Background(), cur, metav1.UpdateOptions{})
	require.NoError(t, err)
}
