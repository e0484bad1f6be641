package docs

import (
	"bytes"
	"os"
	"os/exec"
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

// TestDocsStandAlone: the design is described in docs/design.md, and no file git tracks
// sends its reader to a design document outside the repository.
func TestDocsStandAlone(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(root, "docs", "design.md"))
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	require.NoError(t, err, "git ls-files")
	outside := regexp.MustCompile(`DESIGN\.md|CONTROL-PLANE\.md|REAL-NODE\.md|STYLE\.md|shared folder`)
	files := 0
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if rel == "test/docs/readme_test.go" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil || bytes.IndexByte(data, 0) >= 0 {
			continue // deleted in the work tree, or binary
		}
		files++
		for i, line := range strings.Split(string(data), "\n") {
			if m := outside.FindString(line); m != "" {
				t.Errorf("%s:%d refers to %s, a document outside the repository: describe it in docs/", rel, i+1, m)
			}
		}
	}
	assert.Greater(t, files, 100, "tracked text files read")
}
