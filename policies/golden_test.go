package policies_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apiserverpatch "gopkg.in/evanphx/json-patch.v4"

	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/internal/preview"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/cases"
	"github.com/ha-injector/ha-injector/test/harness/golden"
	"github.com/ha-injector/ha-injector/webhook/patch"
)

const goldenSuffix = cases.GoldenSuffix

// sysctlImage stands for the installation's image (serve --sysctl-image).
const sysctlImage = cases.SysctlImage

type loadedCase = cases.Case

func loadCases(t testing.TB) []loadedCase { return cases.Load(t, "testdata") }

// render is what a golden file holds: the decisions, then the document as
// preview prints it.
func render(t *testing.T, c loadedCase) []byte {
	t.Helper()
	out, m, err := preview.Document(c.Context, c.Object.JSON)
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
	require.NoError(t, manifest.Write(&buf, manifest.YAML, []manifest.Document{c.Object}, changed))
	return buf.Bytes()
}

// TestGolden runs every testdata/<case>.yaml through the engine as preview
// does and compares with testdata/<case>.golden.yaml.
func TestGolden(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			golden.Check(t, filepath.Join("testdata", c.Name+goldenSuffix), render(t, c))
		})
	}
}

// TestIdempotent mutates every fixture's output again: nothing may change,
// as the webhook is reinvoked (reinvocationPolicy: IfNeeded) and a
// Deployment's pods come back through the Pod webhook.
func TestIdempotent(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			once, m1, err := preview.Document(c.Context, c.Object.JSON)
			require.NoError(t, err)
			twice, m2, err := preview.Document(c.Context, once)
			require.NoError(t, err)
			assert.False(t, m2.Changed, "the second pass changed the object: %v", m2.Decisions)
			assert.JSONEq(t, string(once), string(twice))
			if !m1.Changed {
				assert.Equal(t, string(c.Object.JSON), string(once), "an unchanged object must come back byte for byte")
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
		t.Run(c.Name, func(t *testing.T) {
			original := decodeTyped(t, c.Object.JSON)
			m, err := policies.Mutate(c.Context, original)
			require.NoError(t, err)
			ops, err := patch.Build(c.Object.JSON, original, m.Object)
			require.NoError(t, err)
			assert.Equal(t, m.Changed, len(ops) > 0, "a patch exactly when the object changed")
			encoded, err := json.Marshal(ops)
			require.NoError(t, err)
			p, err := apiserverpatch.DecodePatch(encoded)
			require.NoError(t, err)
			patched, err := p.Apply(c.Object.JSON)
			require.NoError(t, err)
			want, err := json.Marshal(m.Object)
			require.NoError(t, err)
			got, err := json.Marshal(decodeTyped(t, patched))
			require.NoError(t, err)
			assert.JSONEq(t, string(want), string(got))
		})
	}
}
