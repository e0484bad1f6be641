package harness

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

const module = "github.com/ha-injector/ha-injector"

// TestProductDoesNotImportTestCode reads the imports of every Go file of the product
// (every non-test file outside test/ and hack/, whatever its build tags) and fails for
// an import of a package under test/ or hack/. A product package that reached one
// indirectly would go through a product file that imports it, so direct imports are
// enough. The files are read in this process, so go test's cache sees them change.
func TestProductDoesNotImportTestCode(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	fset := token.NewFileSet()
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if rel == "test" || rel == "hack" || name == "testdata" || (rel != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_"))) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		files++
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			if strings.HasPrefix(p, module+"/test/") || strings.HasPrefix(p, module+"/hack/") {
				t.Errorf("%s imports %s: test code in the product", rel, p)
			}
		}
		return nil
	})
	require.NoError(t, err)
	// The product's files (cmd, policies, webhook, ...) must have been read.
	require.Greater(t, files, 30, "Go files of the product read")
}
