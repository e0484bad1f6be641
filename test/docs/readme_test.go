package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

// TestReadmeMapsTheDocs holds the README to what it is for: short enough to read in
// five minutes (under 250 lines), a map that links every page under docs/ (so nothing
// moved out of it is out of reach), and the test command CI runs (.ci/run).
func TestReadmeMapsTheDocs(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	lines := strings.Count(string(data), "\n")
	assert.Less(t, lines, 250, "README.md lines")

	links, _, err := newChecker(root).parse("README.md")
	require.NoError(t, err)
	linked := map[string]bool{}
	for _, l := range links {
		target, _, _ := strings.Cut(l.dest, "#")
		if target != "" && !scheme.MatchString(target) {
			linked[filepath.ToSlash(filepath.Clean(target))] = true
		}
	}
	pages, err := markdownFiles(root)
	require.NoError(t, err)
	docs := 0
	for _, page := range pages {
		if strings.HasPrefix(page, "docs/") {
			docs++
			assert.True(t, linked[page], "README.md links %s", page)
		}
	}
	assert.Greater(t, docs, 10, "pages under docs/")

	// The README's test command is the one CI runs.
	testCommand := regexp.MustCompile("(?m)^```sh\nmake test\n```$")
	assert.Regexp(t, testCommand, string(data), "README.md shows the test command")
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	require.NoError(t, err)
	assert.Regexp(t, regexp.MustCompile(`(?m)^make test$`), string(ci), ".ci/run runs the README's test command")
}
