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
}

// document previews one object, named where in messages, and returns its new JSON, or
// nil when it is unchanged.
func (p *previewer) document(d manifest.Document, where string) ([]byte, error) {
	dctx := p.pctx
	if p.cluster != nil {
		var notCalled *skippedDocument
		var err error
		if dctx, notCalled, err = p.cluster.contextFor(p.ctx, d); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if notCalled != nil {
			fmt.Fprintf(&p.log, "%s: %s\n", where, notCalled.line)
			p.report = append(p.report, newReportEntry(d, notCalled.head, notCalled.decision))
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
		decisions, head, err := podDecisions(dctx, d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		for _, decision := range decisions {
			fmt.Fprintf(&p.log, "%s: %s %s: %s\n", where, head.Kind, head.Name, decision)
			p.report = append(p.report, newReportEntry(d, head, decision))
		}
		return nil, nil
	}
	for _, decision := range m.Decisions {
		fmt.Fprintf(&p.log, "%s: %s: %s\n", where, objectName(m), decision)
		p.report = append(p.report, newReportEntry(d, headOf(m), decision))
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
