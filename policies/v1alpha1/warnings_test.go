package v1alpha1

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/utils/ptr"
)

func TestWarningsOnZeroSecondTolerations(t *testing.T) {
	p := NewDefault()
	assert.Empty(t, p.Warnings(), "the default policy")

	p.Spec.Tolerations.UnreachableSeconds = ptr.To[int64](0)
	assert.Equal(t, []string{"spec.tolerations.unreachableSeconds is 0: pods are evicted the moment their node is marked unreachable, a container runtime restart included"}, p.Warnings())

	p.Spec.Tolerations.NotReadySeconds = ptr.To[int64](0)
	assert.Len(t, p.Warnings(), 2)

	p.Spec.Tolerations.Enabled = ptr.To(false)
	assert.Empty(t, p.Warnings(), "no tolerations are injected at all")
}
