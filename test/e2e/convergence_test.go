package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/test/harness/workloads"
)

// The tests of this file follow the Deployments through the real API server, with
// the chart's three webhooks (pods, deployments, leaving-deployments) pointed at
// serve: "Convergence" in docs/design.md. No controller runs: what matters is
// the pod template the API server stores, and metadata.generation, which it bumps on
// every spec change (a new template is what makes the Deployment controller roll).

const (
	// restartedAtAnnotation is what `kubectl rollout restart` sets in the pod template.
	restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"
	// lastAppliedAnnotation is where a client-side `kubectl apply` keeps the manifest.
	lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"
)

// convergeDeployment is a 3-replica Deployment, enough for every injection of the
// default policy.
func convergeDeployment(ns, name string) *appsv1.Deployment {
	return workloads.Deployment(ns, name, workloads.Image("nginx:1.27"))
}

// convergeManifest is convergeDeployment as a user's manifest (JSON, no empty fields),
// with the given image and, if not nil, the pod template's tolerations.
func convergeManifest(t *testing.T, ns, name, image string, tolerations []map[string]any) []byte {
	t.Helper()
	podSpec := map[string]any{"containers": []any{map[string]any{"name": "nginx", "image": image}}}
	if tolerations != nil {
		podSpec["tolerations"] = tolerations
	}
	m := map[string]any{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"replicas": 3,
			"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": name}},
				"spec":     podSpec,
			},
		},
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

// own600 is a user's own unreachable toleration, longer than any policy's.
var own600 = []map[string]any{{"key": policies.UnreachableTaint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 600}}

func getDeployment(t *testing.T, f *fixture, key client.ObjectKey) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	require.NoError(t, f.client.Get(context.Background(), key, &d))
	return &d
}

// updateDeployment reads the stored Deployment, changes it and sends it back as an
// Update (what `kubectl edit` or `kubectl replace` does); it returns what was stored.
func updateDeployment(t *testing.T, f *fixture, key client.ObjectKey, change func(*appsv1.Deployment), opts ...client.UpdateOption) *appsv1.Deployment {
	t.Helper()
	d := getDeployment(t, f, key)
	change(d)
	require.NoError(t, f.client.Update(context.Background(), d, opts...))
	return d
}

func setImage(image string) func(*appsv1.Deployment) {
	return func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = image }
}

func templateSeconds(d *appsv1.Deployment, taint string) *int64 {
	return effectiveSeconds(&corev1.Pod{Spec: d.Spec.Template.Spec}, taint)
}

// assertMarked asserts that the Deployment's pod template carries a record of the
// current format, and the Deployment the same record and the injected label. It
// returns the record (nil if there is none).
func assertMarked(t *testing.T, d *appsv1.Deployment) *policies.Record {
	t.Helper()
	rec := policies.ReadRecord(d.Spec.Template.Annotations)
	assert.NotNil(t, rec, "the pod template carries a version-%d record, got %q", policies.RecordVersion, d.Spec.Template.Annotations[policies.StatusAnnotation])
	assert.Equal(t, d.Spec.Template.Annotations[policies.StatusAnnotation], d.Annotations[policies.StatusAnnotation], "the Deployment carries its template's record")
	assert.Equal(t, "true", d.Labels[policies.InjectedLabel], "the Deployment carries the %s label", policies.InjectedLabel)
	return rec
}

// assertSingle asserts that nothing ha-injector injects appears twice in the template.
func assertSingle(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	perKey := map[string]int{}
	for _, tol := range spec.Tolerations {
		perKey[tol.Key]++
	}
	assert.Equal(t, map[string]int{policies.NotReadyTaint: 1, policies.UnreachableTaint: 1}, perKey, "exactly one toleration per key")
	n := 0
	for _, c := range spec.InitContainers {
		if c.Name == policies.SysctlContainerName {
			n++
		}
	}
	assert.Equal(t, 1, n, "one %s init container", policies.SysctlContainerName)
	if assert.NotNil(t, spec.Affinity) && assert.NotNil(t, spec.Affinity.PodAntiAffinity) {
		assert.Len(t, spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1, "one anti-affinity term")
	}
}

