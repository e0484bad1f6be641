package refdocs

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// CRDPage is the reference page of the custom resource of crdYAML (file, its path in the
// repository, named as the page's source): for each served version, the columns
// `kubectl get` prints and every field under spec and status with its type, default,
// validation (OpenAPI and CEL) and description. A schema keyword the page cannot show
// is an error rather than a field documented without it.
func CRDPage(crdYAML []byte, file string) ([]byte, error) {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(crdYAML, &crd); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	names := crd.Spec.Names
	var b strings.Builder
	header(&b, names.Kind+" reference",
		fmt.Sprintf("What an `%s` can say: every field with its type, default, validation and meaning, and the columns `kubectl get %s` prints.", names.Kind, names.Plural),
		fmt.Sprintf("the CRD `%s` (controller-gen, from the Go types and their markers)", file))
	for _, v := range crd.Spec.Versions {
		if !v.Served {
			continue
		}
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			return nil, fmt.Errorf("%s: version %s has no schema", file, v.Name)
		}
		root := v.Schema.OpenAPIV3Schema
		fmt.Fprintf(&b, "\n## `%s/%s`\n\n", crd.Spec.Group, v.Name)
		scope := "cluster-scoped"
		if crd.Spec.Scope == apiextensionsv1.NamespaceScoped {
			scope = "namespaced"
		}
		fmt.Fprintf(&b, "%s\n\n`%s` is %s: plural `%s`", prose(root.Description), names.Kind, scope, names.Plural)
		if len(names.ShortNames) > 0 {
			fmt.Fprintf(&b, ", short name %s", codeList(names.ShortNames))
		}
		if len(names.Categories) > 0 {
			fmt.Fprintf(&b, ", category %s", codeList(names.Categories))
		}
		if v.Storage {
			b.WriteString(", the version stored")
		}
		b.WriteString(".")
		if v.Subresources != nil && v.Subresources.Status != nil {
			b.WriteString(" `status` is a subresource: a write to the object does not change it.")
		}
		b.WriteString("\n")

		if len(v.AdditionalPrinterColumns) > 0 {
			fmt.Fprintf(&b, "\n### Columns of `kubectl get %s`\n\n", names.Plural)
			b.WriteString("`NAME` comes first. Columns of priority 0 are always printed; the others with `-o wide`. An empty cell is a field that is not set.\n\n")
			b.WriteString("| column | field | type | printed | meaning |\n| --- | --- | --- | --- | --- |\n")
			for _, c := range v.AdditionalPrinterColumns {
				printed := "always"
				if c.Priority > 0 {
					printed = "`-o wide`"
				}
				fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", strings.ToUpper(c.Name), code(c.JSONPath, true), c.Type, printed, cell(c.Description))
			}
		}

		fmt.Fprintf(&b, "\n### Fields\n\n")
		b.WriteString("The API server fills a missing field with its default (below) when it receives or reads an object, provided the object around the field is there.\n")
		for _, top := range []string{"spec", "status"} {
			p, ok := root.Properties[top]
			if !ok {
				continue
			}
			if err := fields(&b, top, p); err != nil {
				return nil, fmt.Errorf("%s: version %s: %w", file, v.Name, err)
			}
		}
	}
	return []byte(b.String()), nil
}

// fields writes the section of the field at path and of each field under it.
func fields(b *strings.Builder, path string, s apiextensionsv1.JSONSchemaProps) error {
	if err := supported(path, s); err != nil {
		return err
	}
	fmt.Fprintf(b, "\n#### `%s`\n\n", path)
	typ, err := typeOf(s)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Fprintf(b, "- Type: %s\n", typ)
	if s.Default != nil {
		fmt.Fprintf(b, "- Default: %s\n", code(string(s.Default.Raw), false))
	} else {
		b.WriteString("- Default: unset\n")
	}
	rules, err := validation(s)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, r := range rules {
		fmt.Fprintf(b, "- %s\n", r)
	}
	if ap := s.AdditionalProperties; ap != nil && ap.Schema != nil {
		if err := supported(path+"[*]", *ap.Schema); err != nil {
			return err
		}
		values, err := validation(*ap.Schema)
		if err != nil {
			return fmt.Errorf("%s values: %w", path, err)
		}
		if ap.Schema.Description != "" {
			values = append(values, prose(ap.Schema.Description))
		}
		if len(values) > 0 {
			b.WriteString("- Each value:\n")
			for _, r := range values {
				fmt.Fprintf(b, "  - %s\n", r)
			}
		}
	}
	if s.Items != nil && s.Items.Schema != nil {
		if err := supported(path+"[]", *s.Items.Schema); err != nil {
			return err
		}
		items, err := validation(*s.Items.Schema)
		if err != nil {
			return fmt.Errorf("%s items: %w", path, err)
		}
		if len(items) > 0 {
			b.WriteString("- Each item:\n")
			for _, r := range items {
				fmt.Fprintf(b, "  - %s\n", r)
			}
		}
	}
	if s.Description != "" {
		fmt.Fprintf(b, "\n%s\n", prose(s.Description))
	}
	for _, name := range sortedKeys(s.Properties) {
		if err := fields(b, path+"."+name, s.Properties[name]); err != nil {
			return err
		}
	}
	if s.Items != nil && s.Items.Schema != nil && len(s.Items.Schema.Properties) > 0 {
		for _, name := range sortedKeys(s.Items.Schema.Properties) {
			if err := fields(b, path+"[]."+name, s.Items.Schema.Properties[name]); err != nil {
				return err
			}
		}
	}
	return nil
}

