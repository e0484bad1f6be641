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

// TestDefaultedOncePerStoredVersion: the engine defaults a stored policy once
// per version, on a copy it shares, and never defaults the policy it is given.
func TestDefaultedOncePerStoredVersion(t *testing.T) {
	p := &v1alpha1.HAPolicy{}
	p.UID, p.ResourceVersion = "uid-defaulted", "1"
	first := defaulted(p)
	assert.Same(t, first, defaulted(p), "the same version: derived once")
	assert.Equal(t, v1alpha1.ModeEnforce, first.Spec.Mode)
	assert.Empty(t, p.Spec.Mode, "the given policy is not defaulted in place")

	p.ResourceVersion = "2"
	p.Spec.Tolerations.UnreachableSeconds = ptr.To[int64](10)
	second := defaulted(p)
	assert.NotSame(t, first, second, "a new version: derived again")
	assert.Equal(t, int64(10), *second.Spec.Tolerations.UnreachableSeconds)

	fromFile := &v1alpha1.HAPolicy{}
	assert.NotSame(t, defaulted(fromFile), defaulted(fromFile), "a policy that is not stored is derived on each use")
}
