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

// createPatch diffs two typed objects with gomodules.xyz/jsonpatch/v2.
//
// Both sides are typed, so a field of the request that this build's API types
// do not know appears on neither side and no operation touches it: the patch
// never removes what a newer cluster added.
//
// jsonpatch/v2 diffs arrays index by index, so the ha-sysctl container
// inserted at (or removed from) the front of the init containers would come
// out as a rewrite of every other init container, moving their unknown fields
// onto the wrong container. That one change is therefore left out of the diff
// and expressed as one "add .../0" or "remove .../0", applied after the
// others (the removal: before them). before and after must be copies the
// caller owns; specPath locates their pod specs bs and as.
func createPatch(before, after any, specPath string, bs, as *corev1.PodSpec) ([]jsonpatch.Operation, error) {
	var first, last *jsonpatch.Operation
	switch {
	case startsWithSysctl(as) && !startsWithSysctl(bs):
		container := as.InitContainers[0]
		as.InitContainers = as.InitContainers[1:]
		op := jsonpatch.NewOperation("add", specPath+"/initContainers/0", container)
		if len(bs.InitContainers) == 0 {
			op = jsonpatch.NewOperation("add", specPath+"/initContainers", []corev1.Container{container})
		}
		last = &op
	case startsWithSysctl(bs) && !startsWithSysctl(as):
		bs.InitContainers = bs.InitContainers[1:]
		op := jsonpatch.NewOperation("remove", specPath+"/initContainers/0", nil)
		if len(bs.InitContainers) == 0 && len(as.InitContainers) == 0 {
			op = jsonpatch.NewOperation("remove", specPath+"/initContainers", nil)
			bs.InitContainers, as.InitContainers = nil, nil
		}
		first = &op
	}
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
	if first != nil {
		ops = append([]jsonpatch.Operation{*first}, ops...)
	}
	if last != nil {
		ops = append(ops, *last)
	}
	return ops, nil
}

func startsWithSysctl(spec *corev1.PodSpec) bool {
	return len(spec.InitContainers) > 0 && spec.InitContainers[0].Name == SysctlContainerName
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
