package facts

import (
	"testing"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodSecurityAutoIsRestrictedOnOpenShiftOnly(t *testing.T) {
	assert.Equal(t, "privileged", podSecurityLevelFor([]metav1.APIGroup{{Name: "apps"}, {Name: "ha-injector.io"}}))
	assert.Equal(t, "restricted", podSecurityLevelFor([]metav1.APIGroup{{Name: "apps"}, {Name: "security.openshift.io"}}))
}
