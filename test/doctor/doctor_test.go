// Package doctor_test runs `ha-injector doctor` against a real kube-apiserver with the
// chart's webhook configuration calling `serve` in this process, healthy and then
// broken one way at a time: each broken case must fail its own check with its message,
// and nothing must fail when nothing is broken.
package doctor_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/doctor"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if err := shared.webhook.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	testenv.Stop()
	os.Exit(code)
}

// fixture is the healthy installation every test starts from and returns to.
type fixture struct {
	cfg     *rest.Config
	c       client.Client
	webhook *localwebhook.Fixture
}

var (
	setupOnce sync.Once
	shared    *fixture
	setupErr  error
)

// The namespaces of the healthy installation: one per kind of probe.
var healthyNamespaces = map[string]map[string]string{
	"team-a":          {policies.PolicyLabel: "default"},
	"team-b":          {policies.PolicyLabel: "default"},
	"team-restricted": {policies.PolicyLabel: "default", policies.PodSecurityEnforceLabel: "restricted"},
	"team-audit":      {policies.PolicyLabel: "audit"},
}

func setup(t *testing.T) *fixture {
	t.Helper()
	cfg := testenv.Start(t)
	setupOnce.Do(func() { shared, setupErr = install(cfg) })
	require.NoError(t, setupErr)
	return shared
}

