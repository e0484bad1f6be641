package bench

import (
	"encoding/json"
	"fmt"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
)

// Parts name what of a pod is compared between ha-injector's injections and a peer's.
type Parts int

const (
	// TolerationsOnly compares spec.tolerations: all the minimal webhook does.
	TolerationsOnly Parts = iota + 1
	// AllParts compares spec.tolerations, spec.affinity,
	// spec.securityContext.sysctls, spec.initContainers and
	// spec.topologySpreadConstraints: what the Kyverno policies do, and the two other
	// parts ha-injector can inject, which here neither does. Not compared: the
	// ha-injector.io/status record ours adds (no peer keeps one).
	AllParts
)

func (p Parts) String() string {
	switch p {
	case TolerationsOnly:
		return "spec.tolerations"
	case AllParts:
		return "spec.tolerations, spec.affinity, spec.securityContext.sysctls, spec.initContainers, spec.topologySpreadConstraints"
	}
	return "nothing"
}

// Injections are the parts of a pod the injections write, whole and in order: the
// tolerations list, the affinity, the securityContext's sysctls, the init containers
// and the topology spread constraints.
type Injections struct {
	Tolerations    []corev1.Toleration               `json:"tolerations,omitempty"`
	Affinity       *corev1.Affinity                  `json:"affinity,omitempty"`
	Sysctls        []corev1.Sysctl                   `json:"sysctls,omitempty"`
	InitContainers []corev1.Container                `json:"initContainers,omitempty"`
	Spread         []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
}

// InjectionsOf returns the parts of spec that Injections hold.
func InjectionsOf(spec *corev1.PodSpec) Injections {
	in := Injections{Tolerations: spec.Tolerations, Affinity: spec.Affinity, InitContainers: spec.InitContainers, Spread: spec.TopologySpreadConstraints}
	if spec.SecurityContext != nil {
		in.Sysctls = spec.SecurityContext.Sysctls
	}
	return in
}

// Only keeps the parts p compares.
func (in Injections) Only(p Parts) Injections {
	switch p {
	case TolerationsOnly:
		return Injections{Tolerations: in.Tolerations}
	case AllParts:
		return in
	}
	return Injections{}
}

// Equal compares the parts p names, semantically (nil and empty lists alike).
func (in Injections) Equal(other Injections, p Parts) bool {
	return apiequality.Semantic.DeepEqual(in.Only(p), other.Only(p))
}

func (in Injections) String() string {
	data, err := json.Marshal(in)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// mutated reports whether a not-ready or unreachable toleration has other seconds than
// the 300 DefaultTolerationSeconds gives: what every mutating peer changes, and so the
// sign that a peer's webhook configuration has taken effect.
func (in Injections) mutated() bool {
	for _, t := range in.Tolerations {
		if (t.Key == "node.kubernetes.io/not-ready" || t.Key == "node.kubernetes.io/unreachable") &&
			(t.TolerationSeconds == nil || *t.TolerationSeconds != 300) {
			return true
		}
	}
	return false
}

// patchedPod applies an answer's JSON patch to the Pod of an AdmissionReview body.
func patchedPod(reviewBody, patch []byte) (*corev1.Pod, error) {
	var review struct {
		Request struct {
			Object json.RawMessage `json:"object"`
		} `json:"request"`
	}
	if err := json.Unmarshal(reviewBody, &review); err != nil {
		return nil, err
	}
	raw := []byte(review.Request.Object)
	if len(patch) > 0 {
		p, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			return nil, fmt.Errorf("the answer's patch: %w", err)
		}
		if raw, err = p.Apply(raw); err != nil {
			return nil, fmt.Errorf("applying the answer's patch: %w", err)
		}
	}
	pod := &corev1.Pod{}
	return pod, json.Unmarshal(raw, pod)
}
