package manifest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	yaml11 "go.yaml.in/yaml/v2"
	yaml "go.yaml.in/yaml/v3"
)

// Document is one document of a stream.
type Document struct {
	// Source names where the document came from (a file name, or "-").
	Source string
	// Index is the 1-based position of the document in its source.
	Index int
	// JSON is the document as JSON, keys in their original order.
	JSON []byte

	node *yaml.Node
	// raw is the document's text as read, when it could be told apart in its stream
	// for sure: an unchanged document is written back as it.
	raw []byte
}

// Synthesized is a document preview writes that no input had (a pod a workload's
// controller would create, for --pods): its JSON, with comment above it in YAML. It is
// written as a changed document: pass its JSON as its out entry to Write.
func Synthesized(source string, index int, doc []byte, comment string) Document {
	return Document{Source: source, Index: index, JSON: doc, node: &yaml.Node{Kind: yaml.DocumentNode, HeadComment: comment}}
}

// Name identifies the document in messages: "file.yaml: document 2".
func (d Document) Name() string {
	return fmt.Sprintf("%s: document %d", d.Source, d.Index)
}

// maxAliasExpansions bounds the nodes an input may expand to through YAML
// aliases, so that a "billion laughs" document is an error, not an OOM.
const maxAliasExpansions = 1_000_000

// Read splits a YAML or JSON stream into documents. Empty documents (a lone
// "---", comments only) are skipped but still counted, so Index matches what
// a person counts in the file. The first malformed document is an error that
// names it.
func Read(source string, r io.Reader) ([]Document, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	// A byte order mark is not part of the first document (nor of any written after
	// another file's).
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	chunks := splitDocuments(data)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []Document
	for index := 1; ; index++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		d := Document{Source: source, Index: index, node: &node}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.Name(), err)
		}
		if len(node.Content) == 0 || (node.Content[0].Kind == yaml.ScalarNode && node.Content[0].ShortTag() == "!!null") {
			continue
		}
		if node.Content[0].Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%s: not an object (a Kubernetes manifest is a mapping with apiVersion and kind)", d.Name())
		}
		var buf bytes.Buffer
		budget := maxAliasExpansions
		if err := toJSON(&buf, node.Content[0], &budget, "", 0); err != nil {
			return nil, fmt.Errorf("%s: %w", d.Name(), err)
		}
		d.JSON = buf.Bytes()
		if index <= len(chunks) && sameDocument(chunks[index-1], d.JSON) {
			d.raw = chunks[index-1]
		}
		docs = append(docs, d)
	}
}

// splitDocuments cuts a stream into the text of each document at the lines that start
// one ("---" alone or followed by a space or a comment), numbered as the YAML decoder
// numbers them: what precedes the first such line belongs to the first document when it
// holds no content. It can be wrong on streams that use markers in other ways ("---"
// followed by content, "..."): Read keeps a chunk only when it decodes to the very
// document the decoder read.
func splitDocuments(data []byte) [][]byte {
	var chunks [][]byte
	start, separators := 0, 0
	for pos := 0; pos < len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos + 1
		}
		line := bytes.TrimRight(data[pos:end], "\r\n")
		if bytes.HasPrefix(line, []byte("---")) && (len(line) == 3 || line[3] == ' ' || line[3] == '\t') {
			rest := bytes.TrimSpace(line[3:])
			if len(rest) > 0 && rest[0] != '#' {
				return nil // content on the marker line: not split here
			}
			// A first marker with only comments above it opens the first document: that
			// text and the marker stay in its chunk.
			if chunk := data[start:pos]; separators > 0 || hasContent(chunk) {
				chunks = append(chunks, chunk)
				start = end
			}
			separators++
		}
		pos = end
	}
	return append(chunks, data[start:])
}