func install(cfg *rest.Config) (*fixture, error) {
	ctx := context.Background()
	f := &fixture{cfg: cfg}
	var err error
	if f.c, err = client.New(cfg, client.Options{Scheme: doctor.Scheme}); err != nil {
		return nil, err
	}
	for name, labels := range healthyNamespaces {
		if err := f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
			return nil, err
		}
	}
	// No namespace of its own: doctor would probe it too.
	f.webhook, err = localwebhook.Serve(ctx, cfg, localwebhook.Options{
		CAName:         "ha-injector-doctor-ca",
		Values:         map[string]any{"policies": map[string]any{"audit": map[string]any{"mode": "Audit"}}},
		ProbeNamespace: "team-a",
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// run runs doctor and returns its report.
func (f *fixture) run(t *testing.T, opts doctor.Options) *doctor.Report {
	t.Helper()
	// serve was given no sysctl image in URL mode, so it used its default: doctor cannot
	// read a URL's flags and is told the same image, as the chart's values tell it.
	opts.DefaultSysctlImage = f.webhook.Server.Config.SysctlImage
	r, err := doctor.Run(context.Background(), f.cfg, opts)
	require.NoError(t, err)
	return r
}

// checks are the report's checks named name.
func checks(r *doctor.Report, name string) []doctor.Check {
	var out []doctor.Check
	for _, c := range r.Checks {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

// one is the report's only check named name.
func one(t *testing.T, r *doctor.Report, name string) doctor.Check {
	t.Helper()
	cs := checks(r, name)
	require.Len(t, cs, 1, "checks named %s in\n%s", name, text(r))
	return cs[0]
}

func text(r *doctor.Report) string {
	var b strings.Builder
	_ = r.WriteText(&b)
	return b.String()
}

// eventually runs doctor until cond holds (the API server picks webhook configurations
// and admission policies up asynchronously), bounded by 30 s, and returns the last report.
func (f *fixture) eventually(t *testing.T, opts doctor.Options, cond func(*doctor.Report) bool) *doctor.Report {
	t.Helper()
	var r *doctor.Report
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if r = f.run(t, opts); cond(r) {
			return r
		}
	}
	t.Fatalf("doctor did not see the expected state within 30s; last report:\n%s", text(r))
	return nil
}

func probeStatus(status doctor.Status) func(*doctor.Report) bool {
	return func(r *doctor.Report) bool {
		for _, c := range checks(r, "probe") {
			if c.Status == status {
				return true
			}
		}
		return false
	}
}

func TestHealthyInstallHasNoFailure(t *testing.T) {
	f := setup(t)
	r := f.run(t, doctor.Options{})
	t.Log("\n" + text(r))
	assert.False(t, r.Failed())
	for _, name := range []string{"crd", "policies", "webhook-configuration", "serving-certificate", "webhook-pods", "namespaces", "sysctl-failures", "nodes", "workloads"} {
		assert.Equal(t, doctor.OK, one(t, r, name).Status, name)
	}
	assert.Contains(t, one(t, r, "webhook-configuration").Message, "failurePolicy Ignore")
	assert.Contains(t, one(t, r, "serving-certificate").Message, "the caBundle verifies the serving certificate")

	// One probe per (policy, Pod Security labels): team-a and team-b share one.
	probes := checks(r, "probe")
	require.Len(t, probes, 3, text(r))
	for _, p := range probes {
		assert.Equal(t, doctor.OK, p.Status, p.Message)
	}
	messages := probes[0].Message + "\n" + probes[1].Message + "\n" + probes[2].Message
	assert.Contains(t, messages, "namespace team-a (policy default, Pod Security cluster default; stands for 1 more like it)")
	assert.Contains(t, messages, "namespace team-restricted (policy default, Pod Security restricted)")
	assert.Contains(t, messages, "namespace team-audit (policy audit, Pod Security cluster default) (Audit), the webhook answered")
	assert.Contains(t, messages, "is injected (")

	// The dry runs stored nothing.
	var pods corev1.PodList
	require.NoError(t, f.c.List(context.Background(), &pods))
	for _, p := range pods.Items {
		assert.NotContains(t, p.Name, doctor.ProbePrefix)
	}
}

func TestEmptyCABundleFails(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	mwc := webhookConfiguration(t, f)
	saved := mwc.DeepCopy()
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.CABundle = nil
	}
	require.NoError(t, f.c.Update(ctx, mwc))
	t.Cleanup(func() { f.restoreWebhooks(t, saved) })

	r := f.eventually(t, doctor.Options{}, probeStatus(doctor.Fail))
	c := one(t, r, "webhook-configuration")
	assert.Equal(t, doctor.Fail, c.Status)
	assert.Contains(t, c.Message, "empty caBundle in pods.ha-injector.io, deployments.ha-injector.io, leaving-deployments.ha-injector.io")
	assert.Contains(t, c.Fix, "certs.provided.caBundle")
	failed := ""
	for _, p := range checks(r, "probe") {
		if p.Status == doctor.Fail {
			failed += p.Message + "\n"
		}
	}
	assert.Contains(t, failed, "namespace team-a")
	assert.Contains(t, failed, "admitted without the injection")
}

func TestStoppedWebhookIsSeenByTheProbe(t *testing.T) {
	f := setup(t)
	f.stopWebhook(t)

	r := f.run(t, doctor.Options{Namespace: "team-a"})
	t.Log("\n" + text(r))
	assert.True(t, r.Failed())
	probe := one(t, r, "probe")
	assert.Equal(t, doctor.Fail, probe.Status)
	assert.Contains(t, probe.Message, "the probe pod was admitted without the injection (no ha-injector.io/status): the webhook was not called, or did not answer and failurePolicy Ignore let the pod through")
	assert.Equal(t, doctor.Warn, one(t, r, "serving-certificate").Status)
}

func TestNamespaceNamingAMissingPolicyFails(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "lost", Labels: map[string]string{policies.PolicyLabel: "no-such-policy"}}}
	require.NoError(t, f.c.Create(ctx, ns))
	// Namespaces are never deleted here (no namespace controller): opt it out instead.
	t.Cleanup(func() { f.optOut(t, "lost") })

	r := f.run(t, doctor.Options{})
	c := one(t, r, "namespaces")
	assert.Equal(t, doctor.Fail, c.Status)
	assert.Contains(t, c.Message, "namespaces name an HAPolicy that does not exist (their pods are admitted unchanged, with a warning): lost (no-such-policy)")
	// The other namespaces are still probed.
	assert.Len(t, checks(r, "probe"), 3)
}

// TestPolicyAgainstPrivilegedContainersIsCaught: a ValidatingAdmissionPolicy (in-tree,
// CEL) that rejects privileged containers rejects the injected probe only; doctor fails
// the probe quoting its message, before any rollout meets it.
func TestPolicyAgainstPrivilegedContainersIsCaught(t *testing.T) {
	f := setup(t)
	f.namespaceWithPolicy(t, "guarded", `object.spec.?initContainers.orValue([]).all(c, !c.?securityContext.?privileged.orValue(false))`, "privileged containers are not allowed here")

	r := f.eventually(t, doctor.Options{Namespace: "guarded"}, probeStatus(doctor.Fail))
	probe := one(t, r, "probe")
	assert.Contains(t, probe.Message, "a pod with the injection is rejected while the same pod without it is admitted")
	assert.Contains(t, probe.Message, "privileged containers are not allowed here")
	assert.Contains(t, probe.Fix, "PodSecurityContext")
}

