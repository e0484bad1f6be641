// Package patch turns the engine's result into the JSON patch (RFC 6902) the
// webhook answers with and preview applies: one path from engine result to
// output for both.
//
// The patch is built from the parts of an object the engine may change, and
// only from them: the pod spec's affinity.podAntiAffinity, tolerations,
// securityContext.sysctls and initContainers, the status annotation and the
// injected label, compared between the object as decoded from the request
// and the engine's result. Nothing else of the object (containers, env,
// volumes, other annotations, managedFields) is encoded or diffed, so the
// cost of a patch does not grow with the size of the object; the one pass
// over the request's bytes that remains only checks which parents exist.
package patch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"

	"github.com/ha-injector/ha-injector/policies"
)

// Touched annotation and label keys: the only keys of an object's metadata
// the engine writes.
var (
	touchedAnnotations = []string{policies.StatusAnnotation}
	touchedLabels      = []string{policies.InjectedLabel}
)

// Build returns the operations that turn raw, the JSON object in was decoded
// from, into out, the engine's result for in (a *corev1.Pod or an
// *appsv1.Deployment, as policies.Mutate returns them). No operation touches
// a field the typed objects do not know, so the patch never removes what a
// newer cluster added; an operation is only emitted where its parent exists
// in raw, or it creates that parent.
func Build(raw []byte, in, out runtime.Object) ([]jsonpatch.Operation, error) {
	i, err := policies.ObjectOf(in)
	if err != nil {
		return nil, fmt.Errorf("no patch: %w", err)
	}
	return BuildObject(raw, i, out)
}

// BuildObject is Build for an object already decoded (policies.Decode).
func BuildObject(raw []byte, i *policies.Object, out runtime.Object) ([]jsonpatch.Operation, error) {
	o, err := policies.ObjectOf(out)
	if err != nil || o.Kind != i.Kind {
		return nil, fmt.Errorf("a %s mutated into a %T", i.Kind, out)
	}
	before, after := objectTree(i), objectTree(o)
	specPath := i.TemplatePath + "/spec"
	first, last, err := headOps(specPath, &i.Template.Spec, &o.Template.Spec, before.at(specPath), after.at(specPath))
	if err != nil {
		return nil, err
	}
	ops, err := diff("", before, after)
	if err != nil {
		return nil, err
	}
	if len(ops) == 0 && first == nil && last == nil {
		return nil, nil
	}
	// Only now, with something to patch, look at which parents the request
	// has: an absent one is left out of the original parts, so the diff
	// creates it instead of adding below it.
	present, err := parents(raw, i)
	if err != nil {
		return nil, err
	}
	if pb, pa := before.prune(present, ""), after.prune(present, ""); pb || pa {
		if ops, err = diff("", before, after); err != nil {
			return nil, err
		}
	}
	sortOperations(ops)
	ops = append(first, ops...)
	return append(ops, last...), nil
}

// diff returns the operations that turn b into a, two nodes of the trees at
// path. Between two trees it walks their keys: a key only in a is added with
// its value (a subtree or a typed part, encoded once, with the answer), a key
// only in b removed. Two parts that differ are compared by leafDiff, so a
// change inside a list (one toleration shortened) is one small operation, and
// the fields of a part that the types do not know are never touched.
func diff(path string, b, a any) ([]jsonpatch.Operation, error) {
	bt, bIsTree := b.(tree)
	at, aIsTree := a.(tree)
	if bIsTree && aIsTree {
		var ops []jsonpatch.Operation
		for _, k := range sortedKeys(bt, at) {
			p := child(path, k)
			bv, inB := bt[k]
			av, inA := at[k]
			switch {
			case !inB:
				ops = append(ops, jsonpatch.NewOperation("add", p, av))
			case !inA:
				ops = append(ops, jsonpatch.NewOperation("remove", p, nil))
			default:
				sub, err := diff(p, bv, av)
				if err != nil {
					return nil, err
				}
				ops = append(ops, sub...)
			}
		}
		return ops, nil
	}
	return leafDiff(path, b, a)
}

