package podsecurity

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/failover"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/examples"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

// admissionConfiguration makes Pod Security enforce "baseline" (latest) in every
// namespace without a pod-security.kubernetes.io/enforce label, as a hardened cluster
// (or a managed one with a default Pod Security level) does. audit and warn stay at
// their default, privileged: only enforcement is judged here.
const admissionConfiguration = `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: PodSecurity
    configuration:
      apiVersion: pod-security.admission.config.k8s.io/v1
      kind: PodSecurityConfiguration
      defaults:
        enforce: baseline
        enforce-version: latest
      exemptions:
        usernames: []
        runtimeClasses: []
        namespaces: []
`

// keepaliveSysctls are the default policy's sysctls that Pod Security baseline allows in
// a pod's securityContext (its safe set since Kubernetes 1.29); tcp_retries2, the
// fourth, is not safe and can only be set by the privileged init container.
var keepaliveSysctls = map[string]string{
	"net.ipv4.tcp_keepalive_time":   "30",
	"net.ipv4.tcp_keepalive_intvl":  "30",
	"net.ipv4.tcp_keepalive_probes": "5",
}

// probeNamespace is where the tests wait for a new webhook configuration to take effect:
// opted in and labelled privileged, so the probe pod is admitted whatever serve injects.
const probeNamespace = "probe"

// cluster is the control plane both cases share: starting it is most of the test's
// time, and the cases differ only in serve's flag and in their namespace.
type cluster struct {
	root   string
	config *rest.Config
	client client.Client
	// dir holds the controller manager's log.
	dir string
	kcm *proc.Process
}

func TestClusterDefaultBaseline(t *testing.T) {
	c := startCluster(t)

	t.Run("serve left at privileged: the ReplicaSet cannot create a pod, rejected for the privileged ha-sysctl", func(t *testing.T) {
		c.serve(t, "privileged")
		ns := c.namespace(t, "flag-privileged")
		dep := c.createWebServer(t, ns)

		// Admitted and mutated: Pod Security does not enforce on a template.
		require.NotEmpty(t, dep.Spec.Template.Spec.InitContainers, "the Deployment's template should carry the init container")
		assert.Equal(t, policies.SysctlContainerName, dep.Spec.Template.Spec.InitContainers[0].Name)

		cond := c.waitDeployment(t, dep, "a ReplicaFailure condition", func(d *appsv1.Deployment) bool {
			return deploymentCondition(d, appsv1.DeploymentReplicaFailure) != nil
		})
		require.NotNil(t, cond)
		failure := deploymentCondition(cond, appsv1.DeploymentReplicaFailure)
		t.Logf("Deployment condition ReplicaFailure: reason %s, message %q", failure.Reason, failure.Message)
		assert.Equal(t, corev1.ConditionTrue, failure.Status)
		assert.Equal(t, "FailedCreate", failure.Reason)
		assert.Contains(t, failure.Message, `violates PodSecurity "baseline:latest"`)
		assert.Contains(t, failure.Message, fmt.Sprintf(`privileged (container %q must not set securityContext.privileged=true)`, policies.SysctlContainerName))

		var pods corev1.PodList
		require.NoError(t, c.client.List(context.Background(), &pods, client.InNamespace(ns)))
		assert.Empty(t, pods.Items, "Pod Security should have rejected every pod")

		event := c.waitEvent(t, ns, "FailedCreate")
		t.Logf("event %s on %s %s: %q", event.Reason, event.InvolvedObject.Kind, event.InvolvedObject.Name, event.Message)
		assert.Equal(t, "ReplicaSet", event.InvolvedObject.Kind)
		assert.Contains(t, event.Message, `violates PodSecurity "baseline:latest"`)
		assert.Contains(t, event.Message, fmt.Sprintf("container %q must not set securityContext.privileged=true", policies.SysctlContainerName))
	})

	t.Run("serve told baseline: every replica is created, with the keepalive sysctls in its securityContext", func(t *testing.T) {
		c.serve(t, "baseline")
		ns := c.namespace(t, "flag-baseline")
		dep := c.createWebServer(t, ns)
		// Every pod would be rejected: no point waiting for the ReplicaSet.
		for _, ic := range dep.Spec.Template.Spec.InitContainers {
			require.NotEqual(t, policies.SysctlContainerName, ic.Name, "no ha-sysctl init container where the cluster enforces baseline")
		}

		// Settled: the controller has seen the latest spec and counts every replica,
		// which it only does once each pod was created.
		rs := c.waitReplicaSet(t, dep)
		want := *dep.Spec.Replicas
		assert.Equal(t, want, rs.Status.Replicas)
		assert.Nil(t, replicaSetCondition(rs, appsv1.ReplicaSetReplicaFailure), "the ReplicaSet should have created every pod")

		d := c.waitDeployment(t, dep, "every replica counted", func(d *appsv1.Deployment) bool {
			return d.Status.ObservedGeneration >= d.Generation && d.Status.Replicas == want
		})
		assert.Nil(t, deploymentCondition(d, appsv1.DeploymentReplicaFailure))

		var pods corev1.PodList
		require.NoError(t, c.client.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels(dep.Spec.Selector.MatchLabels)))
		require.Len(t, pods.Items, int(want))
		for _, pod := range pods.Items {
			got := map[string]string{}
			if sc := pod.Spec.SecurityContext; sc != nil {
				for _, s := range sc.Sysctls {
					got[s.Name] = s.Value
				}
			}
			assert.Equal(t, keepaliveSysctls, got, "pod %s: securityContext.sysctls", pod.Name)
			for _, ctr := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
				assert.NotEqual(t, policies.SysctlContainerName, ctr.Name, "pod %s", pod.Name)
				if sc := ctr.SecurityContext; sc != nil && sc.Privileged != nil {
					assert.False(t, *sc.Privileged, "pod %s: container %s is privileged", pod.Name, ctr.Name)
				}
			}
		}

		var events corev1.EventList
		require.NoError(t, c.client.List(context.Background(), &events, client.InNamespace(ns)))
		for _, e := range events.Items {
			assert.NotEqual(t, "FailedCreate", e.Reason, "event on %s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
		}
	})

	t.Run("a namespace raised to baseline after its Deployment was injected: replacement pods are created, without the privileged ha-sysctl", func(t *testing.T) {
		raisedPodSecurity(t, c)
	})
}

