package chart

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/golden"
)

// TestValuesSchemaFollowsTheCRD keeps the chart's values.schema.json definition of an
// HAPolicy spec ($defs.haPolicySpec) equal to the CRD's OpenAPI schema, made strict
// (additionalProperties: false, as the API server's pruning would drop unknown fields
// silently), so a policy typo in values fails `helm install` with the field named.
// Refresh with `make golden` after regenerating the CRD.
func TestValuesSchemaFollowsTheCRD(t *testing.T) {
	crdPath := filepath.Join(repoRoot, chartrender.ChartDir, "crds", "ha-injector.io_hapolicies.yaml")
	data, err := os.ReadFile(crdPath)
	require.NoError(t, err)
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema struct {
						Properties map[string]any `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	require.NoError(t, yaml.Unmarshal(data, &crd))
	require.Len(t, crd.Spec.Versions, 1, "one served version; extend this test when there are more")
	spec, ok := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].(map[string]any)
	require.True(t, ok, "the CRD has a spec schema")

	schemaPath := filepath.Join(repoRoot, chartrender.ChartDir, "values.schema.json")
	data, err = os.ReadFile(schemaPath)
	require.NoError(t, err)
	var schema map[string]any
	require.NoError(t, json.Unmarshal(data, &schema))
	defs, ok := schema["$defs"].(map[string]any)
	require.True(t, ok, "values.schema.json has $defs")
	defs["haPolicySpec"] = strictJSONSchema(spec)

	out, err := json.MarshalIndent(schema, "", "  ")
	require.NoError(t, err)
	golden.Check(t, schemaPath, append(out, '\n'))
}

// strictJSONSchema turns a structural OpenAPI schema into a JSON schema that rejects
// unknown fields, dropping the Kubernetes extensions JSON schema does not know.
func strictJSONSchema(node any) any {
	switch n := node.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, v := range n {
			if strings.HasPrefix(k, "x-kubernetes-") {
				continue
			}
			if k == "properties" {
				props := map[string]any{}
				for name, p := range v.(map[string]any) {
					props[name] = strictJSONSchema(p)
				}
				out[k] = props
				continue
			}
			out[k] = strictJSONSchema(v)
		}
		if _, hasProps := n["properties"]; hasProps && n["x-kubernetes-preserve-unknown-fields"] != true {
			out["additionalProperties"] = false
		}
		return out
	case []any:
		out := make([]any, len(n))
		for i, v := range n {
			out[i] = strictJSONSchema(v)
		}
		return out
	default:
		return node
	}
}