// assertUninjected asserts that neither the Deployment nor its template carries
// anything of ha-injector's.
func assertUninjected(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	assert.NotContains(t, d.Annotations, policies.StatusAnnotation, "no record on the Deployment")
	assert.NotContains(t, d.Labels, policies.InjectedLabel, "no injected label")
	assert.NotContains(t, d.Spec.Template.Annotations, policies.StatusAnnotation, "no record in the template")
	spec := d.Spec.Template.Spec
	for _, c := range spec.InitContainers {
		assert.NotEqual(t, policies.SysctlContainerName, c.Name)
	}
	assert.Nil(t, spec.Affinity, "no anti-affinity")
	assert.Empty(t, spec.Tolerations, "no tolerations")
	if spec.SecurityContext != nil {
		assert.Empty(t, spec.SecurityContext.Sysctls, "no sysctls")
	}
}

// convergePolicy creates an HAPolicy of its own for the test with the given not-ready
// seconds (the rest defaulted) and deletes it when the test ends.
func convergePolicy(t *testing.T, f *fixture, notReady int64) string {
	t.Helper()
	ctx := context.Background()
	p := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("converge-%d", namespaces.Add(1))}}
	p.Spec.Tolerations.NotReadySeconds = ptr.To(notReady)
	require.NoError(t, f.client.Create(ctx, p))
	t.Cleanup(func() { _ = f.client.Delete(ctx, p) })
	return p.Name
}

// setPolicyNotReady changes the policy's not-ready seconds and waits until the
// webhook applies the new value in ns.
func setPolicyNotReady(t *testing.T, f *fixture, name string, seconds int64, ns string) {
	t.Helper()
	ctx := context.Background()
	var p v1alpha1.HAPolicy
	require.NoError(t, f.client.Get(ctx, client.ObjectKey{Name: name}, &p))
	p.Spec.Tolerations.NotReadySeconds = ptr.To(seconds)
	require.NoError(t, f.client.Update(ctx, &p))
	waitNotReady(t, f, ns, seconds)
}

// waitNotReady waits until a pod created (dry run) in ns gets a not-ready toleration
// of seconds: the webhook's caches hold the namespace and its policy as the test left
// them.
func waitNotReady(t *testing.T, f *fixture, ns string, seconds int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("pods in %s to get a %d s not-ready toleration", ns, seconds), func(i int) bool {
		pod := newPod(ns, fmt.Sprintf("probe-%d", i))
		require.NoError(t, f.client.Create(context.Background(), pod, client.DryRunAll))
		s := effectiveSeconds(pod, policies.NotReadyTaint)
		return s != nil && *s == seconds
	})
	f.warnings.Take()
}

// setNamespaceLabel sets the namespace's policy label to value, or removes it if value is "".
func setNamespaceLabel(t *testing.T, f *fixture, ns, value string) {
	t.Helper()
	ctx := context.Background()
	var n corev1.Namespace
	require.NoError(t, f.client.Get(ctx, client.ObjectKey{Name: ns}, &n))
	before := n.DeepCopy()
	if value == "" {
		delete(n.Labels, policies.PolicyLabel)
	} else {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[policies.PolicyLabel] = value
	}
	require.NoError(t, f.client.Patch(ctx, &n, client.MergeFrom(before)))
}

