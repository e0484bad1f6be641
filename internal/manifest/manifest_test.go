package manifest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadKeepsKeyOrderAndTypes(t *testing.T) {
	in := `---
# empty documents are skipped but counted
---
kind: Pod
apiVersion: v1
metadata:
  name: p
  labels: &labels {b: "1", a: x}
spec:
  stamp: 2024-01-01
  int: 0x1F
  float: 1.5
  yes: yes
  on: true
  nil: ~
  copy: *labels
`
	docs, err := Read("in.yaml", strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, docs, 1)
	assert.Equal(t, 2, docs[0].Index, "the commented empty document counts")
	assert.Equal(t, "in.yaml: document 2", docs[0].Name())
	assert.Equal(t, `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","labels":{"b":"1","a":"x"}},`+
		`"spec":{"stamp":"2024-01-01","int":31,"float":1.5,"yes":true,"on":true,"nil":null,"copy":{"b":"1","a":"x"}}}`,
		string(docs[0].JSON))
}

// TestReadResolvesPlainScalarsAsKubectlDoes: kubectl reads YAML 1.1, so
// hostNetwork: yes is a boolean and 0755 an octal number; quoted, they are strings.
func TestReadResolvesPlainScalarsAsKubectlDoes(t *testing.T) {
	docs, err := Read("s", strings.NewReader("a: yes\nb: 'yes'\nc: 0755\nd: \"0755\"\ne: off\nf: 1_000\n"))
	require.NoError(t, err)
	assert.Equal(t, `{"a":true,"b":"yes","c":493,"d":"0755","e":false,"f":1000}`, string(docs[0].JSON))
}

func TestReadErrorsNameTheDocument(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"syntax error":     {"a: 1\n---\nb: [\n", "s: document 2: yaml:"},
		"a list":           {"- a\n- b\n", "s: document 1: not an object"},
		"a merge key":      {"base: &b {x: 1}\nobj:\n  <<: *b\n", "obj: line 3: YAML merge keys"},
		"a duplicate key":  {"a: 1\na: 2\n", "duplicate key"},
		"a NaN":            {"a: .nan\n", "is not a JSON number"},
		"a non-string key": {"? [a]\n: 1\n", "mapping keys must be strings"},
		"alias explosion": {`a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
`, "too large"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Read("s", strings.NewReader(tc.in))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestWriteRoundTrip(t *testing.T) {
	in := "# head\na: 1 # one\nb: [x, z]\n---\nc: {d: \"30\"}\n"
	docs, err := Read("s", strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, docs, 2)

	var yamlOut bytes.Buffer
	changed := []byte(`{"c":{"d":"30","e":"yes","on":"y","o":"0755","s":"1:20","f":"multi\nline"}}`)
	require.NoError(t, Write(&yamlOut, YAML, docs, [][]byte{nil, changed}))
	assert.Equal(t, "# head\na: 1 # one\nb: [x, z]\n---\nc:\n  d: \"30\"\n  e: 'yes'\n  'on': 'y'\n  o: \"0755\"\n  s: 1:20\n  f: |-\n    multi\n    line\n", yamlOut.String())

	var jsonOut bytes.Buffer
	require.NoError(t, Write(&jsonOut, JSON, docs, [][]byte{nil, changed}))
	// Two documents are one v1 List: a single JSON value, each item in its key order.
	assert.Equal(t, "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": [\n    {\n      \"a\": 1,\n      \"b\": [\n        \"x\",\n        \"z\"\n      ]\n    },\n    {\n      \"c\": {\n        \"d\": \"30\",\n        \"e\": \"yes\",\n        \"on\": \"y\",\n        \"o\": \"0755\",\n        \"s\": \"1:20\",\n        \"f\": \"multi\\nline\"\n      }\n    }\n  ],\n  \"metadata\": {}\n}\n", jsonOut.String())
	jsonOut.Reset()
	require.NoError(t, Write(&jsonOut, JSON, docs[:1], [][]byte{nil}))
	assert.Equal(t, "{\n  \"a\": 1,\n  \"b\": [\n    \"x\",\n    \"z\"\n  ]\n}\n", jsonOut.String(), "one document is itself")

	assert.Error(t, Write(&jsonOut, Format("xml"), docs, [][]byte{nil, nil}))
}

func TestUnchangedDocumentsAreWrittenAsRead(t *testing.T) {
	in := "# lead\n---\na:    1   # one\n---\n---\n# two\nb: [x,  y]\n"
	docs, err := Read("in", strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, docs, 2)
	assert.Equal(t, 3, docs[1].Index, "an empty document still counts")
	var out bytes.Buffer
	require.NoError(t, Write(&out, YAML, docs, [][]byte{nil, nil}))
	assert.Equal(t, "# lead\n---\na:    1   # one\n---\n# two\nb: [x,  y]\n", out.String(), "each as read; the empty document is gone")
}