// leafDiff compares two typed parts the way jsonpatch.CreatePatch compares
// their JSON, without encoding what is equal: the picked annotations or
// labels key by key; a list element by element (the surplus of the longer
// one removed from the end or added in order, as CreatePatch does); and only
// the elements or parts that differ are encoded and given to CreatePatch.
func leafDiff(path string, b, a any) ([]jsonpatch.Operation, error) {
	if bm, ok := b.(map[string]string); ok {
		if am, ok := a.(map[string]string); ok {
			return mapDiff(path, bm, am), nil
		}
	}
	bv, av := reflect.ValueOf(b), reflect.ValueOf(a)
	if bv.Kind() != reflect.Slice || av.Kind() != reflect.Slice || bv.Type() != av.Type() || bv.IsNil() || av.IsNil() {
		return encodedDiff(path, b, a)
	}
	n := min(bv.Len(), av.Len())
	var ops []jsonpatch.Operation
	for i := bv.Len() - 1; i >= n; i-- {
		ops = append(ops, jsonpatch.NewOperation("remove", child(path, strconv.Itoa(i)), nil))
	}
	for i := n; i < av.Len(); i++ {
		ops = append(ops, jsonpatch.NewOperation("add", child(path, strconv.Itoa(i)), av.Index(i).Interface()))
	}
	fields := flatFields(bv.Type().Elem())
	for i := range n {
		p := child(path, strconv.Itoa(i))
		if fields != nil {
			ops = append(ops, structDiff(p, fields, bv.Index(i), av.Index(i))...)
			continue
		}
		sub, err := encodedDiff(p, bv.Index(i).Interface(), av.Index(i).Interface())
		if err != nil {
			return nil, err
		}
		ops = append(ops, sub...)
	}
	return ops, nil
}

// flatField is a field of a flat struct: its JSON name, whether it is left
// out when empty, and its index.
type flatField struct {
	name      string
	omitEmpty bool
	index     int
}

var flatTypes sync.Map // reflect.Type -> []flatField (nil: not flat)

// flatFields returns the fields of t when t is a flat struct (a toleration, a
// sysctl): every field a named JSON scalar, a string, a bool, an integer or a
// pointer to one. Its elements are compared field by field as CreatePatch
// compares their JSON, without encoding them. Any other type gives nil.
func flatFields(t reflect.Type) []flatField {
	if f, ok := flatTypes.Load(t); ok {
		return f.([]flatField)
	}
	var fields []flatField
	if t.Kind() == reflect.Struct {
		for i := range t.NumField() {
			sf := t.Field(i)
			name, opts, _ := strings.Cut(sf.Tag.Get("json"), ",")
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if !sf.IsExported() || sf.Anonymous || name == "" || name == "-" || strings.Contains(opts, "string") || !scalar(ft.Kind()) {
				fields = nil
				break
			}
			fields = append(fields, flatField{name: name, omitEmpty: strings.Contains(opts, "omitempty"), index: i})
		}
	}
	flatTypes.Store(t, fields)
	return fields
}

func scalar(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// structDiff is the patch of flat struct b into a, one operation a field
// whose JSON differs: added where b's JSON leaves it out, removed where a's
// does, replaced where both have it with different values.
func structDiff(path string, fields []flatField, b, a reflect.Value) []jsonpatch.Operation {
	var ops []jsonpatch.Operation
	for _, f := range fields {
		bv, inB := jsonValue(b.Field(f.index), f.omitEmpty)
		av, inA := jsonValue(a.Field(f.index), f.omitEmpty)
		p := child(path, f.name)
		switch {
		case inA && !inB:
			ops = append(ops, jsonpatch.NewOperation("add", p, av))
		case inB && !inA:
			ops = append(ops, jsonpatch.NewOperation("remove", p, nil))
		case inA && bv != av:
			ops = append(ops, jsonpatch.NewOperation("replace", p, av))
		}
	}
	return ops
}

// jsonValue is the value a scalar field encodes to (nil for a nil pointer:
// null), and whether encoding/json writes it at all.
func jsonValue(v reflect.Value, omitEmpty bool) (any, bool) {
	if omitEmpty && v.IsZero() {
		return nil, false
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil, true
		}
		v = v.Elem()
	}
	return v.Interface(), true
}

// mapDiff is the patch of the string map b into a, one operation a key.
func mapDiff(path string, b, a map[string]string) []jsonpatch.Operation {
	var ops []jsonpatch.Operation
	for k, av := range a {
		bv, ok := b[k]
		switch {
		case !ok:
			ops = append(ops, jsonpatch.NewOperation("add", child(path, k), av))
		case bv != av:
			ops = append(ops, jsonpatch.NewOperation("replace", child(path, k), av))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			ops = append(ops, jsonpatch.NewOperation("remove", child(path, k), nil))
		}
	}
	return ops
}

// encodedDiff encodes two parts that are not deeply equal and lets
// jsonpatch.CreatePatch compare them.
func encodedDiff(path string, b, a any) ([]jsonpatch.Operation, error) {
	if reflect.DeepEqual(b, a) {
		return nil, nil
	}
	bj, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encoding the original %s: %w", path, err)
	}
	aj, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("encoding the mutated %s: %w", path, err)
	}
	if bytes.Equal(bj, aj) {
		return nil, nil
	}
	ops, err := jsonpatch.CreatePatch(bj, aj)
	if err != nil {
		return nil, fmt.Errorf("computing the patch of %s: %w", path, err)
	}
	for i := range ops {
		ops[i].Path = path + ops[i].Path
	}
	return ops, nil
}

