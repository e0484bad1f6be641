package refdocs

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMarkdownEscaping(t *testing.T) {
	for _, tc := range []struct{ name, in, prose, cell string }{
		{"joins a comment's wrapped lines", "one\n  two\tthree", "one two three", "one two three"},
		{"keeps an HTML-looking word as text", "policy=<name>", "policy=&lt;name&gt;", "policy=&lt;name&gt;"},
		{"escapes emphasis and link brackets", "kernel.shm* [x]", `kernel.shm\* \[x\]`, `kernel.shm\* \[x\]`},
		{"leaves a code span as it is", "run `a <b> *c*` now", "run `a <b> *c*` now", "run `a <b> *c*` now"},
		{"escapes a pipe in a table cell, in a code span too", "a|b `c|d`", `a\|b ` + "`c|d`", `a\|b ` + "`c\\|d`"},
		{"takes an unclosed backtick as text", "it's `odd", "it's \\`odd", "it's \\`odd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.prose, prose(tc.in))
			assert.Equal(t, tc.cell, cell(tc.in))
		})
	}
	assert.Equal(t, "``a`b``", code("a`b", false))
	assert.Equal(t, "`` `x ``", code("`x", false))
	assert.Equal(t, "`a\\|b`", code("a|b", true))
}

func TestAnchors(t *testing.T) {
	assert.Equal(t, []string{
		"install-on-a-cluster-step-by-step",
		"ha-injector-preview",
		"preview---cluster-what-the-webhook-of-a-live-cluster-would-do",
		"faq", "faq-1", "faq-2",
		"über-größe",
		"snake_case--12",
	}, Anchors([]string{
		"Install on a cluster, step by step",
		"ha-injector preview",
		"preview --cluster: what the webhook of a live cluster would do",
		"FAQ", "FAQ", "FAQ",
		"Über Größe!",
		"snake_case & 1.2",
	}))
}

func TestCRDPageRefusesWhatItCannotShow(t *testing.T) {
	crd := `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.example.com}
spec:
  group: example.com
  names: {kind: Thing, plural: things, singular: thing, listKind: ThingList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size:
                oneOf: [{type: integer}, {type: string}]
`
	_, err := CRDPage([]byte(crd), "things.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.size uses oneOf")
}

func TestChartValues(t *testing.T) {
	values := `
# Section header.

image:
  # The image. Default: x.
  repository: x
# Pods. Default: 2.
replicas: 2
# Policies. Default: {}.
policies: {}
# Mode. Default: a.
mode: a
`
	schema := `{"$defs": {"spec": {"type": "object"}, "port": {"type": "integer"}},
  "properties": {
    "image": {"type": "object", "properties": {"repository": {"type": "string"}}},
    "replicas": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
    "policies": {"type": "object", "additionalProperties": {"$ref": "#/$defs/spec"}},
    "mode": {"enum": ["a", "b"]}}}`
	got, err := ChartValues([]byte(values), []byte(schema), map[string]string{"spec": "[spec](spec.md)"})
	require.NoError(t, err)
	assert.Equal(t, []Value{
		{Path: "image.repository", Type: "string", Default: `"x"`, Doc: "The image. Default: x."},
		{Path: "replicas", Type: "integer or string", Default: "2", Doc: "Pods. Default: 2."},
		{Path: "policies", Type: "map of string to [spec](spec.md)", Default: "{}", Doc: "Policies. Default: {}."},
		{Path: "mode", Type: "one of `a`, `b`", Default: `"a"`, Doc: "Mode. Default: a."},
	}, got)

	_, err = ChartValues([]byte("# No default stated.\nreplicas: 2\n"), []byte(schema), nil)
	assert.ErrorContains(t, err, "the comment of replicas does not state its default")
	_, err = ChartValues([]byte("# Default: 1.\nunknown: 1\n"), []byte(schema), nil)
	assert.ErrorContains(t, err, "values.yaml has unknown, which values.schema.json does not know")
}
