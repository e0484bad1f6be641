package preview

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// previewer runs documents through the webhook's path and keeps what it decided: the
// text lines and the --report entries.
type previewer struct {
	ctx context.Context
	// cluster reads each document's context from a cluster; else offline gathers it
	// from the flags.
	cluster *clusterSource
	offline *facts.Gatherer
	// policy and labels are offline preview's policy and namespace labels.
	policy *v1alpha1.HAPolicy
	labels map[string]string
	log    bytes.Buffer
	report []reportEntry
	// pods (--pods) collects, per input document, the pods its workloads' controllers
	// would create, as the webhook makes them: current for the document being read,
	// podsOf by document number once it is done.
	pods    bool
	current [][]byte
	podsOf  [][][]byte
	// native previews native mode: a Deployment is stored as it is and its
	// pods are injected, with their controller's replica count and
	// annotations unknown, as CEL sees them.
	native bool
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
			who := "the webhook makes it"
			if p.native {
				who = "native mode's MutatingAdmissionPolicy makes it"
			}
			comment := fmt.Sprintf("ha-injector preview --pods: a pod of %s as %s, after the API server's\nDefaultTolerationSeconds; no other admission plugin is emulated.", d.Name(), who)
			allDocs = append(allDocs, manifest.Synthesized(d.Source, d.Index, pod, comment))
			allOut = append(allOut, pod)
		}
	}
	return allDocs, allOut
}

