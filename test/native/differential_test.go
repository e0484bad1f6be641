package native_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	kjson "sigs.k8s.io/json"

	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/cases"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	code := m.Run()
	testenv.Stop()
	os.Exit(code)
}

// input is a pod to admit under a case's settings.
type input struct {
	name string
	c    cases.Case
	pod  *corev1.Pod
	// owner is what the webhook learns of the pod's controller.
	owner *policies.Owner
}

// podsOf are the case's pods: its Pod, or the pod the controller of its
// Deployment creates (the template's labels with a pod-template-hash, its
// annotations and spec, a controller reference to a ReplicaSet): native mode
// leaves Deployments alone and mutates their pods.
func podsOf(t *testing.T, c cases.Case) []input {
	t.Helper()
	var meta metav1.TypeMeta
	require.NoError(t, json.Unmarshal(c.Object.JSON, &meta))
	switch meta.Kind {
	case "Pod":
		var pod corev1.Pod
		require.NoError(t, kjson.UnmarshalCaseSensitivePreserveInts(c.Object.JSON, &pod))
		withVolumes(&pod)
		return []input{{name: c.Name, c: c, pod: &pod, owner: c.Settings.Owner}}
	case "Deployment":
		var d appsv1.Deployment
		require.NoError(t, kjson.UnmarshalCaseSensitivePreserveInts(c.Object.JSON, &d))
		const hash = "5d8c7f9b6"
		pod := &corev1.Pod{ObjectMeta: *d.Spec.Template.ObjectMeta.DeepCopy(), Spec: *d.Spec.Template.Spec.DeepCopy()}
		pod.Name = d.Name + "-" + hash + "-x7k2p"
		if pod.Labels == nil {
			pod.Labels = map[string]string{}
		}
		pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: d.Name + "-" + hash,
			UID: "0b6f1f4e-1111-4c2a-9d55-00000000abcd", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
		// The webhook reads the ReplicaSet: its replicas and the annotations
		// the Deployment controller copied to it.
		owner := &policies.Owner{Kind: "ReplicaSet", Name: d.Name + "-" + hash, Annotations: d.Annotations, Replicas: ptr.To(ptr.Deref(d.Spec.Replicas, 1))}
		return []input{{name: c.Name, c: c, pod: pod, owner: owner}}
	}
	t.Fatalf("%s: a %s", c.Name, meta.Kind)
	return nil
}

// withVolumes gives the pod an emptyDir for each volume its containers
// mount but it does not declare (a case holds a pod as the webhook receives
// it, with its ServiceAccount's token volume left out): the API server would
// refuse it.
func withVolumes(pod *corev1.Pod) {
	declared := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		declared[v.Name] = true
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, ctr := range list {
			for _, m := range ctr.VolumeMounts {
				if !declared[m.Name] {
					declared[m.Name] = true
					pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: m.Name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
				}
			}
		}
	}
}

// cluster is the API server with native mode's policies, one pair per set of
// installation settings the cases use.
type cluster struct {
	c      client.Client
	groups map[string]native.Options
}

func settingsKey(s cases.Settings) string {
	return fmt.Sprintf("%s/%s/%v", s.PodSecurityDefault.Level, s.PodSecurityDefault.Version, s.AllowedSysctlImages)
}