// TestConvergeRecordOnDeploymentAndTemplate: an injected Deployment's pod template
// carries the record (so every pod does), and the Deployment the same record and the
// injected label that lets the leaving webhook select it later.
func TestConvergeRecordOnDeploymentAndTemplate(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	dep := convergeDeployment(ns, "recorded")
	require.NoError(t, f.client.Create(ctx, dep))
	got := getDeployment(t, f, client.ObjectKeyFromObject(dep))
	rec := assertMarked(t, got)
	require.NotNil(t, rec)
	assert.Equal(t, policies.RecordVersion, rec.Version)
	assert.Equal(t, "default", rec.Policy)
	assert.NotEmpty(t, rec.Hash)
	assert.Equal(t, []policies.Feature{policies.FeatureAntiAffinity, policies.FeatureTolerations, policies.FeatureSysctls}, rec.Applied)
	var term policies.RecordedTerm
	assert.True(t, rec.Part("antiAffinity", &term), "the term added is recorded")
	assert.Len(t, recordedTolerations(rec), 2, "both tolerations are recorded")
	assert.NotNil(t, policies.RecordedInitContainer(rec), "the init container is recorded")
	raw := got.Annotations[policies.StatusAnnotation]
	t.Logf("record (%d bytes): %s", len(raw), raw)
	assert.Less(t, len(raw), 1024, "well under 1 KiB for the default policy: the Deployment controller copies it to every ReplicaSet")
	assertSingle(t, got)

	// A template change goes through undo-then-apply: still marked, nothing doubled.
	updated := updateDeployment(t, f, client.ObjectKeyFromObject(dep), setImage("nginx:1.28"))
	assert.Equal(t, "nginx:1.28", updated.Spec.Template.Spec.Containers[0].Image)
	assertMarked(t, updated)
	assert.Equal(t, raw, updated.Annotations[policies.StatusAnnotation], "same policy, same record")
	assertSingle(t, updated)

	// Outside opted-in namespaces nothing is injected or marked.
	plain := convergeDeployment(namespace(t, f, nil), "plain")
	require.NoError(t, f.client.Create(ctx, plain))
	assertUninjected(t, plain)
}

// TestConvergeRelaxedPolicyWaitsForARollout: a policy relaxed from 30 s to 120 s does
// not touch a Deployment's template on a metadata-only update (no rollout, generation
// unchanged), and reaches it at the next `kubectl rollout restart`, with one toleration
// per key.
func TestConvergeRelaxedPolicyWaitsForARollout(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	policy := convergePolicy(t, f, 30)
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: policy})
	waitNotReady(t, f, ns, 30)
	dep := convergeDeployment(ns, "relaxed")
	require.NoError(t, f.client.Create(ctx, dep))
	key := client.ObjectKeyFromObject(dep)
	created := getDeployment(t, f, key)
	assert.Equal(t, ptr.To[int64](30), templateSeconds(created, policies.NotReadyTaint))
	rec := assertMarked(t, created)
	require.NotNil(t, rec)
	assertSingle(t, created)

	setPolicyNotReady(t, f, policy, 120, ns)

	// Metadata edits. A label: no spec change, so the generation stays (the
	// Deployment controller would not even look at the template).
	labelled := updateDeployment(t, f, key, func(d *appsv1.Deployment) {
		if d.Labels == nil {
			d.Labels = map[string]string{}
		}
		d.Labels["team"] = "a"
	})
	assert.Equal(t, "a", labelled.Labels["team"])
	assert.Equal(t, created.Spec.Template, labelled.Spec.Template, "a label edit leaves the pod template as stored")
	assert.Equal(t, created.Generation, labelled.Generation, "no spec change, no new generation")
	// An annotation: the API server bumps a Deployment's generation on any annotation
	// change (they are copied to its ReplicaSets), but the template stays as stored, so
	// the Deployment controller starts no new ReplicaSet.
	annotated := updateDeployment(t, f, key, func(d *appsv1.Deployment) {
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations["owner"] = "team-a"
	})
	assert.Equal(t, "team-a", annotated.Annotations["owner"])
	assert.Equal(t, created.Spec.Template, annotated.Spec.Template, "an annotation edit leaves the pod template as stored")
	assert.Equal(t, created.Annotations[policies.StatusAnnotation], annotated.Annotations[policies.StatusAnnotation], "the Deployment's record still describes its template")
	assert.Equal(t, "true", annotated.Labels[policies.InjectedLabel])

	// kubectl rollout restart: a template change, so the relaxed policy applies.
	restart := func(at string) func(*appsv1.Deployment) {
		return func(d *appsv1.Deployment) {
			if d.Spec.Template.Annotations == nil {
				d.Spec.Template.Annotations = map[string]string{}
			}
			d.Spec.Template.Annotations[restartedAtAnnotation] = at
		}
	}
	restarted := updateDeployment(t, f, key, restart("2025-01-01T00:00:00Z"))
	assert.Equal(t, ptr.To[int64](120), templateSeconds(restarted, policies.NotReadyTaint), "the relaxed policy reaches the template at the restart")
	assert.Equal(t, ptr.To[int64](30), templateSeconds(restarted, policies.UnreachableTaint))
	assert.Greater(t, restarted.Generation, created.Generation)
	assert.Equal(t, "2025-01-01T00:00:00Z", restarted.Spec.Template.Annotations[restartedAtAnnotation])
	if newRec := assertMarked(t, restarted); newRec != nil {
		assert.NotEqual(t, rec.Hash, newRec.Hash, "the record names the policy's new version")
	}
	assertSingle(t, restarted)

	// Restarted again under the same policy: undone and applied again, still one per key.
	again := updateDeployment(t, f, key, restart("2025-01-01T00:00:01Z"))
	assert.Equal(t, ptr.To[int64](120), templateSeconds(again, policies.NotReadyTaint))
	assertMarked(t, again)
	assertSingle(t, again)
	assert.Equal(t, restarted.Spec.Template.Spec, again.Spec.Template.Spec, "only the restartedAt annotation changed")
}

