package patch

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPathLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"/spec", "/spec/tolerations", true},
		{"/spec/tolerations", "/spec", false},
		{"/spec/tolerations/2", "/spec/tolerations/10", true},
		{"/spec/tolerations/10", "/spec/tolerations/2", false},
		{"/metadata/annotations", "/spec", true},
		{"/spec/affinity", "/spec/affinity", false},
		{"/spec/initContainers/0", "/spec/initContainers/name", true},
	} {
		assert.Equal(t, tc.less, pathLess(tc.a, tc.b), "%s < %s", tc.a, tc.b)
	}
}
