package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// RecordVersion is the version of the Record format written in the
// StatusAnnotation. Version 1 recorded the init container by its image and
// command only; version 2 records the whole container. A record without a
// version (the format before undo data) is read as carrying nothing to undo.
const RecordVersion = 2

// recordVersion1 is the first versioned format, still read: a Deployment
// injected by an earlier release carries it.
const recordVersion1 = 1

// Record is the JSON in the StatusAnnotation: what ha-injector changed in a
// pod template, with what it takes to undo it. It is written on the mutated
// object and, for a Deployment, in its pod template too, so every pod carries
// it. It is the product's memory: the next admission first undoes what the
// record says, then applies the current policy, so a changed policy, an
// opt-out or a namespace that stops opting in reaches the workload.
//
// Besides its header, a record is made of parts, each an injection's own
// (antiAffinity, tolerations, ...), written and read only by that injection:
// in JSON, each part is a key of the record's object, after the header.
type Record struct {
	// Version is RecordVersion (or recordVersion1, for a record read).
	Version int
	// Policy is the HAPolicy applied; Hash is a short hash of its spec.
	Policy string
	Hash   string
	// Applied lists the features that changed the template.
	Applied []Feature
	// Skipped maps each feature that did not change the template to why.
	Skipped map[Feature]string
	// Native says native mode's admission policy wrote it: it names the
	// features applied, not what they injected (CEL cannot encode it).
	Native bool

	parts []recordPart
	// dropped are the features whose part was taken back from the record as
	// it was read.
	dropped []Feature
	// encoded is the record as last encoded; "" once anything changed.
	encoded string
}

// recordPart is one injection's part of a record: its key, and its value as
// put (encoded with the record) or, for a record read, its JSON.
type recordPart struct {
	key   string
	value any
}

// recordHeader is the JSON of what every record has.
type recordHeader struct {
	Version int                `json:"v"`
	Policy  string             `json:"policy"`
	Hash    string             `json:"hash,omitempty"`
	Applied []Feature          `json:"applied,omitempty"`
	Skipped map[Feature]string `json:"skipped,omitempty"`
	Native  bool               `json:"native,omitempty"`
}

// Put sets the part key of the record to v, a value of plain fields and API
// types, encoded with the record. An injection puts only what it injected: a
// record with a part says something was injected.
func (r *Record) Put(key string, v any) {
	r.encoded = ""
	for i := range r.parts {
		if r.parts[i].key == key {
			r.parts[i].value = v
			return
		}
	}
	r.parts = append(r.parts, recordPart{key: key, value: v})
}

// Part decodes the part key of the record into v; false when the record has
// no such part, or one that does not decode (a record the user wrote).
func (r *Record) Part(key string, v any) bool {
	if r == nil {
		return false
	}
	for _, p := range r.parts {
		if p.key == key {
			return json.Unmarshal(rawOf(p.value), v) == nil
		}
	}
	return false
}

// rawOf is a part's JSON.
func rawOf(v any) json.RawMessage {
	if raw, ok := v.(json.RawMessage); ok {
		return raw
	}
	raw, err := json.Marshal(v)
	if err != nil {
		// Parts are plain values and API types; this cannot fail.
		panic(fmt.Sprintf("encoding a record's part: %v", err))
	}
	return raw
}

// Drop takes feature f's part key out of the record.
func (r *Record) Drop(f Feature, key string) {
	r.encoded = ""
	n := len(r.parts)
	r.parts = slices.DeleteFunc(r.parts, func(p recordPart) bool { return p.key == key })
	if len(r.parts) != n && !containsFeature(r.dropped, f) {
		r.dropped = append(r.dropped, f)
	}
}

// injected reports whether the record says anything was changed.
func (r *Record) injected() bool { return r != nil && len(r.parts) > 0 }

// MarshalJSON writes the header, then the parts in the order they were put,
// with one encoder.
func (r *Record) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(1024) // a full record is under 1 KiB
	enc := json.NewEncoder(&b)
	if err := enc.Encode(recordHeader{Version: r.Version, Policy: r.Policy, Hash: r.Hash, Applied: r.Applied, Skipped: r.Skipped, Native: r.Native}); err != nil {
		return nil, err
	}
	b.Truncate(b.Len() - 2) // the header's "}\n"
	for _, p := range r.parts {
		b.WriteByte(',')
		if err := enc.Encode(p.key); err != nil {
			return nil, err
		}
		b.Truncate(b.Len() - 1)
		b.WriteByte(':')
		if err := enc.Encode(p.value); err != nil {
			return nil, err
		}
		b.Truncate(b.Len() - 1)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads the header's keys into it and keeps every other key as a
// part, in order, in one pass.
func (r *Record) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("a record is a JSON object")
	}
	var head recordHeader
	var parts []recordPart
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		switch key {
		case "v":
			err = dec.Decode(&head.Version)
		case "policy":
			err = dec.Decode(&head.Policy)
		case "hash":
			err = dec.Decode(&head.Hash)
		case "applied":
			err = dec.Decode(&head.Applied)
		case "skipped":
			err = dec.Decode(&head.Skipped)
		case "native":
			err = dec.Decode(&head.Native)
		default:
			var raw json.RawMessage
			if err = dec.Decode(&raw); err == nil && !bytes.Equal(raw, []byte("null")) {
				parts = append(parts, recordPart{key: key, value: raw})
			}
		}
		if err != nil {
			return err
		}
	}
	*r = Record{Version: head.Version, Policy: head.Policy, Hash: head.Hash, Applied: head.Applied, Skipped: head.Skipped, Native: head.Native, parts: parts}
	return nil
}