// TestConvergeReplicasPatchStartsNoRollout: a Deployment created before its namespace
// opted in is not injected by a patch of spec.replicas on the main resource (kubectl
// scale and the HPA use /scale, which the webhook never sees), nor by a metadata
// patch; its next real template change is.
func TestConvergeReplicasPatchStartsNoRollout(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, nil)
	dep := convergeDeployment(ns, "early")
	require.NoError(t, f.client.Create(ctx, dep))
	key := client.ObjectKeyFromObject(dep)
	before := getDeployment(t, f, key)
	assertUninjected(t, before)

	setNamespaceLabel(t, f, ns, "default")
	require.NoError(t, localwebhook.WaitEffective(ctx, f.client, ns, 30*time.Second))
	f.warnings.Take()

	scaled := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: dep.Name}}
	require.NoError(t, f.client.Patch(ctx, scaled, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":5}}`))))
	assert.Equal(t, ptr.To[int32](5), scaled.Spec.Replicas)
	assert.Equal(t, before.Spec.Template, scaled.Spec.Template, "a replicas patch leaves the pod template as stored")
	assert.Equal(t, before.Generation+1, scaled.Generation, "the replicas change is the only spec change")
	assertUninjected(t, scaled)

	labelled := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: dep.Name}}
	require.NoError(t, f.client.Patch(ctx, labelled, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"a"}}}`))))
	assert.Equal(t, before.Spec.Template, labelled.Spec.Template, "a label patch leaves the pod template as stored")
	assert.Equal(t, scaled.Generation, labelled.Generation)
	assertUninjected(t, labelled)

	// (An annotation change bumps a Deployment's generation by itself: compare templates.)
	annotated := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: dep.Name}}
	require.NoError(t, f.client.Patch(ctx, annotated, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"owner":"team-a"}}}`))))
	assert.Equal(t, before.Spec.Template, annotated.Spec.Template, "an annotation patch leaves the pod template as stored")
	assertUninjected(t, annotated)

	changed := updateDeployment(t, f, key, setImage("nginx:1.28"))
	assert.Equal(t, "nginx:1.28", changed.Spec.Template.Spec.Containers[0].Image)
	assertMarked(t, changed)
	assertSingle(t, changed)
	assert.Equal(t, ptr.To[int64](60), templateSeconds(changed, policies.NotReadyTaint), "injected at the first real template change")
	assert.Equal(t, ptr.To[int64](30), templateSeconds(changed, policies.UnreachableTaint))
}

