package policies

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// TestPolicyHashFollowsTheStoredVersion: a stored policy's hash is computed once per
// version and follows a new one; a policy from a file (no UID) is hashed every time.
func TestPolicyHashFollowsTheStoredVersion(t *testing.T) {
	p := v1alpha1.NewDefault()
	fromFile := policyHash(p)
	p.UID, p.ResourceVersion = "uid-1", "1"
	assert.Equal(t, fromFile, policyHash(p), "the same spec, the same hash")
	p.Spec.Tolerations.UnreachableSeconds = ptr.To[int64](10)
	assert.Equal(t, fromFile, policyHash(p), "the same version: its hash kept")
	p.ResourceVersion = "2"
	changed := policyHash(p)
	assert.NotEqual(t, fromFile, changed, "a new version: hashed again")
	p.UID, p.ResourceVersion = "", ""
	assert.Equal(t, changed, policyHash(p))
}