// absorb returns r with the parts of later, an injection made on top of the
// one r records: later's policy and hash, as the last applied; a part in
// both is later's, or both lists' elements when it is a list. A feature r
// applied keeps r's account of it.
func (r *Record) absorb(later *Record) *Record {
	out := *r
	out.Version, out.Policy, out.Hash, out.encoded = RecordVersion, later.Policy, later.Hash, ""
	out.parts = slices.Clone(r.parts)
	for _, p := range later.parts {
		i := slices.IndexFunc(out.parts, func(q recordPart) bool { return q.key == p.key })
		if i < 0 {
			out.parts = append(out.parts, p)
			continue
		}
		out.parts[i].value = joinLists(rawOf(out.parts[i].value), rawOf(p.value))
	}
	for _, f := range later.Applied {
		if !slices.Contains(out.Applied, f) {
			out.Applied = append(out.Applied, f)
		}
	}
	out.Skipped = maps.Clone(r.Skipped)
	for f, why := range later.Skipped {
		if !slices.Contains(r.Applied, f) {
			if out.Skipped == nil {
				out.Skipped = map[Feature]string{}
			}
			out.Skipped[f] = why
		}
	}
	return &out
}

// joinLists returns the elements of two JSON lists in one; b alone when either
// is not a list.
func joinLists(a, b json.RawMessage) json.RawMessage {
	var x, y []json.RawMessage
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return b
	}
	joined, _ := json.Marshal(append(x, y...))
	return joined
}

// ReadRecord decodes the StatusAnnotation of annotations. It returns nil when
// there is none, or when it is not a record of a format this release reads
// (the earlier, unversioned one carries no undo data: nothing of it is undone).
// The caller owns the record it gets.
func ReadRecord(annotations map[string]string) *Record {
	raw, ok := annotations[StatusAnnotation]
	if !ok {
		return nil
	}
	r, ok := decodedRecords.get(raw)
	if !ok {
		var decoded Record
		if err := json.Unmarshal([]byte(raw), &decoded); err != nil || (decoded.Version != RecordVersion && decoded.Version != recordVersion1) {
			decodedRecords.put(raw, nil)
			return nil
		}
		r = &decoded
		decodedRecords.put(raw, r)
	}
	if r == nil {
		return nil
	}
	own := *r
	own.parts = slices.Clone(r.parts)
	return &own
}

// decodedRecords keeps the records last decoded, by their annotation: one
// admission reads the same record several times (a Deployment UPDATE's stored
// template and the one sent, and the Deployment's), and the pods of a
// Deployment all carry their template's. Records held are never changed.
var decodedRecords = recordCache{byText: map[string]*Record{}}

type recordCache struct {
	sync.Mutex
	byText map[string]*Record
}

// maxDecodedRecords bounds the cache: a few distinct records per Deployment
// being rolled out.
const maxDecodedRecords = 1024

func (c *recordCache) get(text string) (*Record, bool) {
	c.Lock()
	defer c.Unlock()
	r, ok := c.byText[text]
	return r, ok
}

func (c *recordCache) put(text string, r *Record) {
	c.Lock()
	defer c.Unlock()
	if len(c.byText) >= maxDecodedRecords {
		clear(c.byText)
	}
	c.byText[text] = r
}

// encode renders the record as the annotation's value (once: a Deployment's
// goes on the Deployment and in its template). The header is the engine's to
// set before the first encode.
func (r *Record) encode() string {
	if r.encoded != "" {
		return r.encoded
	}
	b, err := r.MarshalJSON()
	if err != nil {
		// Parts are plain values and API types; this cannot fail.
		panic(fmt.Sprintf("encoding the status record: %v", err))
	}
	r.encoded = string(b)
	return r.encoded
}

// undo removes from spec what rec says ha-injector injected, injection by
// injection. A part the user has changed since (it no longer matches the
// record) is the user's and stays; each such part gets a Kept decision.
func undo(rec *Record, spec *corev1.PodSpec) []Decision {
	if !rec.injected() {
		return nil
	}
	var notes []Decision
	for _, inj := range registered {
		notes = append(notes, inj.Undo(rec, spec)...)
	}
	return notes
}

// keptByUser is the decision that a recorded part was changed by the user since
// ha-injector set it, so it stays, as the workload's own.
func keptByUser(f Feature, format string, args ...any) Decision {
	return Decision{Feature: f, Action: Kept, Reason: fmt.Sprintf(format, args...) + ": changed since ha-injector set it, so it is the workload's own now"}
}
