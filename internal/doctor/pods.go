package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// hookComponent is the app.kubernetes.io/component label of the chart's CRD hook Job's pod.
const hookComponent = "crds-upgrade"

// pullReasons are the reasons the kubelet gives a container waiting for an image it
// could not pull (kubelet's images package and the CRI's errors).
var pullReasons = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
	"RegistryUnavailable": true, "SignatureValidationFailed": true,
}

// startReasons are the reasons of a container that was pulled but cannot run.
var startReasons = map[string]bool{
	"CrashLoopBackOff": true, "CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// jobFailureReasons are the reasons the Job controller records when it gives a Job up.
var jobFailureReasons = map[string]bool{"BackoffLimitExceeded": true, "DeadlineExceeded": true}

// checkReleasePods: no pod of the release namespace (the webhook's, the CRD hook Job's)
// is stuck on an image it cannot pull, a container that fails or no node to run on. Helm
// only says it timed out waiting for them; this says why, with the image and the error.
// After Helm deleted a failed hook, the kubelet's and the Job controller's warnings
// about it are still Events of the namespace (for an hour, the API server's default
// --event-ttl), and are reported the same way.
func (d *doctor) checkReleasePods(ctx context.Context) {
	const name = "release-pods"
	ns := d.opts.ReleaseNamespace
	if ns == "" && d.install != nil {
		ns = d.install.Namespace
	}
	if ns == "" {
		// No installation found and none named: the webhook-configuration check failed
		// and says to pass --release-namespace after a failed install.
		return
	}
	var pods corev1.PodList
	if err := d.c.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		d.report.add(cannotRead(name, "pods in "+ns, err))
		return
	}
	var items []string
	pull := false
	existing := map[string]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		existing[p.Name] = true
		problems, pulling := podProblems(p)
		pull = pull || pulling
		for _, pr := range problems {
			items = append(items, describePod(p)+": "+pr)
		}
	}
	var events corev1.EventList
	if err := d.c.List(ctx, &events, client.InNamespace(ns)); err != nil {
		d.report.add(cannotRead(name, "events in "+ns, err))
		return
	}
	gone, pulling := goneObjectWarnings(events.Items, existing, func(job string) bool { return d.jobExists(ctx, ns, job) })
	items = append(items, gone...)
	pull = pull || pulling
	if len(items) == 0 {
		d.report.add(Check{Name: name, Status: OK, Message: fmt.Sprintf("%s in %s, none waiting on an image, a failing container or a node", count(len(pods.Items), "pod"), ns)})
		return
	}
	fix := "kubectl -n " + ns + " describe pod POD; kubectl -n " + ns + " logs POD -c CONTAINER"
	if pull {
		fix = "the nodes cannot pull that image: check the chart's image.repository, image.tag or image.digest (docs/install.md), " +
			"that the tag was pushed for the nodes' architecture, and imagePullSecrets for a private registry; then helm uninstall and install again. " +
			"For another failure: " + fix
	}
	c := Check{Name: name, Status: Fail, Message: items[0], Fix: fix}
	if len(items) > 1 {
		c.Message, c.Items = fmt.Sprintf("%d problems, the first: %s", len(items), items[0]), items
	}
	d.report.add(c)
}

// count is "1 pod", "2 pods".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// jobExists reports whether the Job is still there (a read error counts as there: its
// events are then not reported as those of a deleted Job).
func (d *doctor) jobExists(ctx context.Context, ns, job string) bool {
	err := d.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: job}, &batchv1.Job{})
	return err == nil || !apierrors.IsNotFound(err)
}

// podProblems says what keeps a pod from running or completing, one line per container
// (and one for a pod no node takes), and whether one of them is an image pull.
func podProblems(p *corev1.Pod) (problems []string, pull bool) {
	images := map[string]string{}
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		images[c.Name] = c.Image
	}
	statuses := append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, s := range statuses {
		image := images[s.Name]
		if image == "" {
			image = s.Image
		}
		switch {
		case s.State.Waiting != nil && pullReasons[s.State.Waiting.Reason]:
			pull = true
			problems = append(problems, fmt.Sprintf("container %s cannot pull image %q: %s", s.Name, image, reasonMessage(s.State.Waiting.Reason, s.State.Waiting.Message)))
		case s.State.Waiting != nil && startReasons[s.State.Waiting.Reason]:
			line := fmt.Sprintf("container %s (image %q): %s", s.Name, image, reasonMessage(s.State.Waiting.Reason, s.State.Waiting.Message))
			if t := s.LastTerminationState.Terminated; t != nil {
				line += "; last exit: " + exitMessage(t)
			}
			problems = append(problems, line)
		case s.State.Terminated != nil && s.State.Terminated.ExitCode != 0:
			problems = append(problems, fmt.Sprintf("container %s (image %q) failed: %s", s.Name, image, exitMessage(s.State.Terminated)))
		}
	}
	if p.Status.Phase == corev1.PodPending {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				problems = append(problems, "no node takes it: "+c.Message)
			}
		}
	}
	return problems, pull
}

// goneObjectWarnings are the warnings kept as Events about pods and Jobs that no longer
// exist: an image the kubelet failed to pull, a Job the Job controller gave up. Only the
// latest of each kind per object is kept, and whether one is an image pull.
func goneObjectWarnings(events []corev1.Event, pods map[string]bool, jobExists func(string) bool) ([]string, bool) {
	sort.SliceStable(events, func(i, j int) bool { return eventTime(&events[i]) < eventTime(&events[j]) })
	latest := map[string]string{}
	pull := false
	for i := range events {
		e := &events[i]
		if e.Type != corev1.EventTypeWarning {
			continue
		}
		o := e.InvolvedObject
		switch {
		case o.Kind == "Pod" && e.Reason == "Failed" && strings.HasPrefix(e.Message, "Failed to pull image") && !pods[o.Name]:
			latest["pod "+o.Name] = e.Message
			pull = true
		case o.Kind == "Job" && jobFailureReasons[e.Reason] && !jobExists(o.Name):
			latest["Job "+o.Name] = e.Reason + ": " + e.Message
		}
	}
	var out []string
	for obj, msg := range latest {
		out = append(out, fmt.Sprintf("%s (deleted since, seen in its events): %s", obj, msg))
	}
	sort.Strings(out)
	return out, pull
}

func eventTime(e *corev1.Event) string {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.UTC().Format("2006-01-02T15:04:05.000000Z")
	case !e.EventTime.IsZero():
		return e.EventTime.UTC().Format("2006-01-02T15:04:05.000000Z")
	}
	return e.CreationTimestamp.UTC().Format("2006-01-02T15:04:05.000000Z")
}

// describePod names a pod and what runs it: its Job (the CRD hook) or the webhook.
func describePod(p *corev1.Pod) string {
	s := "pod " + p.Name
	for _, o := range p.OwnerReferences {
		if o.Kind == "Job" {
			s += " of Job " + o.Name
		}
	}
	if p.Labels["app.kubernetes.io/component"] == hookComponent {
		s += " (the chart's CRD hook)"
	}
	return s
}

func reasonMessage(reason, message string) string {
	if message == "" {
		return reason
	}
	return reason + ": " + message
}

func exitMessage(t *corev1.ContainerStateTerminated) string {
	s := fmt.Sprintf("exit code %d", t.ExitCode)
	if t.Reason != "" {
		s += " (" + t.Reason + ")"
	}
	if m := strings.TrimSpace(t.Message); m != "" {
		if len(m) > 300 {
			m = "…" + m[len(m)-300:]
		}
		s += ": " + m
	}
	return s
}