// supported fails on the schema keywords the page does not show.
func supported(path string, s apiextensionsv1.JSONSchemaProps) error {
	var unknown []string
	for name, set := range map[string]bool{
		"allOf": len(s.AllOf) > 0, "oneOf": len(s.OneOf) > 0, "anyOf": len(s.AnyOf) > 0, "not": s.Not != nil,
		"patternProperties": len(s.PatternProperties) > 0, "dependencies": len(s.Dependencies) > 0,
		"additionalItems": s.AdditionalItems != nil, "$ref": s.Ref != nil,
		"x-kubernetes-int-or-string": s.XIntOrString, "x-kubernetes-embedded-resource": s.XEmbeddedResource,
		"items as an array of schemas": s.Items != nil && len(s.Items.JSONSchemas) > 0,
	} {
		if set {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("%s uses %s, which the reference page does not show yet (test/harness/refdocs)", path, strings.Join(unknown, ", "))
	}
	return nil
}

// typeOf names a schema's type as a user writes it: integer (int32), map of string to
// integer, list of string.
func typeOf(s apiextensionsv1.JSONSchemaProps) (string, error) {
	t := s.Type
	switch {
	case t == "" && s.XPreserveUnknownFields != nil && *s.XPreserveUnknownFields:
		return "any", nil
	case t == "":
		return "", fmt.Errorf("no type")
	case t == "object" && s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
		v, err := typeOf(*s.AdditionalProperties.Schema)
		if err != nil {
			return "", err
		}
		return "map of string to " + v, nil
	case t == "array" && s.Items != nil && s.Items.Schema != nil:
		v, err := typeOf(*s.Items.Schema)
		if err != nil {
			return "", err
		}
		return "list of " + v, nil
	}
	if s.Format != "" {
		t += " (" + s.Format + ")"
	}
	if s.Nullable {
		t += ", or null"
	}
	return t, nil
}

// validation lists what the API server checks of one value, CEL rules included.
func validation(s apiextensionsv1.JSONSchemaProps) ([]string, error) {
	var out []string
	if len(s.Enum) > 0 {
		var values []string
		for _, e := range s.Enum {
			var v any
			if err := json.Unmarshal(e.Raw, &v); err != nil {
				return nil, err
			}
			if str, ok := v.(string); ok {
				values = append(values, code(str, false))
			} else {
				values = append(values, code(string(e.Raw), false))
			}
		}
		out = append(out, "One of: "+strings.Join(values, ", "))
	}
	if s.Minimum != nil || s.Maximum != nil {
		out = append(out, "Range: "+span(s.Minimum, s.ExclusiveMinimum, s.Maximum, s.ExclusiveMaximum, ""))
	}
	if s.MultipleOf != nil {
		out = append(out, "A multiple of "+strconv.FormatFloat(*s.MultipleOf, 'f', -1, 64))
	}
	if s.MinLength != nil || s.MaxLength != nil {
		out = append(out, "Length: "+span(float(s.MinLength), false, float(s.MaxLength), false, " characters"))
	}
	if s.Pattern != "" {
		out = append(out, "Matches the regular expression "+code(s.Pattern, false))
	}
	if s.MinItems != nil || s.MaxItems != nil {
		out = append(out, "Items: "+span(float(s.MinItems), false, float(s.MaxItems), false, ""))
	}
	if s.UniqueItems {
		out = append(out, "Items are unique")
	}
	if s.MinProperties != nil || s.MaxProperties != nil {
		out = append(out, "Entries: "+span(float(s.MinProperties), false, float(s.MaxProperties), false, ""))
	}
	if len(s.Required) > 0 {
		out = append(out, "Required fields: "+codeList(s.Required))
	}
	if ap := s.AdditionalProperties; ap != nil && ap.Schema == nil && !ap.Allows {
		out = append(out, "No fields other than those below")
	}
	if s.XListType != nil {
		out = append(out, "List type: "+code(*s.XListType, false))
	}
	if len(s.XListMapKeys) > 0 {
		out = append(out, "Keys of the list's items: "+codeList(s.XListMapKeys))
	}
	if s.XMapType != nil {
		out = append(out, "Map type: "+code(*s.XMapType, false))
	}
	for _, r := range s.XValidations {
		line := "Rule (CEL) " + code(r.Rule, false) + "; when it does not hold, the API server refuses the object with "
		switch {
		case r.MessageExpression != "":
			line += "the message of " + code(r.MessageExpression, false)
		case r.Message != "":
			line += "the message: " + prose(r.Message)
		default:
			line += "the message " + code("failed rule: "+r.Rule, false)
		}
		if r.FieldPath != "" {
			line += " (on " + code(r.FieldPath, false) + ")"
		}
		if r.OptionalOldSelf != nil && *r.OptionalOldSelf {
			line += " (also on create, with no oldSelf)"
		}
		out = append(out, line)
	}
	return out, nil
}

// span writes the bounds min and max, either of which may be nil: "1 to 100", "at least 1",
// "more than 0", "at most 32".
func span(min *float64, minExclusive bool, max *float64, maxExclusive bool, unit string) string {
	n := func(v *float64) string { return strconv.FormatFloat(*v, 'f', -1, 64) }
	switch {
	case min != nil && max != nil && !minExclusive && !maxExclusive:
		return n(min) + " to " + n(max) + unit
	case min != nil && max != nil:
		return span(min, minExclusive, nil, false, "") + " and " + span(nil, false, max, maxExclusive, unit)
	case min != nil && minExclusive:
		return "more than " + n(min) + unit
	case min != nil:
		return "at least " + n(min) + unit
	case maxExclusive:
		return "less than " + n(max) + unit
	default:
		return "at most " + n(max) + unit
	}
}

func float(v *int64) *float64 {
	if v == nil {
		return nil
	}
	f := float64(*v)
	return &f
}

func codeList(items []string) string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = code(s, false)
	}
	return strings.Join(out, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
