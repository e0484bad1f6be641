package policies

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	apiserverpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
)

// createPatch diffs two typed objects with gomodules.xyz/jsonpatch/v2 and
// appends insert, if any.
//
// Both sides are typed, so a field of the request that this build's API types
// do not know appears on neither side and no operation touches it: the patch
// never removes what a newer cluster added.
func createPatch(before, after any, insert *jsonpatch.Operation) ([]jsonpatch.Operation, error) {
	a, err := json.Marshal(before)
	if err != nil {
		return nil, fmt.Errorf("encoding the original object: %w", err)
	}
	b, err := json.Marshal(after)
	if err != nil {
		return nil, fmt.Errorf("encoding the mutated object: %w", err)
	}
	ops, err := jsonpatch.CreatePatch(a, b)
	if err != nil {
		return nil, fmt.Errorf("computing the patch: %w", err)
	}
	sortOperations(ops)
	if insert != nil {
		ops = append(ops, *insert)
	}
	return ops, nil
}

// takeInsertion removes the inserted ha-sysctl container (the first) from
// after's init containers and returns the one operation that inserts it.
//
// jsonpatch/v2 diffs arrays index by index, so a container inserted at the
// front would come out as a rewrite of every existing init container, which
// would move their unknown fields onto the wrong container. The insertion is
// therefore left out of the diff and expressed as one "add .../0", applied
// after the others. after must be a copy the caller owns.
func takeInsertion(specPath string, before, after *corev1.PodSpec) *jsonpatch.Operation {
	container := after.InitContainers[0]
	after.InitContainers = after.InitContainers[1:]
	op := jsonpatch.NewOperation("add", specPath+"/initContainers/0", container)
	if len(before.InitContainers) == 0 {
		op = jsonpatch.NewOperation("add", specPath+"/initContainers", []corev1.Container{container})
	}
	return &op
}

// sortOperations puts the operations in a stable order (jsonpatch/v2 emits
// them in map order), so that the same input always gives the same patch and
// new keys land in the same order. Removals keep their relative order and go
// first: jsonpatch/v2 emits an array's removals from the end, which is the
// order they must be applied in. Other operations are sorted by path, array
// indexes numerically, so additions to one array stay ascending.
func sortOperations(ops []jsonpatch.Operation) {
	sort.SliceStable(ops, func(i, j int) bool {
		ri, rj := ops[i].Operation == "remove", ops[j].Operation == "remove"
		if ri || rj {
			return ri && !rj
		}
		return pathLess(ops[i].Path, ops[j].Path)
	})
}

func pathLess(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for k := 0; k < len(as) && k < len(bs); k++ {
		if as[k] == bs[k] {
			continue
		}
		ai, aerr := strconv.Atoi(as[k])
		bi, berr := strconv.Atoi(bs[k])
		if aerr == nil && berr == nil {
			return ai < bi
		}
		return as[k] < bs[k]
	}
	return len(as) < len(bs)
}

// ApplyPatch applies a patch from Mutate to a JSON document exactly as the
// API server applies a webhook's patch to the request object, with the same
// library (gopkg.in/evanphx/json-patch.v4): an operation whose parent is
// missing fails. The webhook uses it to check a patch before sending it.
// Unlike applyPatch it does not keep the order of keys, which the API
// server does not need.
func ApplyPatch(doc []byte, ops []jsonpatch.Operation) ([]byte, error) {
	if len(ops) == 0 {
		return doc, nil
	}
	raw, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	return ApplyPatchJSON(doc, raw)
}

// ApplyPatchJSON is ApplyPatch for a patch already encoded, as the webhook sends it.
func ApplyPatchJSON(doc, patchJSON []byte) ([]byte, error) {
	patch, err := apiserverpatch.DecodePatch(patchJSON)
	if err != nil {
		return nil, err
	}
	return patch.Apply(doc)
}

// applyPatch applies ops to doc keeping the order of keys, as preview
// needs to print a document that differs from its input only by the
// injection; with createParents, an "add" whose parent
// objects are missing creates them. preview needs that: a hand-written
// manifest may omit objects that the typed encoding always has (a Pod
// without metadata, say), which the API server's request objects never do.
func applyPatch(doc []byte, ops []jsonpatch.Operation, createParents bool) ([]byte, error) {
	if len(ops) == 0 {
		return doc, nil
	}
	raw, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	patch, err := jsonpatchapply.DecodePatch(raw)
	if err != nil {
		return nil, err
	}
	opts := jsonpatchapply.NewApplyOptions()
	opts.EnsurePathExistsOnAdd = createParents
	return patch.ApplyWithOptions(doc, opts)
}