// TestPolicyAgainstEveryPodCannotProbe: a policy that rejects every pod is not
// ha-injector's failure: "cannot probe", a warning.
func TestPolicyAgainstEveryPodCannotProbe(t *testing.T) {
	f := setup(t)
	f.namespaceWithPolicy(t, "walled", `false`, "no pods at all")

	r := f.eventually(t, doctor.Options{Namespace: "walled"}, probeStatus(doctor.Warn))
	probe := one(t, r, "probe")
	assert.Contains(t, probe.Message, "cannot probe namespace walled")
	assert.Contains(t, probe.Message, "no pods at all")
	assert.False(t, r.Failed(), text(r))
}

func TestWorkloadsARestartWouldChange(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	require.NoError(t, f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "late"}}))
	t.Cleanup(func() { f.optOut(t, "late") })
	require.NoError(t, f.c.Create(ctx, workloads.Deployment("late", "before-opt-in")))
	f.optIn(t, "late", "default")
	require.NoError(t, localwebhook.WaitEffective(ctx, f.c, "late", 30*time.Second))
	require.NoError(t, f.c.Create(ctx, workloads.Deployment("late", "after-opt-in")))

	r := f.run(t, doctor.Options{Namespace: "late"})
	c := one(t, r, "workloads")
	assert.Equal(t, doctor.Warn, c.Status)
	assert.Contains(t, c.Message, "1 workloads would change at their next restart")
	assert.Contains(t, c.Message, "late 1")
	assert.Empty(t, c.Items, "listed only with --workloads")

	r = f.run(t, doctor.Options{Namespace: "late", Workloads: true})
	assert.Equal(t, []string{"late/Deployment before-opt-in: not injected"}, one(t, r, "workloads").Items)

	// A policy changed after its Deployments were injected: they carry an older one.
	policy := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "evolving"}, Spec: v1alpha1.HAPolicySpec{Tolerations: v1alpha1.TolerationsSpec{NotReadySeconds: ptr.To[int64](40)}}}
	require.NoError(t, f.c.Create(ctx, policy))
	t.Cleanup(func() { _ = f.c.Delete(ctx, policy) })
	require.NoError(t, f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "evolve", Labels: map[string]string{policies.PolicyLabel: "evolving"}}}))
	t.Cleanup(func() { f.optOut(t, "evolve") })
	require.NoError(t, localwebhook.WaitEffective(ctx, f.c, "evolve", 30*time.Second))
	require.NoError(t, f.c.Create(ctx, workloads.Deployment("evolve", "web")))
	r = f.run(t, doctor.Options{Namespace: "evolve", Workloads: true})
	assert.Equal(t, doctor.OK, one(t, r, "workloads").Status, text(r))

	require.NoError(t, f.c.Get(ctx, client.ObjectKeyFromObject(policy), policy))
	policy.Spec.Tolerations.NotReadySeconds = ptr.To[int64](20)
	require.NoError(t, f.c.Update(ctx, policy))
	r = f.run(t, doctor.Options{Namespace: "evolve", Workloads: true})
	assert.Equal(t, []string{"evolve/Deployment web: injected from an older version of policy evolving"}, one(t, r, "workloads").Items)
}

func webhookConfiguration(t *testing.T, f *fixture) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	var list admissionregistrationv1.MutatingWebhookConfigurationList
	require.NoError(t, f.c.List(context.Background(), &list))
	require.Len(t, list.Items, 1)
	return &list.Items[0]
}

// stopWebhook stops serve until the test ends, then starts it again on the same port
// and waits until the API server calls it.
func (f *fixture) stopWebhook(t *testing.T) {
	t.Helper()
	require.NoError(t, f.webhook.Server.Stop())
	t.Cleanup(func() { require.NoError(t, f.webhook.Restart(context.Background())) })
}

// restoreWebhooks puts saved's webhooks back and waits until the API server calls the
// webhook again.
func (f *fixture) restoreWebhooks(t *testing.T, saved *admissionregistrationv1.MutatingWebhookConfiguration) {
	ctx := context.Background()
	mwc := webhookConfiguration(t, f)
	mwc.Webhooks = saved.Webhooks
	require.NoError(t, f.c.Update(ctx, mwc))
	require.NoError(t, localwebhook.WaitEffective(ctx, f.c, "team-a", 30*time.Second))
}

func (f *fixture) optIn(t *testing.T, namespace, policy string) {
	t.Helper()
	var ns corev1.Namespace
	require.NoError(t, f.c.Get(context.Background(), client.ObjectKey{Name: namespace}, &ns))
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[policies.PolicyLabel] = policy
	require.NoError(t, f.c.Update(context.Background(), &ns))
}

