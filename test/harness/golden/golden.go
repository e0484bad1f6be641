// Package golden compares test output with golden files: a mismatch fails
// with a unified diff, and `go test ... -update` (or UPDATE_GOLDEN=1)
// rewrites the files from the current output.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pmezard/go-difflib/difflib"
)

var update = flag.Bool("update", os.Getenv("UPDATE_GOLDEN") != "", "rewrite the golden files from the current output")

// Check compares got with the golden file at path, or rewrites it when updating.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the golden file (run 'make golden' to create it): %v", err)
	}
	if bytes.Equal(want, got) {
		return
	}
	diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(want)), B: difflib.SplitLines(string(got)),
		FromFile: path, ToFile: "got", Context: 3,
	})
	t.Errorf("output differs from %s (run 'make golden' if the change is intended):\n%s", path, diff)
}

// Inputs lists the files matching pattern that are not golden files (by
// goldenSuffix), and fails on golden files whose input is missing.
func Inputs(t testing.TB, dir, inputSuffix, goldenSuffix string) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join(dir, "*"+inputSuffix))
	if err != nil {
		t.Fatal(err)
	}
	var inputs []string
	for _, in := range all {
		if !strings.HasSuffix(in, goldenSuffix) {
			inputs = append(inputs, in)
		}
	}
	goldens, err := filepath.Glob(filepath.Join(dir, "*"+goldenSuffix))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range goldens {
		in := strings.TrimSuffix(g, goldenSuffix) + inputSuffix
		if _, err := os.Stat(in); err != nil {
			t.Errorf("%s has no input %s: delete it or restore the input", g, in)
		}
	}
	if len(inputs) == 0 {
		t.Fatalf("no inputs matching %s in %s", inputSuffix, dir)
	}
	return inputs
}