// raisedPodSecurity: a namespace that allowed privileged pods when its Deployment was
// injected is raised to baseline. The template keeps the privileged ha-sysctl (no rollout
// is started), but each replacement pod comes to the webhook with it, as the
// ReplicaSet's template holds it and with the token mount the ServiceAccount plugin
// added: the webhook recognises its own container and removes it, so Pod Security
// admits the pod.
func raisedPodSecurity(t *testing.T, c *cluster) {
	c.serve(t, "baseline")
	ctx := context.Background()
	ns := c.namespaceWith(t, "raised", map[string]string{policies.PodSecurityEnforceLabel: "privileged"})
	dep := c.createWebServer(t, ns)
	require.NotEmpty(t, dep.Spec.Template.Spec.InitContainers)
	require.Equal(t, policies.SysctlContainerName, dep.Spec.Template.Spec.InitContainers[0].Name)
	c.waitReplicaSet(t, dep)

	var before corev1.PodList
	require.NoError(t, c.client.List(ctx, &before, client.InNamespace(ns), client.MatchingLabels(dep.Spec.Selector.MatchLabels)))
	require.Len(t, before.Items, int(*dep.Spec.Replicas))
	first := before.Items[0]
	require.Equal(t, policies.SysctlContainerName, first.Spec.InitContainers[0].Name, "created while privileged pods were allowed")
	hasToken := false
	for _, m := range first.Spec.InitContainers[0].VolumeMounts {
		hasToken = hasToken || strings.HasPrefix(m.Name, "kube-api-access-")
	}
	require.True(t, hasToken, "the ServiceAccount plugin mounted its token into the injected container too")

	var namespace corev1.Namespace
	require.NoError(t, c.client.Get(ctx, client.ObjectKey{Name: ns}, &namespace))
	namespace.Labels[policies.PodSecurityEnforceLabel] = "baseline"
	require.NoError(t, c.client.Update(ctx, &namespace))
	// Not scheduled (no nodes here), the pod is deleted at once and replaced.
	require.NoError(t, c.client.Delete(ctx, &first))

	var replacement *corev1.Pod
	c.poll(t, "a replacement pod", func() (bool, error) {
		var pods corev1.PodList
		if err := c.client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(dep.Spec.Selector.MatchLabels)); err != nil {
			return false, err
		}
		for i := range pods.Items {
			if !containsPod(before.Items, pods.Items[i].Name) {
				replacement = &pods.Items[i]
				return true, nil
			}
		}
		return false, nil
	}, func() string { return "events: " + c.eventMessages(t, ns) })
	for _, ctr := range replacement.Spec.InitContainers {
		assert.NotEqual(t, policies.SysctlContainerName, ctr.Name, "the replacement pod carries no ha-sysctl")
	}
	got := map[string]string{}
	for _, s := range replacement.Spec.SecurityContext.Sysctls {
		got[s.Name] = s.Value
	}
	assert.Equal(t, keepaliveSysctls, got, "the safe sysctls stay")
	rec := policies.ReadRecord(replacement.Annotations)
	require.NotNil(t, rec)
	assert.Nil(t, policies.RecordedInitContainer(rec), "its record no longer claims the init container")
	assert.Contains(t, rec.Skipped[policies.FeatureSysctls], "removed the ha-sysctl init container")
}