func (f *fixture) optOut(t *testing.T, namespace string) {
	t.Helper()
	var ns corev1.Namespace
	require.NoError(t, f.c.Get(context.Background(), client.ObjectKey{Name: namespace}, &ns))
	delete(ns.Labels, policies.PolicyLabel)
	require.NoError(t, f.c.Update(context.Background(), &ns))
}

// namespaceWithPolicy creates an opted-in namespace (default policy, Pod Security
// unlabelled) and a ValidatingAdmissionPolicy bound to it alone that denies pods for
// which expression is false, with message.
func (f *fixture) namespaceWithPolicy(t *testing.T, namespace, expression, message string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{policies.PolicyLabel: "default"}}}))
	t.Cleanup(func() { f.optOut(t, namespace) })
	vap := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "doctor-" + namespace},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: expression, Message: message}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "doctor-" + namespace},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        vap.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": namespace},
			}},
		},
	}
	require.NoError(t, f.c.Create(ctx, vap))
	require.NoError(t, f.c.Create(ctx, binding))
	t.Cleanup(func() {
		_ = f.c.Delete(ctx, binding)
		_ = f.c.Delete(ctx, vap)
	})
}

// TestInjectionFailuresAreFound: what the injection broke after admission, as the
// controllers and kubelets report it in statuses (written here as they would).
func TestInjectionFailuresAreFound(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	require.NoError(t, f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "broken", Labels: map[string]string{policies.PolicyLabel: "default"}}}))
	t.Cleanup(func() { f.optOut(t, "broken") })
	require.NoError(t, localwebhook.WaitEffective(ctx, f.c, "broken", 30*time.Second))

	pull := injectedPod(t, f, "broken", "pull")
	pull.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "ha-sysctl", Image: pull.Spec.InitContainers[0].Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}}}
	require.NoError(t, f.c.Status().Update(ctx, pull))
	partial := injectedPod(t, f, "broken", "partial")
	partial.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "ha-sysctl", Image: partial.Spec.InitContainers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: "net.ipv4.tcp_retries2: open /proc/sys/net/ipv4/tcp_retries2: read-only file system"}}}}
	require.NoError(t, f.c.Status().Update(ctx, partial))

	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "broken", Name: "web-5f49bf955b"},
		Spec:       appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Template: workloads.Deployment("broken", "web").Spec.Template},
	}
	require.NoError(t, f.c.Create(ctx, rs))
	rs.Status.Conditions = []appsv1.ReplicaSetCondition{{Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue, Reason: "FailedCreate",
		Message: `pods "web-5f49bf955b-252k2" is forbidden: violates PodSecurity "baseline:latest": privileged (container "ha-sysctl" must not set securityContext.privileged=true)`}}
	require.NoError(t, f.c.Status().Update(ctx, rs))

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "old-kubelet"}}
	require.NoError(t, f.c.Create(ctx, node))
	t.Cleanup(func() { _ = f.c.Delete(ctx, node) })
	node.Status.NodeInfo.KubeletVersion = "v1.28.9"
	require.NoError(t, f.c.Status().Update(ctx, node))

	r := f.run(t, doctor.Options{Namespace: "broken"})
	t.Log("\n" + text(r))
	c := one(t, r, "sysctl-failures")
	assert.Equal(t, doctor.Fail, c.Status)
	assert.Contains(t, c.Message, "ReplicaSet broken/web-5f49bf955b cannot create pods: pods \"web-5f49bf955b-252k2\" is forbidden: violates PodSecurity")
	assert.Contains(t, c.Message, "pod broken/pull: ha-sysctl cannot pull "+pull.Spec.InitContainers[0].Image+" (ImagePullBackOff)")
	assert.Contains(t, c.Message, "pod broken/partial: ha-sysctl reported: net.ipv4.tcp_retries2: open /proc/sys/net/ipv4/tcp_retries2: read-only file system")
	n := one(t, r, "nodes")
	assert.Equal(t, doctor.Fail, n.Status)
	assert.Contains(t, n.Message, "kubelets older than 1.29 reject pods with net.ipv4.tcp_keepalive_")
	assert.Contains(t, n.Message, "old-kubelet (v1.28.9)")
}

// injectedPod creates a bare pod through the webhook and checks it got ha-sysctl.
func injectedPod(t *testing.T, f *fixture, namespace, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	require.NoError(t, f.c.Create(context.Background(), p))
	require.NotEmpty(t, p.Spec.InitContainers)
	require.Equal(t, "ha-sysctl", p.Spec.InitContainers[0].Name)
	return p
}
