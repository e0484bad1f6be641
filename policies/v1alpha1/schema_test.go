package v1alpha1_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	schemavalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

const crdPath = "../../charts/ha-injector/crds/ha-injector.io_hapolicies.yaml"

// apiServerSchema applies the generated CRD's schema the way the API server
// does: structural defaulting, OpenAPI validation, then the CEL rules.
type apiServerSchema struct {
	structural *structuralschema.Structural
	validator  schemavalidation.SchemaValidator
	cel        *cel.Validator
}

func loadCRD(t *testing.T) *apiextensions.CustomResourceDefinition {
	t.Helper()
	data, err := os.ReadFile(crdPath)
	require.NoError(t, err)
	var v1 apiextensionsv1.CustomResourceDefinition
	require.NoError(t, yaml.UnmarshalStrict(data, &v1))
	var internal apiextensions.CustomResourceDefinition
	require.NoError(t, apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1, &internal, nil))
	// The API server records the stored version when it creates the CRD.
	internal.Status.StoredVersions = []string{"v1alpha1"}
	return &internal
}

func loadSchema(t *testing.T) *apiServerSchema {
	t.Helper()
	crd := loadCRD(t)
	require.Len(t, crd.Spec.Versions, 1)
	// The conversion to the internal type hoists a schema shared by all
	// versions to spec.validation.
	require.NotNil(t, crd.Spec.Validation)
	props := crd.Spec.Validation.OpenAPIV3Schema
	structural, err := structuralschema.NewStructural(props)
	require.NoError(t, err)
	validator, _, err := schemavalidation.NewSchemaValidator(props)
	require.NoError(t, err)
	return &apiServerSchema{
		structural: structural,
		validator:  validator,
		cel:        cel.NewValidator(structural, true, celconfig.PerCallLimit),
	}
}

// admit defaults and validates obj (a JSON object) as the API server would
// on create, returning the defaulted object and the errors.
func (s *apiServerSchema) admit(t *testing.T, obj map[string]any) (map[string]any, field.ErrorList) {
	t.Helper()
	structuraldefaulting.Default(obj, s.structural)
	errs := schemavalidation.ValidateCustomResource(nil, obj, s.validator)
	celErrs, _ := s.cel.Validate(context.Background(), nil, s.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return obj, append(errs, celErrs...)
}

// TestCRDIsAcceptedByTheAPIServer runs the API server's own CRD validation,
// which also compiles the CEL rules and checks their estimated cost.
func TestCRDIsAcceptedByTheAPIServer(t *testing.T) {
	crd := loadCRD(t)
	errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), crd)
	assert.Empty(t, errs)
	assert.Equal(t, "hapolicies.ha-injector.io", crd.Name)
	assert.Equal(t, apiextensions.ClusterScoped, crd.Spec.Scope)
	assert.Equal(t, []string{"hap"}, crd.Spec.Names.ShortNames)
}

// TestDefaultingMatchesSchema checks that Go defaulting and the CRD's
// defaults give the same policy, from an empty spec and from partial ones.
func TestDefaultingMatchesSchema(t *testing.T) {
	s := loadSchema(t)
	specs := map[string]string{
		"an empty spec":  `{}`,
		"no spec at all": ``,
		"a disabled feature keeps its other defaults": `{"antiAffinity": {"enabled": false}}`,
		"explicit zero seconds are kept":              `{"tolerations": {"notReadySeconds": 0}}`,
		"explicit values replace the default set":     `{"sysctls": {"values": {"net.ipv4.tcp_retries2": "8"}}}`,
		"audit mode with a zone key":                  `{"mode": "Audit", "antiAffinity": {"topologyKey": "topology.kubernetes.io/zone", "type": "Required"}}`,
		"a zone spread with one field set":            `{"zoneSpread": {"whenUnsatisfiable": "DoNotSchedule"}}`,
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			doc := `{"apiVersion": "ha-injector.io/v1alpha1", "kind": "HAPolicy", "metadata": {"name": "p"}`
			if spec != "" {
				doc += `, "spec": ` + spec
			}
			doc += `}`

			var fromServer map[string]any
			require.NoError(t, json.Unmarshal([]byte(doc), &fromServer))
			fromServer, errs := s.admit(t, fromServer)
			require.Empty(t, errs)

			var p v1alpha1.HAPolicy
			require.NoError(t, json.Unmarshal([]byte(doc), &p))
			p.Default()
			require.Empty(t, p.Validate())

			server, err := json.Marshal(fromServer)
			require.NoError(t, err)
			local, err := json.Marshal(&p)
			require.NoError(t, err)
			assert.JSONEq(t, string(server), string(local))
		})
	}
}