func containsPod(pods []corev1.Pod, name string) bool {
	for _, p := range pods {
		if p.Name == name {
			return true
		}
	}
	return false
}

// eventMessages lists the events of ns, for a failure message.
func (c *cluster) eventMessages(t *testing.T, ns string) string {
	var list corev1.EventList
	if err := c.client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return strings.Join(out, "; ")
}

// startCluster starts etcd and kube-apiserver (envtest, the HAPolicy CRD installed) with
// the AdmissionConfiguration above and the ServiceAccount admission plugin on, and
// kube-controller-manager with only the Deployment and ReplicaSet controllers: the rest
// (garbage collector, namespaces, nodes, service accounts...) has nothing to do with pod
// creation and would only slow the start. The default ServiceAccount of each namespace,
// which that plugin looks up, is created with the namespace. Everything stops when the
// test ends.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	// The controller manager comes with the failover measurement's binaries (built
	// once, cached outside the repository); kube-apiserver and etcd are the same as
	// envtest's.
	bins, err := failover.FindBinaries(root)
	require.NoError(t, err)
	dir := t.TempDir()

	admission := filepath.Join(dir, "admission.yaml")
	require.NoError(t, os.WriteFile(admission, []byte(admissionConfiguration), 0o600))
	env, err := controlplane.New(root)
	require.NoError(t, err)
	env.ControlPlane.GetAPIServer().Configure().Append("admission-control-config-file", admission)
	// The ServiceAccount plugin on, as in real clusters (envtest turns it off): every
	// container of a pod, the injected one included, gets the token mount before the
	// webhooks run.
	env.ControlPlane.GetAPIServer().Configure().Set("disable-admission-plugins", "")
	cfg, err := env.Start()
	require.NoError(t, err, "starting kube-apiserver and etcd")
	t.Cleanup(func() { assert.NoError(t, env.Stop(), "stopping kube-apiserver and etcd") })

	c := &cluster{root: root, config: rest.CopyConfig(cfg), dir: dir}
	// Deployment creation has warnings; client-go would log each one.
	c.config.WarningHandler = rest.NoWarnings{}
	c.client, err = client.New(c.config, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)

	c.startControllerManager(t, env, bins.ControllerManager)

	c.namespaceWith(t, probeNamespace, map[string]string{policies.PodSecurityEnforceLabel: "privileged"})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", c.kcm.Log, proc.Tail(c.kcm.Log, 30))
		}
	})
	return c
}

func (c *cluster) startControllerManager(t *testing.T, env *envtest.Environment, bin string) {
	t.Helper()
	kcm, err := controlplane.StartControllerManager(env, c.dir, bin)
	require.NoError(t, err)
	c.kcm = kcm
	t.Cleanup(func() { assert.NoError(t, c.kcm.Stop(15*time.Second)) })
}

// serve starts `ha-injector serve` in this process with --pod-security-default-level
// set to level, installs the chart's webhook configuration and HAPolicies pointed at it,
// and waits until the API server calls it. When the case ends, both are deleted and
// serve stops, so the next case starts with a serve of its own and nothing left of this
// one. One serve per case, one after the other, rather than two side by side: the
// chart's webhook configuration matches every opted-in namespace, so two would both
// mutate every pod. Only this serve annotates the probe: the previous one has stopped,
// and a call to it fails, which the chart's failurePolicy (Ignore) lets through
// unchanged.
func (c *cluster) serve(t *testing.T, level string) {
	t.Helper()
	localwebhook.ServeT(t, c.config, localwebhook.Options{
		Adjust:         func(cfg *webhook.Config) { cfg.PodSecurityDefaultLevel = level },
		CAName:         "ha-injector-podsecurity-ca",
		LogFile:        filepath.Join(t.TempDir(), "ha-injector.log"),
		ProbeNamespace: probeNamespace,
	})
}