// document previews one object, named where in messages, and returns its new JSON, or
// nil when it is unchanged.
func (p *previewer) document(d manifest.Document, item int, where string) ([]byte, error) {
	mutated, m, err := p.mutate(d, item, where)
	if err != nil || m == nil {
		return mutated, err
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

// mutate runs a Pod or a Deployment through the webhook's path and returns its new
// JSON and the mutation. Anything else is stored as it is: when a controller of it
// creates pods, their decisions are reported here, and the mutation is nil.
func (p *previewer) mutate(d manifest.Document, item int, where string) ([]byte, *policies.Mutation, error) {
	fail := func(err error) ([]byte, *policies.Mutation, error) { return nil, nil, fmt.Errorf("%s: %w", where, err) }
	var ns *facts.Namespace
	var policy *v1alpha1.HAPolicy
	g := p.offline
	if p.cluster != nil {
		var notCalled *skippedDocument
		var err error
		if ns, policy, notCalled, err = p.cluster.calledFor(p.ctx, d); err != nil {
			return fail(err)
		}
		if notCalled != nil {
			fmt.Fprintf(&p.log, "%s: %s\n", where, notCalled.line)
			p.report = append(p.report, newReportEntry(d, item, notCalled.head, notCalled.decision))
			return nil, nil, nil
		}
		g = p.cluster.facts
	}
	obj, err := decodeDocument(d.JSON)
	if err != nil {
		return fail(err)
	}
	if obj == nil || (p.native && obj.Kind == policies.KindDeployment) {
		// Not a Pod or a Deployment (or a Deployment in native mode): the object is
		// stored as it is, and the pods a controller of it creates get the
		// webhook's (native mode: the API server's) decisions.
		return nil, nil, p.controllerPods(d, item, where, g, ns, policy)
	}
	var owner *policies.Owner
	if p.native {
		owner = nativeOwner(obj)
	}
	dctx, err := p.context(g, ns, policy, obj, owner)
	if err != nil {
		return fail(err)
	}
	mutated, m, err := document(dctx, d.JSON, p.native)
	if err != nil {
		return fail(err)
	}
	return mutated, m, nil
}

// context gathers the engine's context for obj with g: in the namespace and under the
// policy the cluster gave, or offline in the object's namespace under the flags' policy.
// owner, when set, is what the document says of a pod's controller: what the webhook
// would read of it.
func (p *previewer) context(g *facts.Gatherer, ns *facts.Namespace, policy *v1alpha1.HAPolicy, obj *policies.Object, owner *policies.Owner) (policies.Context, error) {
	if p.cluster == nil {
		ns, policy = &facts.Namespace{Name: obj.Meta.Namespace, Labels: p.labels, PolicyName: p.policy.Name}, p.policy
	}
	if ns == nil {
		return policies.Context{}, nil
	}
	if owner != nil {
		documented := *g
		documented.Source = documentedOwner{Source: g.Source, owner: owner}
		g = &documented
	}
	if p.native && p.cluster != nil && policy != nil {
		// Native mode counts topology domains from the HAPolicy's status (serve
		// keeps it), not from the nodes.
		counted := *g
		counted.Source = statusDomains{Source: g.Source, status: policy.Status}
		g = &counted
	}
	return g.Context(p.ctx, ns, policy, obj, nil)
}

// statusDomains is a Source whose topology domains are those an HAPolicy's status
// counts, as native mode's admission policy reads them: unknown for a key it lacks.
type statusDomains struct {
	facts.Source
	status v1alpha1.HAPolicyStatus
}

func (s statusDomains) TopologyDomains(_ context.Context, key string) (int, bool, error) {
	n, ok := s.status.TopologyDomains[key]
	return int(n), ok, nil
}

// documentedOwner is a Source whose pods' controller is the one a document describes.
type documentedOwner struct {
	facts.Source
	owner *policies.Owner
}

func (d documentedOwner) Owner(context.Context, string, *metav1.OwnerReference) (*policies.Owner, error) {
	return d.owner, nil
}

// controllerPods reports the webhook's decisions for a pod the controller of document
// d creates (StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob),
// each reason prefixed "its pods: ", and keeps that pod for --pods; for any other kind,
// one line saying the webhook leaves it alone.
func (p *previewer) controllerPods(d manifest.Document, item int, where string, g *facts.Gatherer, ns *facts.Namespace, policy *v1alpha1.HAPolicy) error {
	var head documentHead
	_ = json.Unmarshal(d.JSON, &head)
	obj := objectHead{APIVersion: head.APIVersion, Kind: head.Kind, Namespace: head.Metadata.Namespace, Name: head.Metadata.Name}
	if obj.Name == "" && head.Metadata.GenerateName != "" {
		obj.Name = head.Metadata.GenerateName + "*"
	}
	pod, owner, ok, err := PodOf(d.JSON)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	var decisions []policies.Decision
	if !ok {
		decisions = []policies.Decision{{Feature: policies.FeatureWorkload, Action: policies.Skipped,
			Reason: fmt.Sprintf("the webhook mutates Pods and Deployments, and the pods of workloads; a %s is stored as it is", head.Kind)}}
	} else {
		o, err := policies.ObjectOf(pod)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if p.native {
			owner = nativeOwner(o)
		}
		pctx, err := p.context(g, ns, policy, o, owner)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		m, err := policies.Mutate(pctx, pod)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if p.native {
			NativeForm(m)
		}
		for _, decision := range m.Decisions {
			decision.Reason = "its pods: " + decision.Reason
			decisions = append(decisions, decision)
		}
		if p.pods {
			out, err := podJSON(m.Object)
			if err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			p.current = append(p.current, out)
		}
	}
	for _, decision := range decisions {
		fmt.Fprintf(&p.log, "%s: %s %s: %s\n", where, obj.Kind, obj.Name, decision)
		p.report = append(p.report, newReportEntry(d, item, obj, decision))
	}
	return nil
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

// nativeOwner is a pod's controller as native mode sees it: its kind and name
// from the pod's ownerReferences, neither its replica count nor its annotations
// (CEL cannot read other objects); nil for a pod without a controller.
func nativeOwner(o *policies.Object) *policies.Owner {
	ref := metav1.GetControllerOfNoCopy(o.Meta)
	if ref == nil {
		return nil
	}
	return &policies.Owner{Kind: ref.Kind, Name: ref.Name}
}