// TestConvergeServerSideApplyTwice: `kubectl apply --server-side` of the same manifest
// (which lacks the injection) leaves the pod template as stored, also after the policy
// changed; a new image in the manifest gets the current policy, and is stable too.
func TestConvergeServerSideApplyTwice(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	policy := convergePolicy(t, f, 30)
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: policy})
	waitNotReady(t, f, ns, 30)
	apply := func(manifest []byte) *appsv1.Deployment {
		t.Helper()
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ssa"}}
		require.NoError(t, f.client.Patch(ctx, d, client.RawPatch(types.ApplyPatchType, manifest), client.FieldOwner("e2e"), client.ForceOwnership))
		return d
	}
	v1 := convergeManifest(t, ns, "ssa", "nginx:1.27", nil)
	first := apply(v1)
	assertMarked(t, first)
	assertSingle(t, first)
	assert.Equal(t, ptr.To[int64](30), templateSeconds(first, policies.NotReadyTaint))

	second := apply(v1)
	assert.Equal(t, first.Spec.Template, second.Spec.Template, "the same manifest applied again leaves the template as stored")
	assert.Equal(t, first.Generation, second.Generation, "no new generation")
	assert.Equal(t, first.ResourceVersion, second.ResourceVersion, "nothing changed at all: the API server did not even write")

	setPolicyNotReady(t, f, policy, 120, ns)
	third := apply(v1)
	assert.Equal(t, first.Spec.Template, third.Spec.Template, "a re-sync after a policy change starts no rollout")
	assert.Equal(t, first.Generation, third.Generation)

	v2 := convergeManifest(t, ns, "ssa", "nginx:1.28", nil)
	fourth := apply(v2)
	assert.Equal(t, "nginx:1.28", fourth.Spec.Template.Spec.Containers[0].Image)
	assert.Equal(t, ptr.To[int64](120), templateSeconds(fourth, policies.NotReadyTaint), "the new template follows the current policy")
	assertMarked(t, fourth)
	assertSingle(t, fourth)
	fifth := apply(v2)
	assert.Equal(t, fourth.Spec.Template, fifth.Spec.Template)
	assert.Equal(t, fourth.Generation, fifth.Generation)
}

// kubectlApply does what a client-side `kubectl apply -f` of manifest does: create the
// object with the last-applied annotation, or send the three-way strategic merge patch
// between the last applied configuration, the manifest and the live object (nothing
// when it is empty). It returns the stored Deployment and whether anything was sent.
func kubectlApply(t *testing.T, f *fixture, manifest []byte) (*appsv1.Deployment, bool) {
	t.Helper()
	ctx := context.Background()
	var obj map[string]any
	require.NoError(t, json.Unmarshal(manifest, &obj))
	meta := obj["metadata"].(map[string]any)
	key := client.ObjectKey{Namespace: meta["namespace"].(string), Name: meta["name"].(string)}
	meta["annotations"] = map[string]any{lastAppliedAnnotation: string(manifest)}
	modified, err := json.Marshal(obj)
	require.NoError(t, err)

	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("Deployment"))
	err = f.client.Get(ctx, key, live)
	if apierrors.IsNotFound(err) {
		d := &appsv1.Deployment{}
		require.NoError(t, json.Unmarshal(modified, d))
		require.NoError(t, f.client.Create(ctx, d))
		return d, true
	}
	require.NoError(t, err)
	current, err := json.Marshal(live.Object)
	require.NoError(t, err)
	lookup, err := strategicpatch.NewPatchMetaFromStruct(appsv1.Deployment{})
	require.NoError(t, err)
	patch, err := strategicpatch.CreateThreeWayMergePatch([]byte(live.GetAnnotations()[lastAppliedAnnotation]), modified, current, lookup, true)
	require.NoError(t, err)
	if string(patch) == "{}" {
		return getDeployment(t, f, key), false
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	require.NoError(t, f.client.Patch(ctx, d, client.RawPatch(types.StrategicMergePatchType, patch)))
	return d, true
}

