package policies_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"

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

func TestMutateRejectsOtherTypes(t *testing.T) {
	_, err := policies.Mutate(defaultCtx, &batchv1.Job{})
	assert.ErrorContains(t, err, "not *v1.Job")
	_, err = policies.Mutate(defaultCtx, nil)
	assert.Error(t, err)
}

func TestStatusAnnotation(t *testing.T) {
	doc := []byte(`{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
		"spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
			"template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "app", "image": "app"}]}}}}`)
	m, err := policies.Mutate(defaultCtx, decodeDeployment(t, doc))
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