var escapePointer = strings.NewReplacer("~", "~0", "/", "~1")

// child is the JSON pointer to token (a key or an index) under path.
func child(path, token string) string { return path + "/" + escapePointer.Replace(token) }

// sortedKeys is the union of the keys of two trees, sorted.
func sortedKeys(b, a tree) []string {
	keys := make([]string, 0, len(b)+len(a))
	for k := range b {
		keys = append(keys, k)
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// tree is the projection of an object on the parts the engine may change:
// nested maps down to the touched fields, whose values are the typed ones.
// A struct parent (metadata, spec, template) is always in it, and taken out
// by prune when the request lacks it; a pointer, map or slice parent
// (affinity, securityContext, annotations) is in it when the typed object
// has it, which is when the request has it.
type tree map[string]any

func (t tree) at(path string) tree {
	for _, k := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		next, ok := t[k].(tree)
		if !ok {
			return nil
		}
		t = next
	}
	return t
}

// prune removes the struct parents that the request does not have and that
// hold nothing: they are in the trees only because the typed object always
// has them. It reports whether it removed any.
func (t tree) prune(present map[string]bool, path string) bool {
	removed := false
	for k, v := range t {
		sub, ok := v.(tree)
		if !ok {
			continue
		}
		p := path + "/" + k
		removed = sub.prune(present, p) || removed
		if known, ok := present[p]; ok && !known && len(sub) == 0 {
			delete(t, k)
			removed = true
		}
	}
	return removed
}

// objectTree is what the engine may change of an object: the picked keys of
// its metadata and of its template's, and the registered injections' parts of
// its pod spec, at the paths where the object keeps them.
func objectTree(o *policies.Object) tree {
	root := tree{"metadata": metaTree(o.Meta)}
	t := root
	if o.TemplatePath != "" {
		for _, k := range strings.Split(strings.TrimPrefix(o.TemplatePath, "/"), "/") {
			sub := tree{}
			t[k] = sub
			t = sub
		}
	}
	if o.TemplatePath != "" {
		// A Pod's template metadata is its own, already there.
		t["metadata"] = metaTree(&o.Template.ObjectMeta)
	}
	t["spec"] = specTree(&o.Template.Spec)
	return root
}

func metaTree(m *metav1.ObjectMeta) tree {
	t := tree{}
	if m.Annotations != nil {
		t["annotations"] = pick(m.Annotations, touchedAnnotations)
	}
	if m.Labels != nil {
		t["labels"] = pick(m.Labels, touchedLabels)
	}
	return t
}

// pick returns the entries of m under keys.
func pick(m map[string]string, keys []string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// parts are the parts of a pod spec the registered injections may change.
var parts = policies.Parts()

// specTree projects a pod spec on the parts: a field of the spec when it is
// set; a field of a struct the spec points to, under that struct when it is
// there.
func specTree(s *corev1.PodSpec) tree {
	t := tree{}
	for _, p := range parts {
		v, parent := p.Value(s)
		switch len(p.Path) {
		case 1:
			if v != nil {
				t[p.Path[0]] = v
			}
		case 2:
			if !parent {
				continue
			}
			sub, ok := t[p.Path[0]].(tree)
			if !ok {
				sub = tree{}
				t[p.Path[0]] = sub
			}
			if v != nil {
				sub[p.Path[1]] = v
			}
		}
	}
	return t
}

// headOps handles the one change a diff index by index gets wrong: an element
// an injection inserts at the front of a list part (the ha-sysctl init
// container) would come out as a rewrite of every element after it, moving
// their unknown fields onto the wrong element. That change is left out of the
// trees' lists and expressed as one "add .../0" (applied after the other
// operations) or "remove .../0" (before them).
func headOps(specPath string, bs, as *corev1.PodSpec, bt, at tree) (first, last []jsonpatch.Operation, err error) {
	if bt == nil || at == nil {
		return nil, nil, fmt.Errorf("no pod spec in the parts")
	}
	for _, p := range parts {
		if p.Head == nil || len(p.Path) != 1 {
			continue
		}
		key, path := p.Path[0], specPath+"/"+p.Path[0]
		bv, _ := p.Value(bs)
		av, _ := p.Value(as)
		b, a := reflect.ValueOf(bv), reflect.ValueOf(av)
		startsWithHead := func(v reflect.Value) bool { return v.IsValid() && v.Len() > 0 && p.Head(v.Index(0).Interface()) }
		switch {
		case startsWithHead(a) && !startsWithHead(b):
			op := jsonpatch.NewOperation("add", path+"/0", a.Index(0).Interface())
			if !b.IsValid() {
				op = jsonpatch.NewOperation("add", path, a.Slice(0, 1).Interface())
			}
			if rest := a.Slice(1, a.Len()); rest.Len() > 0 || b.IsValid() {
				at[key] = rest.Interface()
			} else {
				delete(at, key)
			}
			last = append(last, op)
		case startsWithHead(b) && !startsWithHead(a):
			op := jsonpatch.NewOperation("remove", path+"/0", nil)
			rest := b.Slice(1, b.Len())
			if rest.Len() == 0 && (!a.IsValid() || a.Len() == 0) {
				op = jsonpatch.NewOperation("remove", path, nil)
				delete(bt, key)
				delete(at, key)
			} else {
				bt[key] = rest.Interface()
			}
			first = append(first, op)
		}
	}
	return first, last, nil
}

// parents reports, for each struct parent of the touched parts, whether raw
// has it. A parent that is not empty in the typed object was in the request;
// only when one is empty (absent, null or {} in raw: the typed object cannot
// tell) is raw read again. What the API server sends has a name in its
// metadata and containers in its pod spec, so that pass is for hand-written
// manifests and the odd request.
func parents(raw []byte, in *policies.Object) (map[string]bool, error) {
	all := map[string]bool{}
	empty := false
	parents := in.Parents()
	for _, p := range parents {
		all[p.Path] = true
		empty = empty || p.Empty
	}
	if !empty {
		return all, nil
	}
	for _, p := range parents {
		there, err := presentAt(raw, p.Path)
		if err != nil {
			return nil, fmt.Errorf("reading the object's structure: %w", err)
		}
		all[p.Path] = there
	}
	return all, nil
}

// presentAt reports whether raw has a JSON object, not null, at path, its
// keys matched case-sensitively as the API server matches them.
func presentAt(raw []byte, path string) (bool, error) {
	cur := json.RawMessage(raw)
	for _, k := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		var fields map[string]json.RawMessage
		if err := kjson.UnmarshalCaseSensitivePreserveInts(cur, &fields); err != nil {
			return false, err
		}
		v, ok := fields[k]
		if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			return false, nil
		}
		cur = v
	}
	return true, nil
}

