package chart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/golden"
)

const (
	tableBegin = "<!-- values table: generated from charts/ha-injector/values.yaml by `make golden`; do not edit -->"
	tableEnd   = "<!-- end of values table -->"
)

// value is one documented entry of values.yaml.
type value struct {
	path, def, doc string
}

// documentedValues walks values.yaml: a mapping with no comment of its own is a section
// and is walked into; anything else is a value, whose comment is its documentation and
// must state the default. A value left without a comment is reported.
func documentedValues(t testing.TB) []value {
	t.Helper()
	dir := filepath.Join(repoRoot, chartrender.ChartDir)
	data, err := os.ReadFile(filepath.Join(dir, "values.yaml"))
	require.NoError(t, err)
	var doc yamlv3.Node
	require.NoError(t, yamlv3.Unmarshal(data, &doc))
	data, err = os.ReadFile(filepath.Join(dir, "values.schema.json"))
	require.NoError(t, err)
	var schema map[string]any
	require.NoError(t, json.Unmarshal(data, &schema))

	var out []value
	var walk func(node *yamlv3.Node, schema map[string]any, prefix string)
	walk = func(node *yamlv3.Node, schema map[string]any, prefix string) {
		props, _ := schema["properties"].(map[string]any)
		for i := 0; i+1 < len(node.Content); i += 2 {
			key, val := node.Content[i], node.Content[i+1]
			path := prefix + key.Value
			sub, known := props[key.Value].(map[string]any)
			require.True(t, known, "values.yaml has %s, which values.schema.json does not know", path)
			if _, hasProps := sub["properties"]; hasProps && val.Kind == yamlv3.MappingNode && commentText(key.HeadComment) == "" {
				walk(val, sub, path+".")
				continue
			}
			comment := commentText(key.HeadComment)
			require.NotEmpty(t, comment, "values.yaml: %s has no comment above it", path)
			require.Contains(t, comment, "Default:", "values.yaml: the comment of %s does not state its default", path)
			var def any
			require.NoError(t, val.Decode(&def))
			compact, err := json.Marshal(def)
			require.NoError(t, err)
			out = append(out, value{path: path, def: string(compact), doc: comment})
		}
	}
	require.Len(t, doc.Content, 1)
	walk(doc.Content[0], schema, "")
	return out
}

// commentText joins the last comment block above a key (the part after any blank line,
// which belongs to a section header) into one line.
func commentText(c string) string {
	blocks := strings.Split(c, "\n\n")
	var words []string
	for _, line := range strings.Split(blocks[len(blocks)-1], "\n") {
		words = append(words, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#")))
	}
	return strings.TrimSpace(strings.Join(words, " "))
}

func valuesTable(values []value) string {
	var b strings.Builder
	fmt.Fprintln(&b, tableBegin)
	fmt.Fprintln(&b, "| value | default | what it does |")
	fmt.Fprintln(&b, "| --- | --- | --- |")
	esc := strings.NewReplacer("|", `\|`)
	for _, v := range values {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", v.path, esc.Replace(v.def), esc.Replace(v.doc))
	}
	fmt.Fprint(&b, tableEnd)
	return b.String()
}

// TestReadmeValuesTable keeps the README's table of chart values equal to what
// values.yaml documents. Refresh with `make golden`.
func TestReadmeValuesTable(t *testing.T) {
	readmePath := filepath.Join(repoRoot, "README.md")
	readme, err := os.ReadFile(readmePath)
	require.NoError(t, err)
	begin := bytes.Index(readme, []byte(tableBegin))
	end := bytes.Index(readme, []byte(tableEnd))
	require.True(t, begin >= 0 && end > begin, "README.md has the values table markers")
	var updated bytes.Buffer
	updated.Write(readme[:begin])
	updated.WriteString(valuesTable(documentedValues(t)))
	updated.Write(readme[end+len(tableEnd):])
	golden.Check(t, readmePath, updated.Bytes())
}