// namespace creates an opted-in namespace with no Pod Security label: the cluster's
// default applies.
func (c *cluster) namespace(t *testing.T, name string) string {
	return c.namespaceWith(t, name, nil)
}

// namespaceWith creates an opted-in namespace with more labels, and its default
// ServiceAccount (the serviceaccount controller does not run here).
func (c *cluster) namespaceWith(t *testing.T, name string, labels map[string]string) string {
	t.Helper()
	all := map[string]string{policies.PolicyLabel: "default"}
	maps.Copy(all, labels)
	ctx := context.Background()
	require.NoError(t, c.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: all}}))
	require.NoError(t, c.client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}}))
	return name
}

// createWebServer creates the example Deployment of docs/install.md (examples/web-server.yaml) in ns and returns it as stored.
func (c *cluster) createWebServer(t *testing.T, ns string) *appsv1.Deployment {
	t.Helper()
	dep, err := examples.WebServer(c.root)
	require.NoError(t, err)
	dep.Namespace = ns
	require.NoError(t, c.client.Create(context.Background(), dep))
	return dep
}

// waitTimeout bounds every wait for a controller; each takes about a second.
const waitTimeout = 30 * time.Second

// waitDeployment polls the Deployment until done returns true and returns it.
func (c *cluster) waitDeployment(t *testing.T, dep *appsv1.Deployment, what string, done func(*appsv1.Deployment) bool) *appsv1.Deployment {
	t.Helper()
	var got appsv1.Deployment
	c.poll(t, "Deployment "+dep.Name+": "+what, func() (bool, error) {
		if err := c.client.Get(context.Background(), client.ObjectKeyFromObject(dep), &got); err != nil {
			return false, err
		}
		return done(&got), nil
	}, func() string { return fmt.Sprintf("last status: %+v", got.Status) })
	return &got
}

// waitReplicaSet waits until the Deployment's one ReplicaSet has settled: the
// controller has observed its spec and counts as many pods as it asks for.
func (c *cluster) waitReplicaSet(t *testing.T, dep *appsv1.Deployment) *appsv1.ReplicaSet {
	t.Helper()
	var rs *appsv1.ReplicaSet
	c.poll(t, "the ReplicaSet of "+dep.Name+" to settle", func() (bool, error) {
		var list appsv1.ReplicaSetList
		if err := c.client.List(context.Background(), &list, client.InNamespace(dep.Namespace), client.MatchingLabels(dep.Spec.Selector.MatchLabels)); err != nil {
			return false, err
		}
		if len(list.Items) != 1 {
			return false, nil
		}
		rs = &list.Items[0]
		return rs.Status.ObservedGeneration >= rs.Generation && rs.Spec.Replicas != nil && rs.Status.Replicas == *rs.Spec.Replicas, nil
	}, func() string {
		if rs == nil {
			return "no ReplicaSet"
		}
		return fmt.Sprintf("last status of %s: %+v", rs.Name, rs.Status)
	})
	return rs
}

// waitEvent waits for an event with reason in ns and returns it.
func (c *cluster) waitEvent(t *testing.T, ns, reason string) *corev1.Event {
	t.Helper()
	var found *corev1.Event
	c.poll(t, "a "+reason+" event in "+ns, func() (bool, error) {
		var list corev1.EventList
		if err := c.client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for i := range list.Items {
			if list.Items[i].Reason == reason {
				found = &list.Items[i]
				return true, nil
			}
		}
		return false, nil
	}, nil)
	return found
}

// poll calls check every 200 ms until it returns true, failing the test on an error,
// on waitTimeout (with last's account of what was seen, if not nil), or when the
// controller manager has exited.
func (c *cluster) poll(t *testing.T, what string, check func() (bool, error), last func() string) {
	t.Helper()
	for deadline := time.Now().Add(waitTimeout); ; {
		ok, err := check()
		require.NoError(t, err, "waiting for %s", what)
		if ok {
			return
		}
		require.NoError(t, c.kcm.Alive(), "waiting for %s", what)
		if time.Now().After(deadline) {
			seen := ""
			if last != nil {
				seen = "; " + last()
			}
			require.Failf(t, "timed out", "waiting %s for %s%s", waitTimeout, what, seen)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func deploymentCondition(d *appsv1.Deployment, kind appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == kind {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

func replicaSetCondition(rs *appsv1.ReplicaSet, kind appsv1.ReplicaSetConditionType) *appsv1.ReplicaSetCondition {
	for i := range rs.Status.Conditions {
		if rs.Status.Conditions[i].Type == kind {
			return &rs.Status.Conditions[i]
		}
	}
	return nil
}
