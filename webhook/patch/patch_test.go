package patch_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gomodules.xyz/jsonpatch/v2"
	apiserverpatch "gopkg.in/evanphx/json-patch.v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/webhook/patch"
)

// defaultCtx is the built-in default policy in an opted-in namespace.
var defaultCtx = policies.Context{Policy: v1alpha1.NewDefault(), SysctlImage: "ghcr.io/ha-injector/ha-injector:test"}

// touchedPaths are where an operation may point: the metadata the engine
// writes, the registered injections' parts of a Pod's and a Deployment's pod
// spec, or a parent it creates to hold them (a nested part's struct).
var touchedPaths = func() []string {
	paths := []string{"/metadata/annotations", "/metadata/labels", "/spec/template/metadata/annotations"}
	for _, p := range policies.Parts() {
		for _, spec := range []string{"/spec", "/spec/template/spec"} {
			paths = append(paths, spec+"/"+p.Path[0])
		}
	}
	return paths
}()

// parentPaths may only be the target of an "add" that creates them.
var parentPaths = map[string]bool{"/metadata": true, "/spec": true, "/spec/template": true, "/spec/template/metadata": true, "/spec/template/spec": true}

// TestBuildCreatesMissingParents mutates objects that lack a parent of what
// the engine adds (possible in a hand-written manifest or a hand-made request,
// never in what the API server sends), and applies the patch exactly as the
// API server does, where an operation whose parent is missing fails: the
// patch creates each missing parent, touches nothing else, and gives the
// engine's typed result.
func TestBuildCreatesMissingParents(t *testing.T) {
	container := `"containers": [{"name": "app", "image": "app"}]`
	cases := map[string]string{
		"pod without metadata":                   `{"apiVersion": "v1", "kind": "Pod", "spec": {` + container + `}}`,
		"pod with null metadata":                 `{"apiVersion": "v1", "kind": "Pod", "metadata": null, "spec": {` + container + `}}`,
		"pod without spec":                       `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "p"}}}`,
		"pod with null affinity and empty lists": `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "p"}, "annotations": {}}, "spec": {"affinity": null, "tolerations": [], "initContainers": [], "securityContext": {}, ` + container + `}}`,
		"pod with other affinity":                `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "p"}}, "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]}}}, ` + container + `}}`,
		"deployment without spec":                `{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}`,
		"deployment without template":            `{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}}}}`,
		"deployment with null template":          `{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}}, "template": null}}`,
		"deployment without template metadata":   `{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}}, "template": {"spec": {` + container + `}}}}`,
		"deployment without template spec":       `{"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}}}}`,
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			in := decode(t, []byte(doc))
			m, err := policies.Mutate(defaultCtx, in)
			require.NoError(t, err)
			require.True(t, m.Changed, "the default policy injects into every case")
			ops, err := patch.Build([]byte(doc), in, m.Object)
			require.NoError(t, err)
			for _, op := range ops {
				assert.Truef(t, allowed(op.Operation, op.Path), "%s %s is outside the parts the engine changes", op.Operation, op.Path)
			}
			got := applyAsAPIServer(t, []byte(doc), ops)
			want, err := json.Marshal(m.Object)
			require.NoError(t, err)
			gotTyped, err := json.Marshal(decode(t, got))
			require.NoError(t, err)
			assert.JSONEq(t, string(want), string(gotTyped))
		})
	}
}

// TestBuildIgnoresTheRestOfALargePod: the patch of a Pod with a thousand
// env vars and a large annotation is the same as the patch of the same Pod
// without them, so none of it is diffed or re-encoded into the answer.
func TestBuildIgnoresTheRestOfALargePod(t *testing.T) {
	small := `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "p"}, "annotations": {"big": "y"}}, "spec": {"containers": [{"name": "app", "image": "app"}]}}`
	var env []string
	for i := range 1000 {
		env = append(env, fmt.Sprintf(`{"name": "VAR_%d", "value": "%s"}`, i, strings.Repeat("x", 500)))
	}
	large := `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "p"}, "annotations": {"big": "` + strings.Repeat("y", 200_000) + `"}},
		"spec": {"containers": [{"name": "app", "image": "app", "env": [` + strings.Join(env, ",") + `]}]}}`
	opsOf := func(doc string) string {
		in := decode(t, []byte(doc))
		m, err := policies.Mutate(defaultCtx, in)
		require.NoError(t, err)
		ops, err := patch.Build([]byte(doc), in, m.Object)
		require.NoError(t, err)
		encoded, err := json.Marshal(ops)
		require.NoError(t, err)
		return string(encoded)
	}
	smallOps, largeOps := opsOf(small), opsOf(large)
	assert.Equal(t, smallOps, largeOps)
	assert.Less(t, len(largeOps), 4096)
}

