package policies

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/types"
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

// defaulted returns a copy of p with its defaults, or the built-in default
// policy when p is nil. The copy of a stored policy's version is made once
// and shared by every admission: it is read only.
func defaulted(p *v1alpha1.HAPolicy) *v1alpha1.HAPolicy {
	if p == nil {
		return v1alpha1.NewDefault()
	}
	return versionOf(p).defaulted
}

// policyHash is a short hash of a policy's spec, so a record says which
// version of the policy made it.
func policyHash(p *v1alpha1.HAPolicy) string {
	if !stored(p) {
		return hashSpec(p)
	}
	return versionOf(p).hash
}

func hashSpec(p *v1alpha1.HAPolicy) string {
	b, _ := json.Marshal(p.Spec)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:4])
}

// stored reports whether p is a version of a policy the API server holds: it
// has a UID and a resourceVersion.
func stored(p *v1alpha1.HAPolicy) bool { return p.UID != "" && p.ResourceVersion != "" }

// policyVersion is what the engine derives from one version of a policy: the
// policy with its defaults (shared, read only), the hash of its spec, and
// what Validate finds wrong with it.
type policyVersion struct {
	resourceVersion string
	defaulted       *v1alpha1.HAPolicy
	hash            string
	invalid         error
}

// versionOf returns what the engine derives from p: once per version of a
// stored policy, the webhook handing the engine the same few policies on
// every admission; on every call for any other (a file given to preview).
func versionOf(p *v1alpha1.HAPolicy) policyVersion {
	if stored(p) {
		policyVersions.Lock()
		v, ok := policyVersions.byUID[p.UID]
		policyVersions.Unlock()
		if ok && v.resourceVersion == p.ResourceVersion {
			return v
		}
	}
	d := p.DeepCopy()
	d.Default()
	v := policyVersion{resourceVersion: p.ResourceVersion, defaulted: d, hash: hashSpec(d)}
	if errs := d.Validate(); len(errs) > 0 {
		v.invalid = &InvalidPolicyError{Policy: p.Name, Errs: errs}
	}
	if stored(p) {
		policyVersions.Lock()
		defer policyVersions.Unlock()
		if len(policyVersions.byUID) >= maxPolicyVersions {
			clear(policyVersions.byUID) // policies deleted over the years
		}
		policyVersions.byUID[p.UID] = v
	}
	return v
}

// policyVersions holds the last version seen of each stored policy.
var policyVersions = struct {
	sync.Mutex
	byUID map[types.UID]policyVersion
}{byUID: map[types.UID]policyVersion{}}

const maxPolicyVersions = 4096