// TestConvergeClientSideApplyWithOwnToleration: a manifest with the user's own 600 s
// unreachable toleration, applied with client-side `kubectl apply` again and again (as
// a GitOps tool re-syncs): each apply sends the 600 s back (the live template has 30 s),
// and the template stays as stored, also after the policy changed. A new image
// converges to the current policy in one write and is stable from then on.
func TestConvergeClientSideApplyWithOwnToleration(t *testing.T) {
	f := setup(t)
	policy := convergePolicy(t, f, 30)
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: policy})
	waitNotReady(t, f, ns, 30)

	v1 := convergeManifest(t, ns, "csa", "nginx:1.27", own600)
	created, _ := kubectlApply(t, f, v1)
	assert.Equal(t, ptr.To[int64](30), templateSeconds(created, policies.UnreachableTaint), "the user's 600 s is shortened")
	if rec := assertMarked(t, created); rec != nil {
		assert.Contains(t, recordedTolerations(rec), policies.RecordedToleration{Key: policies.UnreachableTaint, Seconds: 30, Was: ptr.To[int64](600)})
	}
	assertSingle(t, created)
	f.warnings.Take()

	for i := 1; i <= 2; i++ {
		got, sent := kubectlApply(t, f, v1)
		assert.True(t, sent, "apply %d: the live tolerations differ from the manifest's, so kubectl sends a patch", i)
		assert.Equal(t, created.Spec.Template, got.Spec.Template, "apply %d leaves the template as stored", i)
		assert.Equal(t, created.Generation, got.Generation, "apply %d: no new generation", i)
		assert.Equal(t, created.ResourceVersion, got.ResourceVersion, "apply %d: nothing changed at all", i)
	}
	t.Logf("warnings of the re-applies: %q", f.warnings.Take())

	setPolicyNotReady(t, f, policy, 120, ns)
	got, _ := kubectlApply(t, f, v1)
	assert.Equal(t, created.Spec.Template, got.Spec.Template, "a re-apply after a policy change starts no rollout")
	assert.Equal(t, created.Generation, got.Generation)

	v2 := convergeManifest(t, ns, "csa", "nginx:1.28", own600)
	changed, _ := kubectlApply(t, f, v2)
	assert.Equal(t, "nginx:1.28", changed.Spec.Template.Spec.Containers[0].Image)
	assert.Equal(t, ptr.To[int64](120), templateSeconds(changed, policies.NotReadyTaint), "the new template follows the current policy")
	assert.Equal(t, ptr.To[int64](30), templateSeconds(changed, policies.UnreachableTaint))
	if rec := assertMarked(t, changed); rec != nil {
		assert.Contains(t, recordedTolerations(rec), policies.RecordedToleration{Key: policies.UnreachableTaint, Seconds: 30, Was: ptr.To[int64](600)}, "still shortened from the user's 600 s")
	}
	assertSingle(t, changed)
	t.Logf("warnings of the new image: %q", f.warnings.Take())
	for i := 1; i <= 2; i++ {
		got, _ := kubectlApply(t, f, v2)
		assert.Equal(t, changed.Spec.Template, got.Spec.Template, "apply %d of the new manifest: converged", i)
		assert.Equal(t, changed.Generation, got.Generation)
	}
}

// TestConvergeOptOutRemovesTheInjection: ha-injector.io/inject=false on an injected
// Deployment starts no rollout by itself, and at the next template change the
// injection, the record and the label are gone: the template is exactly what it would
// be had ha-injector never been there.
func TestConvergeOptOutRemovesTheInjection(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	dep := convergeDeployment(ns, "leaver")
	require.NoError(t, f.client.Create(ctx, dep))
	key := client.ObjectKeyFromObject(dep)
	injected := getDeployment(t, f, key)
	assertMarked(t, injected)

	control := convergeDeployment(namespace(t, f, nil), "leaver")
	control.Spec.Template.Spec.Containers[0].Image = "nginx:1.28"
	require.NoError(t, f.client.Create(ctx, control))

	optOut := func(d *appsv1.Deployment) {
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations[policies.InjectAnnotation] = "false"
	}
	annotated := updateDeployment(t, f, key, optOut)
	assert.Equal(t, injected.Spec.Template, annotated.Spec.Template, "opting out starts no rollout by itself")
	assertMarked(t, annotated)

	out := updateDeployment(t, f, key, setImage("nginx:1.28"))
	assertUninjected(t, out)
	assert.Equal(t, control.Spec.Template.Spec, out.Spec.Template.Spec, "the template is what it would be without ha-injector")
	assert.Equal(t, control.Spec.Template.Annotations, out.Spec.Template.Annotations)
	assert.Equal(t, "false", out.Annotations[policies.InjectAnnotation])

	later := updateDeployment(t, f, key, setImage("nginx:1.29"))
	assertUninjected(t, later)
}

