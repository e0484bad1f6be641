package doctor

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ha-injector/ha-injector/policies"
)

func TestProbeGroupsByPolicyAndPodSecurityLabels(t *testing.T) {
	ns := func(name string, labels map[string]string) corev1.Namespace {
		return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	got := groups([]corev1.Namespace{
		ns("b", map[string]string{policies.PolicyLabel: "default"}),
		ns("a", map[string]string{policies.PolicyLabel: "default", "team": "x"}),
		ns("r", map[string]string{policies.PolicyLabel: "default", policies.PodSecurityEnforceLabel: "restricted"}),
		ns("r-pinned", map[string]string{policies.PolicyLabel: "default", policies.PodSecurityEnforceLabel: "restricted", podSecurityVersionLabel: "v1.28"}),
		ns("s", map[string]string{policies.PolicyLabel: "strict"}),
	})
	var lines []string
	for _, g := range got {
		lines = append(lines, g.describe())
	}
	assert.Equal(t, []string{
		"namespace a (policy default, Pod Security cluster default; stands for 1 more like it)",
		"namespace r (policy default, Pod Security restricted)",
		"namespace r-pinned (policy default, Pod Security restricted@v1.28)",
		"namespace s (policy strict, Pod Security cluster default)",
	}, lines)
}

func TestWriteText(t *testing.T) {
	r := &Report{Checks: []Check{
		{Name: "crd", Status: OK, Message: "served", Fix: "not shown when ok"},
		{Name: "workloads", Status: Warn, Message: "2 would change", Fix: "restart them", Items: []string{"a/Deployment x: not injected"}},
	}}
	var b strings.Builder
	assert.NoError(t, r.WriteText(&b))
	assert.Equal(t, ""+
		"ok    crd        served\n"+
		"warn  workloads  2 would change\n"+
		"                 → restart them\n"+
		"                 - a/Deployment x: not injected\n", b.String())
	assert.False(t, r.Failed())
	r.add(Check{Name: "probe", Status: Fail})
	assert.True(t, r.Failed())
}