func TestNewDefaultIsTheEmptySpecDefaulted(t *testing.T) {
	p := v1alpha1.NewDefault()
	assert.Equal(t, "default", p.Name)
	assert.Equal(t, v1alpha1.ModeEnforce, p.Spec.Mode)
	assert.Equal(t, v1alpha1.AntiAffinityPreferred, p.Spec.AntiAffinity.Type)
	assert.Equal(t, int64(60), *p.Spec.Tolerations.NotReadySeconds)
	assert.Equal(t, int64(30), *p.Spec.Tolerations.UnreachableSeconds)
	assert.Empty(t, p.Spec.Sysctls.Method, "the installation's default, resolved at admission")
	assert.Empty(t, p.Spec.Sysctls.Image, "the installation's image, resolved at admission")
	assert.Len(t, p.Spec.Sysctls.Values, 4)
	assert.Empty(t, p.Validate())
}

// TestValidation runs every case through Go validation and through the CRD
// schema (OpenAPI and CEL, as the API server applies them): both must agree
// on whether the policy is valid, and Go must name the field at fault.
func TestValidation(t *testing.T) {
	s := loadSchema(t)
	cases := []struct {
		name  string
		spec  string
		field string // "" when valid; otherwise the field Go must name
	}{
		{"accepts the empty spec", `{}`, ""},
		{"accepts every field set to a legal value", `{"mode": "Audit",
			"antiAffinity": {"enabled": true, "type": "Required", "topologyKey": "topology.kubernetes.io/zone", "weight": 1, "minReplicas": 1},
			"tolerations": {"enabled": true, "notReadySeconds": 0, "unreachableSeconds": 3600},
			"sysctls": {"enabled": true, "method": "Auto", "image": "registry.example:5000/tools/busybox@sha256:abc", "values": {"net.ipv4.tcp_rmem": "4096 87380 6291456", "net/ipv4/tcp_retries2": "8"}}}`, ""},
		{"accepts disabled sysctls with no values", `{"sysctls": {"enabled": false, "values": {}}}`, ""},
		{"accepts a hard zone spread on a rack label", `{"zoneSpread": {"enabled": true, "topologyKey": "example.com/rack", "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule"}}`, ""},
		{"rejects zone spread maxSkew 0", `{"zoneSpread": {"maxSkew": 0}}`, "spec.zoneSpread.maxSkew"},
		{"rejects an unknown whenUnsatisfiable", `{"zoneSpread": {"whenUnsatisfiable": "Never"}}`, "spec.zoneSpread.whenUnsatisfiable"},
		{"rejects a zone key with a space", `{"zoneSpread": {"topologyKey": "topology.kubernetes.io/ zone"}}`, "spec.zoneSpread.topologyKey"},
		{"rejects an unknown mode", `{"mode": "Enforcing"}`, "spec.mode"},
		{"rejects an unknown anti-affinity type", `{"antiAffinity": {"type": "Hard"}}`, "spec.antiAffinity.type"},
		{"rejects weight 0", `{"antiAffinity": {"weight": 0}}`, "spec.antiAffinity.weight"},
		{"rejects weight 101", `{"antiAffinity": {"weight": 101}}`, "spec.antiAffinity.weight"},
		{"rejects minReplicas 0", `{"antiAffinity": {"minReplicas": 0}}`, "spec.antiAffinity.minReplicas"},
		{"rejects a topology key with a space", `{"antiAffinity": {"topologyKey": "kubernetes.io/host name"}}`, "spec.antiAffinity.topologyKey"},
		{"rejects a topology key that is too long", `{"antiAffinity": {"topologyKey": "` + strings.Repeat("a", 318) + `"}}`, "spec.antiAffinity.topologyKey"},
		{"rejects negative not-ready seconds", `{"tolerations": {"notReadySeconds": -1}}`, "spec.tolerations.notReadySeconds"},
		{"rejects unreachable seconds above an hour", `{"tolerations": {"unreachableSeconds": 3601}}`, "spec.tolerations.unreachableSeconds"},
		{"rejects an unknown sysctl method", `{"sysctls": {"method": "Sidecar"}}`, "spec.sysctls.method"},
		{"rejects an image with a space", `{"sysctls": {"image": "busybox 1.36"}}`, "spec.sysctls.image"},
		{"rejects an upper-case sysctl name", `{"sysctls": {"values": {"net.ipv4.TCP_retries2": "9"}}}`, "spec.sysctls.values[net.ipv4.TCP_retries2]"},
		{"rejects a sysctl name with an empty segment", `{"sysctls": {"values": {"net..ipv4": "9"}}}`, "spec.sysctls.values[net..ipv4]"},
		{"rejects a shell metacharacter in a value", `{"sysctls": {"values": {"net.ipv4.tcp_retries2": "9; reboot"}}}`, "spec.sysctls.values[net.ipv4.tcp_retries2]"},
		{"rejects an empty value", `{"sysctls": {"values": {"net.ipv4.tcp_retries2": ""}}}`, "spec.sysctls.values[net.ipv4.tcp_retries2]"},
		{"rejects enabled sysctls with no values", `{"sysctls": {"values": {}}}`, "spec.sysctls.values"},
		{"accepts the namespaced kernel and fs sysctls", `{"sysctls": {"values": {"kernel.shmmax": "1", "kernel/msgmax": "1", "kernel.sem": "1 2 3 4", "fs.mqueue.msg_max": "1"}}}`, ""},
		{"rejects kernel.core_pattern, which would change the node", `{"sysctls": {"values": {"kernel.core_pattern": "x"}}}`, "spec.sysctls.values[kernel.core_pattern]"},
		{"rejects a vm sysctl written with slashes", `{"sysctls": {"values": {"vm/swappiness": "1"}}}`, "spec.sysctls.values[vm/swappiness]"},
		{"rejects kernel.shm_next_id, which the kubelet does not count as namespaced", `{"sysctls": {"values": {"kernel.shm_next_id": "1"}}}`, "spec.sysctls.values[kernel.shm_next_id]"},
		{"rejects a kernel.sem look-alike", `{"sysctls": {"values": {"kernel.semx": "1"}}}`, "spec.sysctls.values[kernel.semx]"},
		{"rejects fs sysctls outside fs.mqueue", `{"sysctls": {"values": {"fs.file-max": "1"}}}`, "spec.sysctls.values[fs.file-max]"},
		{"rejects more than 32 sysctls", `{"sysctls": {"values": {` + manySysctls(33) + `}}}`, "spec.sysctls.values"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := `{"apiVersion": "ha-injector.io/v1alpha1", "kind": "HAPolicy", "metadata": {"name": "p"}, "spec": ` + tc.spec + `}`

			var obj map[string]any
			require.NoError(t, json.Unmarshal([]byte(doc), &obj))
			_, serverErrs := s.admit(t, obj)

			var p v1alpha1.HAPolicy
			require.NoError(t, json.Unmarshal([]byte(doc), &p))
			p.Default()
			goErrs := p.Validate()

			if tc.field == "" {
				assert.Empty(t, serverErrs, "API server schema")
				assert.Empty(t, goErrs, "Go validation")
				return
			}
			assert.NotEmpty(t, serverErrs, "the API server schema accepts what should be rejected")
			require.NotEmpty(t, goErrs, "Go validation accepts what should be rejected")
			var fields []string
			for _, e := range goErrs {
				fields = append(fields, e.Field)
			}
			assert.Contains(t, fields, tc.field)
		})
	}
}

func manySysctls(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = `"net.ipv4.s` + strings.Repeat("x", i+1) + `": "1"`
	}
	return strings.Join(parts, ",")
}
