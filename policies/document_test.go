package policies_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

var defaultCtx = policies.Context{Policy: v1alpha1.NewDefault(), SysctlImage: sysctlImage}

func TestParsePolicy(t *testing.T) {
	cases := []struct {
		name    string
		doc     string
		wantErr string
	}{
		{"accepts a minimal policy and defaults it", "apiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: p}\n", ""},
		{"names an unknown field", "apiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: p}\nspec: {antiAffinity: {topologykey: x}}\n", `unknown field "spec.antiAffinity.topologykey"`},
		{"names a mistyped field", "apiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: p}\nspec: {tolerations: {notReadySeconds: soon}}\n", "spec.tolerations.notReadySeconds"},
		{"names an invalid value", "apiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: p}\nspec: {antiAffinity: {weight: 500}}\n", "spec.antiAffinity.weight: Invalid value: 500: must be between 1 and 100"},
		{"rejects an unquoted number as a sysctl value, as the API server does", "apiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: p}\nspec: {sysctls: {values: {net.ipv4.tcp_retries2: 9}}}\n", "spec.sysctls.values"},
		{"rejects another kind", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p}\n", `got apiVersion "v1" and kind "ConfigMap"`},
		{"rejects YAML that does not parse", "apiVersion: [", "yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policies.ParsePolicy([]byte(tc.doc))
			if tc.wantErr == "" {
				require.NoError(t, err)
				assert.Equal(t, "p", p.Name)
				assert.Equal(t, v1alpha1.DefaultTopologyKey, p.Spec.AntiAffinity.TopologyKey)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

func TestMutateDocumentErrorsNameTheProblem(t *testing.T) {
	cases := map[string]struct{ doc, want string }{
		"missing kind":               {`{"apiVersion": "v1", "metadata": {"name": "x"}}`, "field kind is missing"},
		"missing apiVersion":         {`{"kind": "Pod", "metadata": {"name": "x"}}`, "field apiVersion is missing"},
		"a string where an int32 is": {`{"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "three"}}`, "spec.replicas"},
		"a list where a map is":      {`{"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": ["a"]}}`, "metadata.labels"},
		"not an object":              {`[1, 2]`, "not a Kubernetes object"},
		"a wrongly cased field name": {`{"apiVersion": "v1", "kind": "Pod", "spec": {"hostnetwork": "yes"}}`, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := policies.MutateDocument(defaultCtx, []byte(tc.doc))
			if tc.want == "" {
				// Field names are case-sensitive, as in the API server: an
				// unknown "hostnetwork" is not decoded into hostNetwork.
				// Missing objects are created by the patch.
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestMutateDocumentLeavesOtherKindsAlone(t *testing.T) {
	doc := []byte(`{"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web"}}`)
	out, m, err := policies.MutateDocument(defaultCtx, doc)
	require.NoError(t, err)
	assert.Nil(t, m)
	assert.Equal(t, doc, out)
}

func TestMutateRejectsOtherTypes(t *testing.T) {
	_, err := policies.Mutate(defaultCtx, &batchv1.Job{})
	assert.ErrorContains(t, err, "not *v1.Job")
	_, err = policies.Mutate(defaultCtx, nil)
	assert.Error(t, err)
}

// TestUnknownFieldsSurvive proves the patch never drops what this build's
// k8s.io/api does not know: a newer cluster's fields at every level, in the
// init container that ha-sysctl is inserted in front of and in a toleration
// that is shortened in place, come through unchanged.
func TestUnknownFieldsSurvive(t *testing.T) {
	doc := []byte(`{"apiVersion": "v1", "kind": "Pod",
		"metadata": {"name": "p", "labels": {"app": "p"}, "futureMeta": "m"},
		"spec": {
			"futureSpec": {"a": [1, 2]},
			"initContainers": [{"name": "setup", "image": "busybox", "futureContainer": "c"}],
			"containers": [{"name": "app", "image": "app", "futureContainer": "d"}],
			"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300, "futureToleration": "t"}]
		},
		"futureTop": true}`)
	out, m, err := policies.MutateDocument(defaultCtx, doc)
	require.NoError(t, err)
	for _, op := range m.Patch {
		assert.NotEqual(t, "remove", op.Operation, "the patch removes %s", op.Path)
	}

	var got map[string]any
	require.NoError(t, json.Unmarshal(out, &got))
	spec := got["spec"].(map[string]any)
	assert.Equal(t, true, got["futureTop"])
	assert.Equal(t, "m", got["metadata"].(map[string]any)["futureMeta"])
	assert.Equal(t, map[string]any{"a": []any{1.0, 2.0}}, spec["futureSpec"])

	inits := spec["initContainers"].([]any)
	require.Len(t, inits, 2)
	assert.Equal(t, policies.SysctlContainerName, inits[0].(map[string]any)["name"])
	assert.NotContains(t, inits[0], "futureContainer", "the user's unknown field moved onto ha-sysctl")
	assert.Equal(t, "setup", inits[1].(map[string]any)["name"])
	assert.Equal(t, "c", inits[1].(map[string]any)["futureContainer"])
	assert.Equal(t, "d", spec["containers"].([]any)[0].(map[string]any)["futureContainer"])

	tols := spec["tolerations"].([]any)
	require.Len(t, tols, 2)
	assert.Equal(t, 30.0, tols[0].(map[string]any)["tolerationSeconds"])
	assert.Equal(t, "t", tols[0].(map[string]any)["futureToleration"])
}

// TestManagedFieldsAreNotDiffed checks that managedFields neither appear in
// the patch nor get lost from the object.
func TestManagedFieldsAreNotDiffed(t *testing.T) {
	doc := []byte(`{"apiVersion": "v1", "kind": "Pod",
		"metadata": {"name": "p", "labels": {"app": "p"},
			"managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]},
		"spec": {"containers": [{"name": "app", "image": "app"}]}}`)
	out, m, err := policies.MutateDocument(defaultCtx, doc)
	require.NoError(t, err)
	require.NotEmpty(t, m.Patch)
	for _, op := range m.Patch {
		assert.NotContains(t, op.Path, "managedFields")
	}
	var pod corev1.Pod
	require.NoError(t, json.Unmarshal(out, &pod))
	require.Len(t, pod.ManagedFields, 1)
	assert.Equal(t, "kubectl", pod.ManagedFields[0].Manager)
}

func TestStatusAnnotation(t *testing.T) {
	doc := []byte(`{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
		"spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
			"template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "app", "image": "app"}]}}}}`)
	_, m, err := policies.MutateDocument(defaultCtx, doc)
	require.NoError(t, err)
	dep := m.Object.(*appsv1.Deployment)
	raw := dep.Annotations[policies.StatusAnnotation]
	assert.Less(t, len(raw), 1024, "the Deployment controller copies it to every ReplicaSet: keep it small")
	assert.Equal(t, raw, dep.Spec.Template.Annotations[policies.StatusAnnotation], "every pod carries the record")
	assert.Equal(t, "true", dep.Labels[policies.InjectedLabel])
	var status policies.Record
	require.NoError(t, json.Unmarshal([]byte(raw), &status))
	assert.Equal(t, policies.RecordVersion, status.Version)
	assert.Equal(t, "default", status.Policy)
	assert.Equal(t, []policies.Feature{policies.FeatureTolerations, policies.FeatureSysctls}, status.Applied)
	assert.Contains(t, status.Skipped[policies.FeatureAntiAffinity], "fewer than minReplicas 2")
}

func TestIsSafeSysctl(t *testing.T) {
	assert.True(t, policies.IsSafeSysctl("net.ipv4.tcp_keepalive_time"))
	assert.True(t, policies.IsSafeSysctl("net/ipv4/tcp_keepalive_probes"))
	assert.False(t, policies.IsSafeSysctl("net.ipv4.tcp_retries2"))
}
