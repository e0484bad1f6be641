package preview

import (
	"encoding/json"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies"
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

// objectName renders "Deployment web-server" (or the generateName prefix and *).
func objectName(m *policies.Mutation) string {
	head := headOf(m)
	return head.Kind + " " + head.Name
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

// podJSON is a pod the webhook made, as --pods prints it: without the empty
// creationTimestamp and status of a Go object that was never stored.
func podJSON(pod runtime.Object) ([]byte, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pod)
	if err != nil {
		return nil, err
	}
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u, "status")
	return json.Marshal(u)
}
