// Package crds keeps the HAPolicy CRD of an installed cluster current. Helm never applies
// a chart's crds/ on an upgrade (Helm 3 not even on an install when the CRD exists), so a
// new field, default or validation would never reach a cluster installed from an older
// chart. The chart's pre-install and pre-upgrade hook runs `ha-injector crds apply` with
// its own crds/ file, which server-side applies it.
package crds

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// FieldOwner is the field manager of the applied CRDs.
const FieldOwner = "ha-injector-crds"

// Read parses the CRDs of a manifest stream named source. Anything but a
// CustomResourceDefinition of the HAPolicy API group is an error naming the document:
// the hook's permissions, and its purpose, are this group's CRDs only.
func Read(source string, data []byte) ([]*unstructured.Unstructured, error) {
	docs, err := manifest.Read(source, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, d := range docs {
		if d.JSON == nil {
			continue
		}
		var head metav1.TypeMeta
		if err := json.Unmarshal(d.JSON, &head); err != nil {
			return nil, fmt.Errorf("%s: %w", d.Name(), err)
		}
		if head.APIVersion != apiextensionsv1.SchemeGroupVersion.String() || head.Kind != "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s: %s %s is not an apiextensions.k8s.io/v1 CustomResourceDefinition", d.Name(), head.APIVersion, head.Kind)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		dec := json.NewDecoder(bytes.NewReader(d.JSON))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&crd); err != nil {
			return nil, fmt.Errorf("%s: CustomResourceDefinition: %w", d.Name(), err)
		}
		if crd.Spec.Group != v1alpha1.GroupVersion.Group {
			return nil, fmt.Errorf("%s: CustomResourceDefinition %s is of group %q, not %s", d.Name(), crd.Name, crd.Spec.Group, v1alpha1.GroupVersion.Group)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(d.JSON); err != nil {
			return nil, fmt.Errorf("%s: %w", d.Name(), err)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no CustomResourceDefinition", source)
	}
	return out, nil
}

// Apply server-side applies each CRD, taking over the fields Helm (or kubectl) set when
// it created it, and returns their names. The custom resources are untouched: a CRD
// update keeps every stored HAPolicy.
func Apply(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) ([]string, error) {
	names := make([]string, 0, len(objs))
	for _, u := range objs {
		u = u.DeepCopy()
		unstructured.RemoveNestedField(u.Object, "status")
		unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return names, fmt.Errorf("applying CustomResourceDefinition %s: %w", u.GetName(), err)
		}
		names = append(names, u.GetName())
	}
	return names, nil
}