// TestBuildRemovesOnlyWhatTheEngineAdded: taking an injection back (the
// namespace stopped opting in) removes the injected parts and leaves the
// workload's own init container, toleration and sysctl where they were.
func TestBuildRemovesOnlyWhatTheEngineAdded(t *testing.T) {
	doc := []byte(`{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"team": "a"}},
		"spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
		"spec": {"initContainers": [{"name": "setup", "image": "busybox", "futureField": 1}],
			"tolerations": [{"key": "dedicated", "operator": "Exists"}],
			"securityContext": {"runAsUser": 1000, "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]},
			"containers": [{"name": "app", "image": "app"}]}}}}`)
	in := decode(t, doc)
	m, err := policies.Mutate(defaultCtx, in)
	require.NoError(t, err)
	ops, err := patch.Build(doc, in, m.Object)
	require.NoError(t, err)
	injectedDoc := applyAsAPIServer(t, doc, ops)

	injected := decode(t, injectedDoc)
	out, err := policies.Mutate(policies.Context{NotOptedIn: true}, injected)
	require.NoError(t, err)
	require.True(t, out.Changed)
	back, err := patch.Build(injectedDoc, injected, out.Object)
	require.NoError(t, err)
	for _, op := range back {
		assert.Truef(t, allowed(op.Operation, op.Path), "%s %s is outside the parts the engine changes", op.Operation, op.Path)
	}
	assert.JSONEq(t, string(doc), string(applyAsAPIServer(t, injectedDoc, back)), "back to the manifest, unknown field included")
}

func allowed(op, path string) bool {
	if parentPaths[path] {
		return op == "add"
	}
	for _, p := range touchedPaths {
		if path == p || strings.HasPrefix(path, p+"/") {
			// The metadata maps: only ha-injector's own keys.
			if strings.HasSuffix(p, "/annotations") && path != p {
				return path == p+"/"+escape(policies.StatusAnnotation)
			}
			if strings.HasSuffix(p, "/labels") && path != p {
				return path == p+"/"+escape(policies.InjectedLabel)
			}
			return true
		}
	}
	return false
}

func escape(key string) string { return strings.ReplaceAll(key, "/", "~1") }

func applyAsAPIServer(t *testing.T, doc []byte, ops any) []byte {
	t.Helper()
	encoded, err := json.Marshal(ops)
	require.NoError(t, err)
	p, err := apiserverpatch.DecodePatch(encoded)
	require.NoError(t, err)
	out, err := p.Apply(doc)
	require.NoError(t, err)
	return out
}

func decode(t *testing.T, doc []byte) runtime.Object {
	t.Helper()
	var probe struct{ Kind string }
	require.NoError(t, json.Unmarshal(doc, &probe))
	var obj runtime.Object = &corev1.Pod{}
	if probe.Kind == "Deployment" {
		obj = &appsv1.Deployment{}
	}
	require.NoError(t, json.Unmarshal(doc, obj))
	return obj
}

func TestEncodeWritesWhatJSONMarshalWrites(t *testing.T) {
	ops := []jsonpatch.Operation{
		jsonpatch.NewOperation("remove", "/spec/initContainers/0", nil),
		jsonpatch.NewOperation("add", "/metadata/annotations/ha-injector.io~1status", `{"v":1,"<tag>":"a&b"}`),
		jsonpatch.NewOperation("replace", "/spec/tolerations/1/tolerationSeconds", int64(30)),
		jsonpatch.NewOperation("add", "/spec/affinity", nil),
		jsonpatch.NewOperation("replace", "/metadata/labels/odd\"key\\é", "v"),
		jsonpatch.NewOperation("add", "/spec/securityContext/sysctls", []corev1.Sysctl{{Name: "net.ipv4.tcp_keepalive_time", Value: "30"}}),
		jsonpatch.NewOperation("test", "/spec/x", nil),
		jsonpatch.NewOperation("remove", "/spec/y", "unusual"),
	}
	want, err := json.Marshal(ops)
	require.NoError(t, err)
	got, err := patch.Encode(ops)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got))
	for _, empty := range [][]jsonpatch.Operation{nil, {}} {
		got, err = patch.Encode(empty)
		require.NoError(t, err)
		assert.Equal(t, "[]", string(got))
	}
	_, err = patch.Encode([]jsonpatch.Operation{jsonpatch.NewOperation("add", "/x", func() {})})
	assert.ErrorContains(t, err, "add /x")
}