func sortOperations(ops []jsonpatch.Operation) {
	sort.SliceStable(ops, func(i, j int) bool {
		ri, rj := ops[i].Operation == "remove", ops[j].Operation == "remove"
		if ri || rj {
			return ri && !rj
		}
		return pathLess(ops[i].Path, ops[j].Path)
	})
}

func pathLess(a, b string) bool {
	for a != "" && b != "" {
		var as, bs string
		as, a, _ = strings.Cut(strings.TrimPrefix(a, "/"), "/")
		bs, b, _ = strings.Cut(strings.TrimPrefix(b, "/"), "/")
		if as == bs {
			continue
		}
		ai, aerr := strconv.Atoi(as)
		bi, berr := strconv.Atoi(bs)
		if aerr == nil && berr == nil {
			return ai < bi
		}
		return as < bs
	}
	return a == "" && b != ""
}

// Encode writes ops as the JSON array the webhook answers with, the same bytes
// json.Marshal writes for them (but [] for none, where json.Marshal writes null for
// a nil slice; Build returns nil rather than an empty patch). Each value is encoded once: jsonpatch/v2's
// Operation.MarshalJSON returns bytes that encoding/json then scans again to
// check and compact them, which cost more than encoding the values themselves.
func Encode(ops []jsonpatch.Operation) ([]byte, error) {
	buf := bytes.NewBuffer(make([]byte, 0, 256*len(ops)))
	// One encoder writes every value into the patch itself, without a
	// buffer of its own per value; it escapes HTML as json.Marshal does.
	enc := json.NewEncoder(buf)
	buf.WriteByte('[')
	for i, op := range ops {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"op":`)
		appendString(buf, op.Operation)
		buf.WriteString(`,"path":`)
		appendString(buf, op.Path)
		// As jsonpatch/v2 writes it: "value" for add and replace, even null.
		if op.Value != nil || op.Operation == "add" || op.Operation == "replace" {
			buf.WriteString(`,"value":`)
			if err := enc.Encode(op.Value); err != nil {
				return nil, fmt.Errorf("encoding the value of %s %s: %w", op.Operation, op.Path, err)
			}
			buf.Truncate(buf.Len() - 1) // the newline Encode ends a value with
		}
		buf.WriteByte('}')
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

// appendString appends s as a JSON string. Operations and paths are plain
// ASCII in practice (label and annotation keys, field names, indexes); anything
// else is left to encoding/json.
func appendString(buf *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			buf.Write(b)
			return
		}
	}
	buf.WriteByte('"')
	buf.WriteString(s)
	buf.WriteByte('"')
}
