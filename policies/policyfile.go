package policies

import (
	"fmt"
	"strings"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// ParsePolicy decodes one HAPolicy from YAML or JSON, strictly (an unknown or
// mistyped field is an error naming it), then defaults and validates it as
// the API server would. The error lists every invalid field.
func ParsePolicy(data []byte) (*v1alpha1.HAPolicy, error) {
	doc, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var p v1alpha1.HAPolicy
	strict, err := kjson.UnmarshalStrict(doc, &p)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	if p.APIVersion != v1alpha1.GroupVersion.String() || p.Kind != "HAPolicy" {
		return nil, fmt.Errorf("want apiVersion %s and kind HAPolicy, got apiVersion %q and kind %q", v1alpha1.GroupVersion, p.APIVersion, p.Kind)
	}
	p.Default()
	if errs := p.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("invalid HAPolicy %q: %w", p.Name, errs.ToAggregate())
	}
	return &p, nil
}