// TestNativeMatchesEngine admits every pod of the engine's golden cases, and
// pods derived from them at random (bounded, seeded), through a real
// kube-apiserver running native mode's policies, and holds what it stores,
// part by part, to what the Go engine makes of the same pod (as the API
// server's earlier plugins left it: DefaultTolerationSeconds' tolerations,
// the ServiceAccount's token), stored the same way. The engine is told no
// more than CEL can read (no owner facts); the cases of NativeDifferences
// must differ, every other must not.
func TestNativeMatchesEngine(t *testing.T) {
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	cfg := testenv.Start(t)
	c, err := client.New(cfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	ctx := context.Background()

	var inputs []input
	for _, cs := range cases.Load(t, filepath.Join(root, "policies", "testdata")) {
		if cs.Settings.NotOptedIn {
			continue // nothing mutates a pod of a namespace that does not opt in
		}
		if level, ok := cs.Settings.NamespaceLabels[policies.PodSecurityEnforceLabel]; ok && !policies.ValidPodSecurityLevel(level) {
			// The API server refuses such a namespace (Pod Security checks its
			// labels): the engine's case is of one labelled before that.
			t.Logf("%s: a namespace labelled %s=%q cannot be created", cs.Name, policies.PodSecurityEnforceLabel, level)
			continue
		}
		inputs = append(inputs, podsOf(t, cs)...)
	}
	inputs = append(inputs, derived(t, inputs, 40)...)

	allowed := map[string]bool{}
	for _, d := range policies.NativeDifferences() {
		for _, f := range d.Fixtures {
			allowed[f] = true
		}
	}

	cl := install(t, ctx, c, inputs)
	differed := map[string]bool{}
	for i, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			ns := fmt.Sprintf("c%d", i)
			var diffs []string
			// The API server takes new bindings and parameters up
			// asynchronously: an unexpected difference is tried again (bounded).
			for try := 0; try < 20; try++ {
				got, gotErr := admit(ctx, cl.c, in.pod, ns)
				want, wantApplied, wantErr := engine(t, ctx, cl.c, in, i)
				switch {
				case gotErr != nil || wantErr != nil:
					// The pod is refused (by Pod Security) in one mode, or in both alike.
					diffs = nil
					if (gotErr == nil) != (wantErr == nil) {
						diffs = []string{fmt.Sprintf("admission:\n  native: %v\n  engine: %v", gotErr, wantErr)}
					}
				default:
					diffs = compare(got, want, wantApplied)
				}
				if len(diffs) == 0 || allowed[in.name] {
					break
				}
				time.Sleep(250 * time.Millisecond)
			}
			if allowed[in.name] {
				differed[in.name] = len(diffs) > 0
				t.Logf("a listed difference: %v", diffs)
				return
			}
			assert.Empty(t, diffs, "native mode and the engine differ")
		})
	}
	for name := range allowed {
		assert.True(t, differed[name], "%s is listed in NativeDifferences but native mode and the engine agree on it", name)
	}
}

// install creates, per set of settings, native mode's policies; per input, its
// HAPolicy (with the case's topology domains in its status), its bindings, an
// opted-in namespace c<i> and a namespace plain<i> with the same labels but
// not opted in; then waits for every group's policy to take effect.
func install(t *testing.T, ctx context.Context, c client.Client, inputs []input) *cluster {
	t.Helper()
	cl := &cluster{c: c, groups: map[string]native.Options{}}
	for _, in := range inputs {
		key := settingsKey(in.c.Settings)
		if _, ok := cl.groups[key]; ok {
			continue
		}
		o := native.Options{Name: fmt.Sprintf("ha-injector-%d", len(cl.groups)), Settings: policies.NativeSettings{
			SysctlImage: cases.SysctlImage, AllowedSysctlImages: in.c.Settings.AllowedSysctlImages, PodSecurity: in.c.Settings.PodSecurityDefault,
		}}
		cl.groups[key] = o
		require.NoError(t, c.Create(ctx, native.MutatingPolicy(o)))
		require.NoError(t, c.Create(ctx, native.ValidatingPolicy(o)))
	}
	for i, in := range inputs {
		name := fmt.Sprintf("p%d", i)
		p := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: *in.c.Context.Policy.Spec.DeepCopy()}
		if in.c.Settings.InvalidPolicy {
			require.NoError(t, testenv.CreateUnchecked(ctx, c, p))
		} else {
			require.NoError(t, c.Create(ctx, p))
		}
		if len(in.c.Settings.TopologyDomains) > 0 {
			p.Status.TopologyDomains = map[string]int32{}
			for k, v := range in.c.Settings.TopologyDomains {
				p.Status.TopologyDomains[k] = int32(v)
			}
			require.NoError(t, c.Status().Update(ctx, p))
		}
		m, v := native.Bindings(cl.groups[settingsKey(in.c.Settings)], name)
		require.NoError(t, c.Create(ctx, m))
		require.NoError(t, c.Create(ctx, v))
		labels := map[string]string{}
		for k, v := range in.c.Settings.NamespaceLabels {
			labels[k] = v
		}
		require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("plain%d", i), Labels: labels}}))
		// Where the pod is admitted as it comes, for the engine: Pod Security
		// checks a pod after every mutation, so not here.
		require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("before%d", i),
			Labels: map[string]string{policies.PodSecurityEnforceLabel: policies.PodSecurityPrivileged}}}))
		labels[policies.PolicyLabel] = name
		require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c%d", i), Labels: labels}}))
	}
	// A probe per group, created last: once it is mutated, the API server has
	// seen what was created before it.
	for key, o := range cl.groups {
		name := "probe-" + strings.TrimPrefix(o.Name, "ha-injector-")
		require.NoError(t, c.Create(ctx, &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}))
		m, v := native.Bindings(o, name)
		require.NoError(t, c.Create(ctx, m))
		require.NoError(t, c.Create(ctx, v))
		require.NoError(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{policies.PolicyLabel: name}}}))
		probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "probe", Labels: map[string]string{"app": "probe"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}}
		require.Eventually(t, func() bool {
			got, err := admit(ctx, c, probe, name)
			require.NoError(t, err)
			return got.Annotations[policies.StatusAnnotation] != ""
		}, 30*time.Second, 200*time.Millisecond, "native mode's policy %s (settings %s) did not take effect", o.Name, key)
	}
	return cl
}

