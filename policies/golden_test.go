package policies_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apiserverpatch "gopkg.in/evanphx/json-patch.v4"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/golden"
	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/internal/preview"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/webhook/patch"
)

const goldenSuffix = ".golden.yaml"

// goldenCase is a file under testdata/: a first YAML document with the
// settings below, then the object to mutate.
type goldenCase struct {
	// Policy is an HAPolicy spec; unset fields take their defaults.
	Policy          v1alpha1.HAPolicySpec `json:"policy"`
	NamespaceLabels map[string]string     `json:"namespaceLabels"`
	TopologyDomains map[string]int        `json:"topologyDomains"`
	// Owner is what the webhook would know of a Pod's ReplicaSet.
	Owner *policies.Owner `json:"owner"`
	// NotOptedIn: the namespace no longer carries the policy label.
	NotOptedIn bool `json:"notOptedIn"`
	// PodSecurityDefault is the cluster's Pod Security default (--pod-security-default-level).
	PodSecurityDefault policies.PodSecurityDefault `json:"podSecurityDefault"`
	// AllowedSysctlImages is serve's --allowed-sysctl-images (unset: the installation's image alone).
	AllowedSysctlImages []string `json:"allowedSysctlImages"`
	// InvalidPolicy says the policy breaks a rule of the CRD schema on purpose,
	// as one stored under an older CRD can.
	InvalidPolicy bool `json:"invalidPolicy"`
}

// sysctlImage stands for the installation's image (serve --sysctl-image).
const sysctlImage = "registry.example/ha-injector:v1.0.0"

type loadedCase struct {
	name   string
	ctx    policies.Context
	object manifest.Document
}

func loadCases(t testing.TB) []loadedCase {
	t.Helper()
	var cases []loadedCase
	for _, in := range golden.Inputs(t, "testdata", ".yaml", goldenSuffix) {
		f, err := os.Open(in)
		require.NoError(t, err)
		docs, err := manifest.Read(in, f)
		f.Close()
		require.NoError(t, err)
		require.Len(t, docs, 2, "%s: want a settings document and an object document", in)

		var settings goldenCase
		require.NoError(t, yaml.UnmarshalStrict(docs[0].JSON, &settings), in)
		policy := &v1alpha1.HAPolicy{Spec: settings.Policy}
		policy.Name = "test-policy"
		policy.Default()
		if settings.InvalidPolicy {
			require.NotEmpty(t, policy.Validate(), "%s: the policy must be invalid", in)
		} else {
			require.Empty(t, policy.Validate(), "%s: the policy must be valid", in)
		}
		cases = append(cases, loadedCase{
			name: strings.TrimSuffix(filepath.Base(in), ".yaml"),
			ctx: policies.Context{
				Policy:              policy,
				Namespace:           policies.Namespace{Name: "team-a", Labels: settings.NamespaceLabels},
				Cluster:             policies.Cluster{TopologyDomains: settings.TopologyDomains, PodSecurity: settings.PodSecurityDefault},
				Owner:               settings.Owner,
				SysctlImage:         sysctlImage,
				AllowedSysctlImages: settings.AllowedSysctlImages,
				NotOptedIn:          settings.NotOptedIn,
			},
			object: docs[1],
		})
	}
	require.NotEmpty(t, cases)
	return cases
}

// render is what a golden file holds: the decisions, then the document as
// preview prints it.
func render(t *testing.T, c loadedCase) []byte {
	t.Helper()
	out, m, err := preview.Document(c.ctx, c.object.JSON)
	require.NoError(t, err)
	require.NotNil(t, m, "the object of a golden case must be a Pod or a Deployment")
	var buf bytes.Buffer
	buf.WriteString("# decisions:\n")
	for _, d := range m.Decisions {
		buf.WriteString("#   " + d.String() + "\n")
	}
	changed := [][]byte{nil}
	if m.Changed {
		changed[0] = out
	}
	require.NoError(t, manifest.Write(&buf, manifest.YAML, []manifest.Document{c.object}, changed))
	return buf.Bytes()
}

// TestGolden runs every testdata/<case>.yaml through the engine as preview
// does and compares with testdata/<case>.golden.yaml.
func TestGolden(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			golden.Check(t, filepath.Join("testdata", c.name+goldenSuffix), render(t, c))
		})
	}
}

// TestIdempotent mutates every fixture's output again: nothing may change,
// as the webhook is reinvoked (reinvocationPolicy: IfNeeded) and a
// Deployment's pods come back through the Pod webhook.
func TestIdempotent(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			once, m1, err := preview.Document(c.ctx, c.object.JSON)
			require.NoError(t, err)
			twice, m2, err := preview.Document(c.ctx, once)
			require.NoError(t, err)
			assert.False(t, m2.Changed, "the second pass changed the object: %v", m2.Decisions)
			assert.JSONEq(t, string(once), string(twice))
			if !m1.Changed {
				assert.Equal(t, string(c.object.JSON), string(once), "an unchanged object must come back byte for byte")
			}
		})
	}
}

// TestPatchMatchesTypedResult checks, for every fixture, that the patch the
// webhook would send, applied to the object as written the way the API server
// applies it (gopkg.in/evanphx/json-patch.v4: an operation whose parent is
// missing fails), gives exactly the engine's typed result.
func TestPatchMatchesTypedResult(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			original := decodeTyped(t, c.object.JSON)
			m, err := policies.Mutate(c.ctx, original)
			require.NoError(t, err)
			ops, err := patch.Build(c.object.JSON, original, m.Object)
			require.NoError(t, err)
			assert.Equal(t, m.Changed, len(ops) > 0, "a patch exactly when the object changed")
			encoded, err := json.Marshal(ops)
			require.NoError(t, err)
			p, err := apiserverpatch.DecodePatch(encoded)
			require.NoError(t, err)
			patched, err := p.Apply(c.object.JSON)
			require.NoError(t, err)
			want, err := json.Marshal(m.Object)
			require.NoError(t, err)
			got, err := json.Marshal(decodeTyped(t, patched))
			require.NoError(t, err)
			assert.JSONEq(t, string(want), string(got))
		})
	}
}