// TestConvergeLeavingNamespace: once its namespace loses the policy label, an injected
// Deployment (selected by its injected label, through the chart's leaving webhook) loses
// the injection, the record and the label at its next template change. A Deployment
// without the label in that namespace is never sent to the webhook: one that carries a
// copy of an injected template keeps it.
func TestConvergeLeavingNamespace(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	dep := convergeDeployment(ns, "stayer")
	require.NoError(t, f.client.Create(ctx, dep))
	key := client.ObjectKeyFromObject(dep)
	injected := getDeployment(t, f, key)
	assertMarked(t, injected)

	control := convergeDeployment(namespace(t, f, nil), "stayer")
	control.Spec.Template.Spec.Containers[0].Image = "nginx:1.28"
	require.NoError(t, f.client.Create(ctx, control))

	setNamespaceLabel(t, f, ns, "")
	// The API server and the webhook's cache both see the label go, asynchronously:
	// wait until a template change (dry run) comes back without the injection.
	var warned []string
	func() {
		defer func() {
			if t.Failed() {
				t.Logf("warnings of the last try: %q", warned)
			}
		}()
		waitFor(t, "a template change in the namespace that left to remove the injection", func(int) bool {
			d := getDeployment(t, f, key)
			d.Spec.Template.Spec.Containers[0].Image = "nginx:1.28"
			require.NoError(t, f.client.Update(ctx, d, client.DryRunAll))
			warned = f.warnings.Take()
			return policies.ReadRecord(d.Spec.Template.Annotations) == nil
		})
	}()
	unchanged := getDeployment(t, f, key)
	assert.Equal(t, injected.Spec.Template, unchanged.Spec.Template, "dry runs stored nothing")

	out := updateDeployment(t, f, key, setImage("nginx:1.28"))
	assertUninjected(t, out)
	assert.Equal(t, control.Spec.Template.Spec, out.Spec.Template.Spec, "the template is what it would be without ha-injector")
	assert.Equal(t, control.Spec.Template.Annotations, out.Spec.Template.Annotations)
	f.warnings.Take()

	// A Deployment without the injected label, carrying an injected template (record and
	// all, as if copied): the webhook would take the injection back if it were called.
	copied := convergeDeployment(ns, "copied")
	copied.Spec.Template = *injected.Spec.Template.DeepCopy()
	copied.Spec.Selector = injected.Spec.Selector.DeepCopy()
	require.NoError(t, f.client.Create(ctx, copied))
	assert.Equal(t, injected.Spec.Template, copied.Spec.Template, "created as sent")
	changed := updateDeployment(t, f, client.ObjectKeyFromObject(copied), setImage("nginx:1.28"))
	want := injected.Spec.Template.DeepCopy()
	want.Spec.Containers[0].Image = "nginx:1.28"
	assert.Equal(t, *want, changed.Spec.Template, "a Deployment without the injected label is not sent to the webhook")
	assert.NotContains(t, changed.Labels, policies.InjectedLabel)
	assert.Empty(t, f.warnings.Take(), "no webhook, no warnings")
}

// TestConvergeMissingPolicyKeepsTheInjection: a namespace whose label names an HAPolicy
// that does not exist (a typo, a cache miss) must not strip the HA settings: a template
// change of an injected Deployment keeps the injection, and kubectl prints a warning.
func TestConvergeMissingPolicyKeepsTheInjection(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	dep := convergeDeployment(ns, "typo")
	require.NoError(t, f.client.Create(ctx, dep))
	key := client.ObjectKeyFromObject(dep)
	injected := getDeployment(t, f, key)
	assertMarked(t, injected)

	missing := fmt.Sprintf("no-such-policy-%d", namespaces.Add(1))
	setNamespaceLabel(t, f, ns, missing)
	waitMissingPolicy(t, f, ns, missing)

	out := updateDeployment(t, f, key, setImage("nginx:1.28"))
	assert.Contains(t, strings.Join(f.warnings.Take(), "\n"), fmt.Sprintf("HAPolicy %q", missing), "kubectl prints why nothing was converged")
	assert.Equal(t, "nginx:1.28", out.Spec.Template.Spec.Containers[0].Image)
	assertMarked(t, out)
	assertSingle(t, out)
	assert.Equal(t, injected.Spec.Template.Annotations[policies.StatusAnnotation], out.Spec.Template.Annotations[policies.StatusAnnotation], "the record is kept")
	assert.Equal(t, injected.Spec.Template.Spec.Tolerations, out.Spec.Template.Spec.Tolerations)
}

// waitMissingPolicy waits until the webhook's cache sees ns naming the missing policy.
func waitMissingPolicy(t *testing.T, f *fixture, ns, missing string) {
	t.Helper()
	waitFor(t, "the webhook to see the namespace name "+missing, func(i int) bool {
		require.NoError(t, f.client.Create(context.Background(), newPod(ns, fmt.Sprintf("probe-%d", i)), client.DryRunAll))
		return strings.Contains(strings.Join(f.warnings.Take(), "\n"), fmt.Sprintf("HAPolicy %q", missing))
	})
}

