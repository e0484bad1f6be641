package policies

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
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

// InvalidPolicyError says why a stored HAPolicy is refused: the rules of the
// CRD schema it breaks, each with the path of its field. A policy stored under
// an older CRD (one without a rule added since), or written while the API
// server did not check it, can break them.
type InvalidPolicyError struct {
	Policy string
	Errs   field.ErrorList
}

func (e *InvalidPolicyError) Error() string {
	return fmt.Sprintf("HAPolicy %q is invalid: %v", e.Policy, e.Errs.ToAggregate())
}

// Summary says it in a line that fits an admission warning: the policy, how
// many rules it breaks, and the first.
func (e *InvalidPolicyError) Summary() string {
	first := ""
	if len(e.Errs) > 0 {
		first = ": " + e.Errs[0].Error()
	}
	return fmt.Sprintf("HAPolicy %q breaks %d rule(s) of its CRD, so nothing of it is applied%s", e.Policy, len(e.Errs), first)
}

// PolicyError returns an *InvalidPolicyError when the policy, with its
// defaults, breaks a rule of the CRD schema (Validate, as preview and the API
// server apply it), and nil otherwise. A stored policy is checked once per
// version. The engine injects nothing from an invalid policy.
func PolicyError(p *v1alpha1.HAPolicy) error {
	if p == nil {
		return nil
	}
	return versionOf(p).invalid
}