// opensWithMarker reports whether the first line of text that is neither blank nor a
// comment is a document marker.
func opensWithMarker(text []byte) bool {
	for _, line := range bytes.Split(text, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		return bytes.Equal(line, []byte("---")) || bytes.HasPrefix(line, []byte("--- ")) || bytes.HasPrefix(line, []byte("---\t"))
	}
	return false
}

// hasContent reports whether text has a line that is neither blank nor a comment.
func hasContent(text []byte) bool {
	for _, line := range bytes.Split(text, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return true
		}
	}
	return false
}

// sameDocument reports whether chunk, decoded alone, is the document whose JSON is doc.
func sameDocument(chunk, doc []byte) bool {
	var node yaml.Node
	if err := yaml.Unmarshal(chunk, &node); err != nil || len(node.Content) == 0 || node.Content[0].Kind != yaml.MappingNode {
		return false
	}
	var buf bytes.Buffer
	budget := maxAliasExpansions
	return toJSON(&buf, node.Content[0], &budget, "", 0) == nil && bytes.Equal(buf.Bytes(), doc)
}

const maxDepth = 1000

// toJSON writes a YAML node as JSON, keeping the order of mapping keys.
func toJSON(buf *bytes.Buffer, n *yaml.Node, budget *int, path string, depth int) error {
	if *budget--; *budget < 0 {
		return fmt.Errorf("document too large after expanding aliases")
	}
	if depth > maxDepth {
		return fmt.Errorf("%s: nested too deeply", pathOrRoot(path))
	}
	switch n.Kind {
	case yaml.AliasNode:
		return toJSON(buf, n.Alias, budget, path, depth+1)
	case yaml.MappingNode:
		buf.WriteByte('{')
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return fmt.Errorf("%s: line %d: mapping keys must be strings", pathOrRoot(path), k.Line)
			}
			if k.ShortTag() == "!!merge" {
				return fmt.Errorf("%s: line %d: YAML merge keys (<<) are not supported in Kubernetes manifests", pathOrRoot(path), k.Line)
			}
			if seen[k.Value] {
				return fmt.Errorf("%s: line %d: duplicate key %q", pathOrRoot(path), k.Line, k.Value)
			}
			seen[k.Value] = true
			if i > 0 {
				buf.WriteByte(',')
			}
			writeString(buf, k.Value)
			buf.WriteByte(':')
			if err := toJSON(buf, v, budget, path+"."+k.Value, depth+1); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case yaml.SequenceNode:
		buf.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := toJSON(buf, c, budget, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case yaml.ScalarNode:
		return scalarToJSON(buf, n, path)
	default:
		return fmt.Errorf("%s: line %d: unexpected YAML node", pathOrRoot(path), n.Line)
	}
	return nil
}

// notPlain are the styles of a scalar whose type the text alone does not decide.
const notPlain = yaml.TaggedStyle | yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle | yaml.LiteralStyle | yaml.FoldedStyle

func scalarToJSON(buf *bytes.Buffer, n *yaml.Node, path string) error {
	if n.Style&notPlain == 0 {
		if out, ok := yaml11Value(n.Value); ok {
			buf.Write(out)
			return nil
		}
	}
	switch n.ShortTag() {
	case "!!null":
		buf.WriteString("null")
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return fmt.Errorf("%s: %w", pathOrRoot(path), err)
		}
		buf.WriteString(strconv.FormatBool(b))
	case "!!int":
		var v any
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("%s: %w", pathOrRoot(path), err)
		}
		out, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("%s: %w", pathOrRoot(path), err)
		}
		buf.Write(out)
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return fmt.Errorf("%s: %w", pathOrRoot(path), err)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%s: line %d: %s is not a JSON number", pathOrRoot(path), n.Line, n.Value)
		}
		buf.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
	default:
		// Strings, and the YAML types JSON lacks (timestamps, binary), stay text.
		writeString(buf, n.Value)
	}
	return nil
}

