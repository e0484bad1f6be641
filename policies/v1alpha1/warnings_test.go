package v1alpha1

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/utils/ptr"
)

func TestWarnings(t *testing.T) {
	notReady := func(s int64) string {
		return "spec.tolerations.notReadySeconds is " + itoa(s) + ", under 30: pods are evicted when a live kubelet reports NotReady for longer, as during a container runtime or CNI restart, and restarted for nothing"
	}
	const unreachable0 = "spec.tolerations.unreachableSeconds is 0: pods are evicted the moment their node is marked unreachable, with no grace for a node that was only late to renew its Lease"
	for _, tc := range []struct {
		name                  string
		notReady, unreachable *int64
		disabled              bool
		want                  []string
	}{
		{name: "the default policy"},
		{name: "a not-ready toleration of 30 s, the line", notReady: ptr.To[int64](30)},
		{name: "a not-ready toleration of 29 s", notReady: ptr.To[int64](29), want: []string{notReady(29)}},
		{name: "a not-ready toleration of 0 s", notReady: ptr.To[int64](0), want: []string{notReady(0)}},
		{name: "an unreachable toleration of 1 s, a choice for a dead node", unreachable: ptr.To[int64](1)},
		{name: "an unreachable toleration of 0 s", unreachable: ptr.To[int64](0), want: []string{unreachable0}},
		{name: "both", notReady: ptr.To[int64](10), unreachable: ptr.To[int64](0), want: []string{notReady(10), unreachable0}},
		{name: "no tolerations injected at all", notReady: ptr.To[int64](0), unreachable: ptr.To[int64](0), disabled: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewDefault()
			if tc.notReady != nil {
				p.Spec.Tolerations.NotReadySeconds = tc.notReady
			}
			if tc.unreachable != nil {
				p.Spec.Tolerations.UnreachableSeconds = tc.unreachable
			}
			if tc.disabled {
				p.Spec.Tolerations.Enabled = ptr.To(false)
			}
			assert.Equal(t, tc.want, p.Warnings())
		})
	}
}

func itoa(i int64) string { return fmt.Sprint(i) }
