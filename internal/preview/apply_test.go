package preview_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/ha-injector/ha-injector/internal/preview"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/webhook/patch"
)

var defaultCtx = policies.Context{Policy: v1alpha1.NewDefault(), SysctlImage: "ghcr.io/ha-injector/ha-injector:test"}

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
			_, _, err := preview.Document(defaultCtx, []byte(tc.doc))
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
	out, m, err := preview.Document(defaultCtx, doc)
	require.NoError(t, err)
	assert.Nil(t, m)
	assert.Equal(t, doc, out)
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
	out, ops := documentAndOps(t, doc)
	for _, op := range ops {
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
	out, ops := documentAndOps(t, doc)
	require.NotEmpty(t, ops)
	for _, op := range ops {
		assert.NotContains(t, op.Path, "managedFields")
	}
	var pod corev1.Pod
	require.NoError(t, json.Unmarshal(out, &pod))
	require.Len(t, pod.ManagedFields, 1)
	assert.Equal(t, "kubectl", pod.ManagedFields[0].Manager)
}

// documentAndOps runs doc through preview's path and also returns the
// operations the webhook would send for it.
func documentAndOps(t *testing.T, doc []byte) ([]byte, []jsonpatch.Operation) {
	t.Helper()
	out, m, err := preview.Document(defaultCtx, doc)
	require.NoError(t, err)
	require.NotNil(t, m)
	var pod corev1.Pod
	require.NoError(t, json.Unmarshal(doc, &pod))
	ops, err := patch.Build(doc, &pod, m.Object)
	require.NoError(t, err)
	return out, ops
}
