package policies_test

import (
	"encoding/json"
	"testing"

	"github.com/ha-injector/ha-injector/internal/preview"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// FuzzMutateDocument feeds arbitrary documents, under each golden case's
// policy and namespace, to the engine: it must never panic, and whatever it
// accepts it must mutate idempotently into an object that still decodes.
// The seeds are the objects of every golden case plus
// testdata/fuzz/FuzzMutateDocument.
func FuzzMutateDocument(f *testing.F) {
	all := loadCases(f)
	for i, c := range all {
		f.Add(c.Object.JSON, uint8(i))
	}
	f.Fuzz(func(t *testing.T, doc []byte, which uint8) {
		ctx := all[int(which)%len(all)].Context
		once, m, err := preview.Document(ctx, doc)
		if err != nil || m == nil {
			return
		}
		var decoded map[string]any
		if err := json.Unmarshal(once, &decoded); err != nil {
			t.Fatalf("the mutated document is not JSON: %v", err)
		}
		_, m2, err := preview.Document(ctx, once)
		if err != nil {
			t.Fatalf("the mutated document is rejected: %v", err)
		}
		if ctx.Policy.Spec.Mode == v1alpha1.ModeEnforce && m2.Changed {
			t.Fatalf("not idempotent: the second pass changed the object: %v", m2.Decisions)
		}
	})
}