// yaml11Value reads a plain scalar value the way kubectl (sigs.k8s.io/yaml,
// YAML 1.1) does, where yes, on or y are booleans and 0755 an octal number.
// It reports false when YAML 1.1 gives no JSON value for it (NaN, infinity)
// or reads the text differently in isolation, leaving it to the YAML 1.2
// reading.
func yaml11Value(text string) ([]byte, bool) {
	var m map[string]any
	if err := yaml11.Unmarshal([]byte("v: "+text), &m); err != nil {
		return nil, false
	}
	if s, ok := m["v"].(string); ok && s != text {
		return nil, false
	}
	out, err := json.Marshal(m["v"])
	return out, err == nil
}

func writeString(buf *bytes.Buffer, s string) {
	out, _ := json.Marshal(s) // a string always encodes
	buf.Write(out)
}

func pathOrRoot(path string) string {
	if path == "" {
		return "document root"
	}
	return path[1:]
}

// Format names an output format.
type Format string

// The output formats.
const (
	YAML Format = "yaml"
	JSON Format = "json"
)

// Write writes documents to w in the given format: YAML documents separated
// by "---", or indented JSON: the object itself when there is one, a v1 List of
// them (as kubectl get -o json prints several) when there are more, so that the
// output is one JSON value a parser reads. out[i] is the new JSON of docs[i], or
// nil when the document is unchanged: an unchanged document is written back as it
// was read, comments and all (in YAML).
func Write(w io.Writer, format Format, docs []Document, out [][]byte) error {
	if format == JSON && len(docs) > 1 {
		return writeJSONList(w, docs, out)
	}
	var buf bytes.Buffer
	for i, d := range docs {
		changed := out[i]
		switch format {
		case JSON:
			src := d.JSON
			if changed != nil {
				src = changed
			}
			if err := json.Indent(&buf, src, "", "  "); err != nil {
				return fmt.Errorf("%s: %w", d.Name(), err)
			}
			buf.WriteByte('\n')
		case YAML:
			// A document written as read that opens with its own marker (its file began
			// with "---") needs no other.
			if i > 0 && (changed != nil || d.raw == nil || !opensWithMarker(d.raw)) {
				buf.WriteString("---\n")
			}
			if changed == nil && d.raw != nil {
				buf.Write(d.raw)
				if !bytes.HasSuffix(d.raw, []byte("\n")) {
					buf.WriteByte('\n')
				}
				continue
			}
			node := d.node
			if changed != nil {
				var err error
				if node, err = jsonToNode(changed); err != nil {
					return fmt.Errorf("%s: %w", d.Name(), err)
				}
				keepComments(d.node, node)
			}
			enc := yaml.NewEncoder(&buf)
			enc.SetIndent(2)
			if err := enc.Encode(node); err != nil {
				return fmt.Errorf("%s: %w", d.Name(), err)
			}
			if err := enc.Close(); err != nil {
				return fmt.Errorf("%s: %w", d.Name(), err)
			}
		default:
			return fmt.Errorf("unknown output format %q (want yaml or json)", format)
		}
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// jsonToNode parses JSON (which is YAML) into a node tree, keeping key order,
// and drops the flow style and quoting of JSON so the encoder writes plain
// block YAML, quoting only the strings that need it.
func jsonToNode(doc []byte) (*yaml.Node, error) {
	var node yaml.Node
	if err := yaml.Unmarshal(doc, &node); err != nil {
		return nil, err
	}
	var plain func(*yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style = 0
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && needsYAML11Quotes(n.Value) {
			n.Style = yaml.SingleQuotedStyle
		}
		for _, c := range n.Content {
			plain(c)
		}
	}
	plain(&node)
	return &node, nil
}

// keepComments carries the comments of a document over to its rewritten form, each to
// the node at the same path: the key of the same name in a mapping; in a list, the item
// at the same position when the list kept its length, else the item with the same
// "name" (containers), else none. A comment on a field that is gone is dropped.
func keepComments(from, to *yaml.Node) {
	if from == nil || to == nil {
		return
	}
	to.HeadComment = cmp.Or(to.HeadComment, from.HeadComment)
	to.FootComment = cmp.Or(to.FootComment, from.FootComment)
	if from.LineComment != "" {
		// A comment after a flow collection ({...} # c) is written after the first
		// line of its block form.
		target := to
		if (to.Kind == yaml.MappingNode || to.Kind == yaml.SequenceNode) && len(to.Content) > 0 {
			target = to.Content[0]
			if to.Kind == yaml.MappingNode && to.Content[1].Kind == yaml.ScalarNode {
				target = to.Content[1]
			}
		}
		target.LineComment = cmp.Or(target.LineComment, from.LineComment)
	}
	switch {
	case from.Kind == yaml.DocumentNode && to.Kind == yaml.DocumentNode:
		if len(from.Content) > 0 && len(to.Content) > 0 {
			keepComments(from.Content[0], to.Content[0])
		}
	case from.Kind == yaml.MappingNode && to.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(from.Content); i += 2 {
			for j := 0; j+1 < len(to.Content); j += 2 {
				if to.Content[j].Value == from.Content[i].Value {
					keepComments(from.Content[i], to.Content[j])
					value := from.Content[i+1]
					if value.LineComment != "" && to.Content[j+1].Kind != yaml.ScalarNode {
						// containers: [...] # c  →  containers: # c
						to.Content[j].LineComment = cmp.Or(to.Content[j].LineComment, value.LineComment)
						value = withoutLineComment(value)
					}
					keepComments(value, to.Content[j+1])
					break
				}
			}
		}
	case from.Kind == yaml.SequenceNode && to.Kind == yaml.SequenceNode:
		for i, f := range from.Content {
			id := itemID(f)
			switch {
			case id != "":
				for _, t := range to.Content {
					if itemID(t) == id {
						keepComments(f, t)
						break
					}
				}
			case len(from.Content) == len(to.Content):
				keepComments(f, to.Content[i])
			}
		}
	}
}

func withoutLineComment(n *yaml.Node) *yaml.Node {
	c := *n
	c.LineComment = ""
	return &c
}

// itemID tells a list item apart from the others: its "name" (containers, volumes,
// sysctls) or its "key" (tolerations); "" when it has neither.
func itemID(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for _, field := range []string{"name", "key"} {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == field && n.Content[i+1].Kind == yaml.ScalarNode {
				return field + "=" + n.Content[i+1].Value
			}
		}
	}
	return ""
}

// needsYAML11Quotes reports whether s is a string the YAML 1.2 encoder used
// here would write plain although a YAML 1.1 parser reads it as something
// else: kubectl and sigs.k8s.io/yaml read YAML 1.1, where yes, on or y are
// booleans. Strings the encoder quotes anyway ("30", JSON text) are left to it.
func needsYAML11Quotes(s string) bool {
	if s == "" || strings.Contains(s, "\n") {
		return false
	}
	return plainIsString(yaml.Unmarshal, s) && !plainIsString(yaml11.Unmarshal, s)
}

func plainIsString(unmarshal func([]byte, any) error, s string) bool {
	var m map[string]any
	if err := unmarshal([]byte("v: "+s), &m); err != nil {
		return false
	}
	v, ok := m["v"].(string)
	return ok && v == s
}

// writeJSONList writes several documents as one v1 List, items in order, each keeping
// its key order.
func writeJSONList(w io.Writer, docs []Document, out [][]byte) error {
	var list bytes.Buffer
	list.WriteString(`{"apiVersion":"v1","kind":"List","items":[`)
	for i, d := range docs {
		if i > 0 {
			list.WriteByte(',')
		}
		src := d.JSON
		if out[i] != nil {
			src = out[i]
		}
		if !json.Valid(src) {
			return fmt.Errorf("%s: not valid JSON", d.Name())
		}
		list.Write(src)
	}
	list.WriteString(`],"metadata":{}}`)
	var buf bytes.Buffer
	if err := json.Indent(&buf, list.Bytes(), "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}