// TestConvergeMissingPolicyReapplyKeepsTheInjection: in a namespace naming a policy
// that does not exist, re-applying the unchanged manifest (which lacks the injection:
// `kubectl replace`, a GitOps re-sync) must neither strip the injection nor start a
// rollout: the template is unchanged apart from the recorded injection.
func TestConvergeMissingPolicyReapplyKeepsTheInjection(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	dep := convergeDeployment(ns, "typo-replace")
	require.NoError(t, f.client.Create(ctx, dep))
	key := client.ObjectKeyFromObject(dep)
	injected := getDeployment(t, f, key)
	assertMarked(t, injected)

	missing := fmt.Sprintf("no-such-policy-%d", namespaces.Add(1))
	setNamespaceLabel(t, f, ns, missing)
	waitMissingPolicy(t, f, ns, missing)

	replaced := updateDeployment(t, f, key, func(d *appsv1.Deployment) {
		d.Spec.Template = *convergeDeployment(ns, "typo-replace").Spec.Template.DeepCopy()
	})
	assert.Contains(t, strings.Join(f.warnings.Take(), "\n"), fmt.Sprintf("HAPolicy %q", missing))
	assert.Equal(t, injected.Spec.Template, replaced.Spec.Template, "the stored template is kept: no rollout, no HA settings stripped")
	assert.Equal(t, injected.Generation, replaced.Generation)
}

// TestConvergePodsCarryTheRecord: the pods of a Deployment (created here from its
// template, as the ReplicaSet controller would) carry the template's record as it is,
// and the Pod webhook injects nothing twice.
func TestConvergePodsCarryTheRecord(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ns := namespace(t, f, map[string]string{policies.PolicyLabel: "default"})
	dep := convergeDeployment(ns, "carrier")
	require.NoError(t, f.client.Create(ctx, dep))
	d := getDeployment(t, f, client.ObjectKeyFromObject(dep))
	assertMarked(t, d)
	f.warnings.Take()

	const hash = "6b8f7d9c5"
	tmpl := d.Spec.Template.DeepCopy()
	tmpl.Labels["pod-template-hash"] = hash
	// The Deployment controller copies the Deployment's annotations to its ReplicaSets.
	rsAnnotations := map[string]string{"deployment.kubernetes.io/desired-replicas": "3", "deployment.kubernetes.io/revision": "1"}
	for k, v := range d.Annotations {
		rsAnnotations[k] = v
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: d.Name + "-" + hash, Labels: tmpl.Labels, Annotations: rsAnnotations,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: *tmpl},
	}
	require.NoError(t, f.client.Create(ctx, rs))
	for i := 0; i < 3; i++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: rs.Name + "-", Labels: tmpl.Labels, Annotations: tmpl.Annotations,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
			Spec: *tmpl.Spec.DeepCopy(),
		}
		require.NoError(t, f.client.Create(ctx, pod))
		rec := policies.ReadRecord(pod.Annotations)
		assert.NotNil(t, rec, "pod %s carries a record", pod.Name)
		assert.Equal(t, tmpl.Annotations[policies.StatusAnnotation], pod.Annotations[policies.StatusAnnotation], "pod %s carries its template's record as it is", pod.Name)
		checkInjected(t, pod)
		assertSingle(t, &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: pod.Spec}}})
		assert.Equal(t, tmpl.Spec.Tolerations, pod.Spec.Tolerations, "pod %s: the template's tolerations, nothing added", pod.Name)
		assert.Equal(t, tmpl.Spec.InitContainers, pod.Spec.InitContainers, "pod %s: the template's init containers", pod.Name)
		// (Not the affinity as a whole: the API server turns the term's matchLabelKeys
		// into a labelSelector requirement on the pod's pod-template-hash.)
	}
	assert.Empty(t, f.warnings.Take(), "controller-made pods get no warnings")
}

// recordedTolerations is the tolerations' part of a record.
func recordedTolerations(rec *policies.Record) []policies.RecordedToleration {
	var tolerations []policies.RecordedToleration
	rec.Part("tolerations", &tolerations)
	return tolerations
}