// admit creates pod in ns as a dry run and returns it as the API server would store it.
func admit(ctx context.Context, c client.Client, pod *corev1.Pod, ns string) (*corev1.Pod, error) {
	p := pod.DeepCopy()
	p.Namespace = ns
	p.ResourceVersion, p.UID, p.CreationTimestamp = "", "", metav1.Time{}
	if err := c.Create(ctx, p, client.DryRunAll); err != nil {
		return nil, err
	}
	return p, nil
}

// engine is the Go engine's result for the pod as the API server's plugins
// before native mode leave it (admitted where no policy applies and Pod
// Security does not enforce: it checks after mutation), given what the webhook
// would learn of its owner, stored where no policy applies under the
// namespace's labels.
func engine(t *testing.T, ctx context.Context, c client.Client, in input, i int) (*corev1.Pod, []policies.Feature, error) {
	t.Helper()
	plain := fmt.Sprintf("plain%d", i)
	stored, err := admit(ctx, c, in.pod, fmt.Sprintf("before%d", i))
	require.NoError(t, err, "the pod as sent is refused")
	// At creation the API server merged matchLabelKeys into the selectors of
	// the pod's terms: the plugins before native mode see them as sent.
	before := stored.DeepCopy()
	before.Spec.Affinity = in.pod.Spec.Affinity.DeepCopy()
	before.Spec.TopologySpreadConstraints = slices.Clone(in.pod.Spec.TopologySpreadConstraints)
	ectx := in.c.Context
	ectx.Owner = in.owner
	m, err := policies.Mutate(ectx, before)
	require.NoError(t, err)
	if !m.Changed {
		after, err := admit(ctx, c, in.pod, plain)
		return after, nil, err
	}
	after, err := admit(ctx, c, m.Object.(*corev1.Pod), plain)
	return after, policies.AppliedFeatures(m.Decisions), err
}

// compare lists the parts in which got and want differ: the parts the
// injections own, the annotations but the record, and the features applied
// (by the engine: wantApplied; by native mode: its record's).
func compare(got, want *corev1.Pod, wantApplied []policies.Feature) []string {
	var diffs []string
	diff := func(what string, a, b any) {
		if !equality.Semantic.DeepEqual(a, b) {
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			diffs = append(diffs, fmt.Sprintf("%s:\n  native: %s\n  engine: %s", what, ja, jb))
		}
	}
	diff("affinity", got.Spec.Affinity, want.Spec.Affinity)
	diff("topologySpreadConstraints", got.Spec.TopologySpreadConstraints, want.Spec.TopologySpreadConstraints)
	diff("tolerations", got.Spec.Tolerations, want.Spec.Tolerations)
	diff("securityContext", got.Spec.SecurityContext, want.Spec.SecurityContext)
	diff("initContainers", withoutToken(got.Spec.InitContainers), withoutToken(want.Spec.InitContainers))
	diff("containers", withoutToken(got.Spec.Containers), withoutToken(want.Spec.Containers))
	diff("annotations", withoutRecord(got.Annotations), withoutRecord(want.Annotations))
	diff("features applied", nativeApplied(got), wantApplied)
	return diffs
}

// withoutToken drops the ServiceAccount token mount: the ServiceAccount
// plugin mounts it into the containers it sees, before native mode inserts
// its init container (the engine's result, stored again, gets it).
func withoutToken(list []corev1.Container) []corev1.Container {
	out := make([]corev1.Container, len(list))
	for i := range list {
		list[i].DeepCopyInto(&out[i])
		out[i].VolumeMounts = slices.DeleteFunc(out[i].VolumeMounts, func(m corev1.VolumeMount) bool {
			return strings.HasPrefix(m.Name, "kube-api-access-")
		})
		if len(out[i].VolumeMounts) == 0 {
			out[i].VolumeMounts = nil
		}
	}
	return out
}

func withoutRecord(a map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		if k != policies.StatusAnnotation {
			out[k] = v
		}
	}
	return out
}

// nativeApplied is what native mode's record on the pod says it applied (a
// record the pod came with, its template's, says nothing of this admission).
func nativeApplied(p *corev1.Pod) []policies.Feature {
	rec := policies.ReadRecord(p.Annotations)
	if rec == nil || !rec.Native {
		return nil
	}
	return rec.Applied
}
