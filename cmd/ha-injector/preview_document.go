package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/webhook/patch"
)

// previewer runs documents through the webhook's path and keeps what it decided: the
// text lines and the --report entries.
type previewer struct {
	ctx     context.Context
	cluster *clusterSource // nil: the context comes from the flags
	pctx    policies.Context
	log     bytes.Buffer
	report  []reportEntry
	// pods (--pods) collects, per input document, the pods its workloads' controllers
	// would create, as the webhook makes them: current for the document being read,
	// podsOf by document number once it is done.
	pods    bool
	current [][]byte
	podsOf  [][][]byte
}

// documentOrList previews a document, or each item of a v1 List (what kubectl get -o
// yaml prints for several objects), which is written back as a List.
func (p *previewer) documentOrList(d manifest.Document) ([]byte, error) {
	items, isList, err := listItems(d.JSON)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.Name(), err)
	}
	if !isList {
		return p.document(d, 0, d.Name())
	}
	if len(items) == 0 {
		decision := policies.Decision{Feature: policies.FeatureWorkload, Action: policies.Skipped, Reason: "a List without items"}
		fmt.Fprintf(&p.log, "%s: List: %s\n", d.Name(), decision)
		p.report = append(p.report, newReportEntry(d, 0, objectHead{APIVersion: "v1", Kind: "List"}, decision))
		return nil, nil
	}
	changed := false
	for k, item := range items {
		sub := d
		sub.JSON = item
		mutated, err := p.document(sub, k+1, fmt.Sprintf("%s: item %d", d.Name(), k+1))
		if err != nil {
			return nil, err
		}
		if mutated != nil {
			items[k], changed = mutated, true
		}
	}
	if !changed {
		return nil, nil
	}
	out, err := replaceListItems(d.JSON, items)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.Name(), err)
	}
	return out, nil
}

// endOfDocument files the pods collected for the document just read.
func (p *previewer) endOfDocument() {
	p.podsOf = append(p.podsOf, p.current)
	p.current = nil
}

// withPods inserts, after each document, the pods its workloads' controllers would
// create, each under a comment that says what it is and what was not emulated.
func (p *previewer) withPods(docs []manifest.Document, out [][]byte) ([]manifest.Document, [][]byte) {
	var allDocs []manifest.Document
	var allOut [][]byte
	for i, d := range docs {
		allDocs, allOut = append(allDocs, d), append(allOut, out[i])
		for _, pod := range p.podsOf[i] {
			comment := fmt.Sprintf("ha-injector preview --pods: a pod of %s as the webhook makes it, after the API server's\nDefaultTolerationSeconds; no other admission plugin is emulated.", d.Name())
			allDocs = append(allDocs, manifest.Synthesized(d.Source, d.Index, pod, comment))
			allOut = append(allOut, pod)
		}
	}
	return allDocs, allOut
}

// document previews one object, named where in messages, and returns its new JSON, or
// nil when it is unchanged.
func (p *previewer) document(d manifest.Document, item int, where string) ([]byte, error) {
	dctx := p.pctx
	if p.cluster != nil {
		var notCalled *skippedDocument
		var err error
		if dctx, notCalled, err = p.cluster.contextFor(p.ctx, d); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if notCalled != nil {
			fmt.Fprintf(&p.log, "%s: %s\n", where, notCalled.line)
			p.report = append(p.report, newReportEntry(d, item, notCalled.head, notCalled.decision))
			return nil, nil
		}
	}
	mutated, m, err := patch.Document(dctx, d.JSON)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if m == nil {
		// Not a Pod or a Deployment: the object is stored as it is, and the pods a
		// controller of it creates get the webhook's decisions.
		decisions, head, pod, err := podDecisions(dctx, d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if p.pods && pod != nil {
			p.current = append(p.current, pod)
		}
		for _, decision := range decisions {
			fmt.Fprintf(&p.log, "%s: %s %s: %s\n", where, head.Kind, head.Name, decision)
			p.report = append(p.report, newReportEntry(d, item, head, decision))
		}
		return nil, nil
	}
	for _, decision := range m.Decisions {
		fmt.Fprintf(&p.log, "%s: %s: %s\n", where, objectName(m), decision)
		p.report = append(p.report, newReportEntry(d, item, headOf(m), decision))
	}
	if !m.Changed {
		return nil, nil
	}
	return mutated, nil
}

// listItems returns the items of a v1 List document; isList is false for anything else.
func listItems(doc []byte) (items [][]byte, isList bool, err error) {
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []json.RawMessage `json:"items"`
	}
	if json.Unmarshal(doc, &head) != nil || head.APIVersion != "v1" || head.Kind != "List" {
		return nil, false, nil
	}
	items = make([][]byte, len(head.Items))
	for i, item := range head.Items {
		if len(item) == 0 || item[0] != '{' {
			return nil, true, fmt.Errorf("item %d: not an object", i+1)
		}
		items[i] = item
	}
	return items, true, nil
}

// replaceListItems returns the List document with its items replaced, every other field
// and the order of its keys as they were.
func replaceListItems(doc []byte, items [][]byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keyEnd := dec.InputOffset()
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, err
		}
		if key != "items" {
			continue
		}
		valueEnd := int(dec.InputOffset())
		valueStart := valueEnd - len(value)
		if valueStart < int(keyEnd) {
			return nil, errors.New("items: unexpected layout")
		}
		var out bytes.Buffer
		out.Write(doc[:valueStart])
		out.WriteByte('[')
		for i, item := range items {
			if i > 0 {
				out.WriteByte(',')
			}
			out.Write(item)
		}
		out.WriteByte(']')
		out.Write(doc[valueEnd:])
		return out.Bytes(), nil
	}
	return nil, errors.New("no items")
}
