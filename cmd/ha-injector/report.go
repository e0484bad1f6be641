package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/webhook/patch"
)

// objectHead names the object a decision is about.
type objectHead struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

// reportEntry is one decision of `preview --report`: where the document is (its file and
// 1-based position, as error messages count them), which object, and what was decided.
type reportEntry struct {
	File     string `json:"file"`
	Document int    `json:"document"`
	// Item is the 1-based position in a v1 List document; absent otherwise.
	Item int `json:"item,omitempty"`
	objectHead
	Feature  policies.Feature  `json:"feature"`
	Action   string            `json:"action"`
	Fallback policies.Fallback `json:"fallback,omitempty"`
	Reason   string            `json:"reason"`
}

func newReportEntry(d manifest.Document, item int, head objectHead, decision policies.Decision) reportEntry {
	action := string(decision.Action)
	if decision.Audit && decision.Action == policies.Applied {
		action = "would apply"
	}
	return reportEntry{
		File: d.Source, Document: d.Index, Item: item, objectHead: head,
		Feature: decision.Feature, Action: action, Fallback: decision.Fallback, Reason: decision.Reason,
	}
}

// headOf names the object of a mutation (its generateName prefix and * when it has no name).
func headOf(m *policies.Mutation) objectHead {
	gvk := m.Object.GetObjectKind().GroupVersionKind()
	head := objectHead{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind}
	if acc, err := meta.Accessor(m.Object); err == nil {
		head.Namespace, head.Name = acc.GetNamespace(), acc.GetName()
		if head.Name == "" && acc.GetGenerateName() != "" {
			head.Name = acc.GetGenerateName() + "*"
		}
	}
	return head
}

// writeReport writes the entries as one JSON array ([] when there are none).
func writeReport(w io.Writer, entries []reportEntry) error {
	if entries == nil {
		entries = []reportEntry{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(entries)
}

func writeReportFile(path string, entries []reportEntry) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeReport(f, entries); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// podDecisions are the decisions for a document that is neither a Pod nor a Deployment:
// for a workload whose controller creates pods (StatefulSet, DaemonSet, ReplicaSet,
// ReplicationController, Job, CronJob), the webhook's decisions for those pods, each
// reason prefixed "its pods: "; for anything else, one line saying the webhook leaves it
// alone. Every document gets at least one.
//
// pod is that pod as the webhook makes it, as JSON (nil for other kinds).
func podDecisions(ctx policies.Context, d manifest.Document) (decisions []policies.Decision, obj objectHead, pod []byte, err error) {
	var head documentHead
	_ = json.Unmarshal(d.JSON, &head)
	obj = objectHead{APIVersion: head.APIVersion, Kind: head.Kind, Namespace: head.Metadata.Namespace, Name: head.Metadata.Name}
	if obj.Name == "" && head.Metadata.GenerateName != "" {
		obj.Name = head.Metadata.GenerateName + "*"
	}
	in, owner, ok, err := patch.PodOf(d.JSON)
	if err != nil {
		return nil, obj, nil, err
	}
	if !ok {
		return []policies.Decision{{Feature: policies.FeatureWorkload, Action: policies.Skipped,
			Reason: fmt.Sprintf("the webhook mutates Pods and Deployments, and the pods of workloads; a %s is stored as it is", head.Kind)}}, obj, nil, nil
	}
	ctx.Owner = owner
	m, err := policies.Mutate(ctx, in)
	if err != nil {
		return nil, obj, nil, err
	}
	decisions = make([]policies.Decision, len(m.Decisions))
	for i, decision := range m.Decisions {
		decision.Reason = "its pods: " + decision.Reason
		decisions[i] = decision
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(m.Object)
	if err != nil {
		return nil, obj, nil, err
	}
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u, "status")
	pod, err = json.Marshal(u)
	return decisions, obj, pod, err
}
