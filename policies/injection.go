package policies

import (
	"reflect"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Injection is one thing ha-injector injects into a pod template: anti-affinity,
// a zone spread, tolerations, sysctls. Everything the engine, the record, the
// patch and the facts gatherer know of a feature comes from its Injection, and
// every Injection is in one ordered list (registered): adding a feature is a
// file with its type, its field in the HAPolicy API, and one line there.
type Injection interface {
	// Feature names it in decisions, in the record and in the metrics.
	Feature() Feature
	// Parts are the parts of a pod spec it may change. Nothing else of a
	// pod spec is ever changed, copied, compared or patched.
	Parts() []Part
	// Needs says which facts it needs to decide for this (defaulted) policy
	// and workload, beyond the policy and the workload themselves.
	Needs(policy *v1alpha1.HAPolicy, w Workload) Needs
	// Apply applies the policy to the template being mutated: it changes
	// only its parts of in.Spec, puts what it injected (enough to undo it)
	// in its part of in.Record, and says what it decided.
	Apply(in *Input) []Decision
	// Undo takes out of spec what its part of rec says it injected. A part
	// the user changed since is the user's: it stays, with a Kept decision.
	Undo(rec *Record, spec *corev1.PodSpec) []Decision
	// Native is its CEL counterpart, for native mode (CompileNative): what
	// the API server evaluates for a pod in its place.
	Native(s NativeSettings) Native
}

// registered are the injections, in the order they are applied and reported.
var registered = []Injection{
	antiAffinityInjection{},
	zoneSpreadInjection{},
	tolerationsInjection{},
	sysctlsInjection{},
}

// Injections returns the registered injections, in order.
func Injections() []Injection { return slices.Clone(registered) }

// Input is what an injection applies the policy to: one pod template being
// mutated, and what the engine knows around it.
type Input struct {
	// Policy is the policy, defaulted (shared: read only).
	Policy *v1alpha1.HAPolicy
	// Context is the engine's context.
	Context Context
	// Workload is the object whose template it is.
	Workload Workload
	// Labels are the template's labels.
	Labels map[string]string
	// Spec is the pod spec being mutated: the injection's parts are its own
	// copies, everything else is shared with the input and must not change.
	Spec *corev1.PodSpec
	// Record is the record being written for this admission.
	Record *Record
	// Prior is, for a Pod, the record it arrived with (its template's); an
	// injection that takes back a part of it (Prior.Drop) makes the engine
	// write the pod's record anew. Nil for a Deployment, whose earlier
	// injection has been undone.
	Prior *Record

	// original is the pod spec as it came, before any undo: what the API
	// server stored, with its defaults.
	original *corev1.PodSpec
}

// Original returns the pod spec as it came in, before the earlier injection
// was undone (read only): an injection that puts back exactly what it had
// injected keeps the stored copy, with the API server's defaults, so that
// nothing changes.
func (in *Input) Original() *corev1.PodSpec { return in.original }

// Needs are the facts an injection needs besides the policy and the workload.
type Needs struct {
	// TopologyKeys are the node labels whose number of schedulable domains
	// it needs (Cluster.TopologyDomains).
	TopologyKeys []string
}

// NeedsOf is what the registered injections need to decide for a workload
// under policy (nil: the built-in default policy): what the facts gatherer
// reads, and nothing more.
func NeedsOf(policy *v1alpha1.HAPolicy, w Workload) Needs {
	p := defaulted(policy)
	var all Needs
	for _, inj := range registered {
		for _, key := range inj.Needs(p, w).TopologyKeys {
			if !slices.Contains(all.TopologyKeys, key) {
				all.TopologyKeys = append(all.TopologyKeys, key)
			}
		}
	}
	return all
}

// Part is a part of a pod spec that an injection may change: a field of the
// pod spec itself (tolerations), or a field of a struct the pod spec points
// to (affinity.podAntiAffinity). The engine owns a copy of it before any
// change, compares it to tell whether anything changed, and the webhook's
// patch is built from the parts only.
type Part struct {
	// Path is where it is in a pod spec, as JSON keys: one for a field of the
	// spec, two for a field of a struct the spec points to.
	Path []string
	// Head, for a list part, tells the element an injection inserts first,
	// so the patch expresses its insertion or removal as one operation at
	// index 0 instead of a rewrite of every element after it.
	Head func(element any) bool

	// value returns the part of s (nil when absent) and, for a field of a
	// struct the spec points to, whether that struct is there.
	value func(s *corev1.PodSpec) (v any, parent bool)
	// own replaces what s holds of the part (the struct holding it, for a
	// nested part) with a deep copy.
	own func(s *corev1.PodSpec)
	// same reports whether a and b hold equal parts (the whole holding struct,
	// for a nested part, which own copied whole).
	same func(a, b *corev1.PodSpec) bool
}

// Value returns the part in s, nil when absent, and whether the struct that
// holds a nested part is there (always true for a field of the spec).
func (p Part) Value(s *corev1.PodSpec) (v any, parent bool) { return p.value(s) }

// specField is a Part for a slice field of the pod spec itself, such as
// tolerations.
func specField[T any, P interface {
	*T
	DeepCopyInto(*T)
}](name string, field func(*corev1.PodSpec) *[]T) Part {
	return Part{
		Path: []string{name},
		value: func(s *corev1.PodSpec) (any, bool) {
			if v := *field(s); v != nil {
				return v, true
			}
			return nil, true
		},
		own:  func(s *corev1.PodSpec) { *field(s) = deepCopySlice[T, P](*field(s)) },
		same: func(a, b *corev1.PodSpec) bool { return equality.Semantic.DeepEqual(*field(a), *field(b)) },
	}
}

// nestedField is a Part for a field of a struct the pod spec points to, such
// as affinity.podAntiAffinity: the engine owns a copy of that whole struct.
func nestedField[S any, PS interface {
	*S
	DeepCopy() *S
}](parent, name string, holder func(*corev1.PodSpec) *PS, field func(PS) any) Part {
	return Part{
		Path: []string{parent, name},
		value: func(s *corev1.PodSpec) (any, bool) {
			h := *holder(s)
			if h == nil {
				return nil, false
			}
			v := field(h)
			if reflect.ValueOf(v).IsNil() {
				return nil, true
			}
			return v, true
		},
		own: func(s *corev1.PodSpec) {
			if h := *holder(s); h != nil {
				*holder(s) = h.DeepCopy()
			}
		},
		same: func(a, b *corev1.PodSpec) bool { return equality.Semantic.DeepEqual(*holder(a), *holder(b)) },
	}
}

// parts returns the parts of every registered injection, each once (by
// path). It is computed on first use: the injections' parts are package
// variables that an interface call does not order before it.
var parts = sync.OnceValue(func() []Part {
	var all []Part
	for _, inj := range registered {
		for _, p := range inj.Parts() {
			if !slices.ContainsFunc(all, func(q Part) bool { return slices.Equal(q.Path, p.Path) }) {
				all = append(all, p)
			}
		}
	}
	return all
})

// Parts returns the parts of a pod spec that the registered injections may
// change, each once.
func Parts() []Part { return slices.Clone(parts()) }
