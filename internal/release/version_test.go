package release

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

const changelog = `# Changelog

Intro text.

## [Unreleased]

### Added

- A thing that wraps
  over two lines.

## [0.2.0] - 2027-01-15

Highlights first.

### Changed

- The default moved.

### Fixed

- A bug.
- Another bug.

## [0.1.0] - 2026-12-20

### Added

- Everything.

[0.2.0]: https://github.com/ha-injector/ha-injector/releases/tag/v0.2.0
[0.1.0]: https://github.com/ha-injector/ha-injector/releases/tag/v0.1.0
`

func TestChangelog(t *testing.T) {
	sections, err := Changelog([]byte(changelog))
	require.NoError(t, err)
	require.Len(t, sections, 3)
	assert.Equal(t, Section{Version: "Unreleased", Body: "### Added\n\n- A thing that wraps\n  over two lines."}, sections[0])
	assert.Equal(t, "2027-01-15", sections[1].Date)
	assert.Equal(t, "### Added\n\n- Everything.", sections[2].Body, "the link definitions at the end are not notes")

	notes, err := Notes([]byte(changelog), "0.2.0")
	require.NoError(t, err)
	assert.Equal(t, "Highlights first.\n\n### Changed\n\n- The default moved.\n\n### Fixed\n\n- A bug.\n- Another bug.\n", notes)
	_, err = Notes([]byte(changelog), "0.3.0")
	assert.ErrorContains(t, err, `CHANGELOG.md has no section "## [0.3.0] - YYYY-MM-DD"`)

	changes, err := Changes(notes)
	require.NoError(t, err)
	assert.Equal(t, []Change{{"changed", "The default moved."}, {"fixed", "A bug."}, {"fixed", "Another bug."}}, changes)
	changes, err = Changes(sections[0].Body)
	require.NoError(t, err)
	assert.Equal(t, []Change{{"added", "A thing that wraps over two lines."}}, changes)
	_, err = Changes("### Improved\n\n- x")
	assert.ErrorContains(t, err, "is not a kind of change")

	for heading, want := range map[string]string{
		"## [v0.3.0] - 2027-02-01": "no v",
		"## [0.3.0]":               "YYYY-MM-DD",
		"## 0.3.0 - 2027-02-01":    "a section heading is",
		"## [Unreleased] - 2027":   "a section heading is",
	} {
		_, err := Changelog([]byte("# Changelog\n\n" + heading + "\n"))
		assert.ErrorContains(t, err, want, heading)
	}

	// The repository's own CHANGELOG reads, and has an Unreleased section.
	data, err := os.ReadFile(filepath.Join("..", "..", ChangelogFile))
	require.NoError(t, err)
	sections, err = Changelog(data)
	require.NoError(t, err)
	require.NotEmpty(t, sections)
	assert.Equal(t, "Unreleased", sections[0].Version, "the newest section is Unreleased")
	changes, err = Changes(sections[0].Body)
	require.NoError(t, err)
	assert.NotEmpty(t, changes)
}

func TestArtifactNames(t *testing.T) {
	assert.Equal(t, []string{
		"ha-injector-0.1.0.tgz",
		"ha-injector.yaml",
		"ha-injector_0.1.0_checksums.txt",
		"ha-injector_0.1.0_darwin_amd64.tar.gz",
		"ha-injector_0.1.0_darwin_arm64.tar.gz",
		"ha-injector_0.1.0_image.tar",
		"ha-injector_0.1.0_linux_amd64.tar.gz",
		"ha-injector_0.1.0_linux_arm64.tar.gz",
		"ha-injector_0.1.0_windows_amd64.tar.gz",
		"ha-injector_0.1.0_windows_arm64.tar.gz",
	}, Artifacts("0.1.0", CLIPlatforms), "Go's lowercase GOOS and GOARCH")
	assert.Equal(t, "ha-injector.exe", BinaryName(v1.Platform{OS: "windows", Architecture: "arm64"}))
	assert.Equal(t, "ha-injector", BinaryName(v1.Platform{OS: "darwin", Architecture: "arm64"}))
}

func TestPinDigest(t *testing.T) {
	chrt, err := loader.Load(filepath.Join("..", "..", "charts", "ha-injector"))
	require.NoError(t, err)
	digest, err := v1.NewHash("sha256:" + strings.Repeat("ab", 32))
	require.NoError(t, err)
	require.NoError(t, PinDigest(chrt, digest))
	assert.Equal(t, digest.String(), chrt.Values["image"].(map[string]any)["digest"])
	assert.Equal(t, "", chrt.Values["sysctlImage"].(map[string]any)["digest"], "only image's digest")
	var raw string
	for _, f := range chrt.Raw {
		if f.Name == "values.yaml" {
			raw = string(f.Data)
		}
	}
	assert.Contains(t, raw, `  digest: "`+digest.String()+`"`)
	assert.Contains(t, raw, "# Image digest (sha256:...)", "comments kept")
	assert.ErrorContains(t, PinDigest(chrt, digest), "no empty image.digest line", "pinned once")
}

func TestCheckVersion(t *testing.T) {
	root := filepath.Join("..", "..")
	md, err := ChartMetadata(root)
	require.NoError(t, err)
	require.NoError(t, CheckVersion(root, md.AppVersion))
	assert.ErrorContains(t, CheckVersion(root, "v"+md.AppVersion), "without a v")
	assert.ErrorContains(t, CheckVersion(root, "1.2"), "not a semantic version")
	assert.ErrorContains(t, CheckVersion(root, "99.0.0"), "a release of 99.0.0 needs both to be 99.0.0")
}

// TestCheckChartVersion holds the rule "a chart that changed since the last release has a
// new version" to repositories made here, tagged or not, shallow or not.
func TestCheckChartVersion(t *testing.T) {
	repo := newRepo(t, "0.1.0", "# Changelog\n\n## [Unreleased]\n\n### Added\n\n- x\n")

	what, err := CheckChartVersion(repo)
	require.NoError(t, err)
	assert.Equal(t, "no release yet (no v* tag, no dated section in CHANGELOG.md): chart 0.1.0 is the first", what)

	// Released: the CHANGELOG dates 0.1.0; without its tag the clone cannot be checked.
	write(t, repo, "CHANGELOG.md", "# Changelog\n\n## [Unreleased]\n\n## [0.1.0] - 2026-12-20\n\n### Added\n\n- x\n")
	commit(t, repo, "release 0.1.0")
	_, err = CheckChartVersion(repo)
	assert.ErrorContains(t, err, "lists releases whose tags this clone lacks (v0.1.0)")
	run(t, repo, "git", "tag", "v0.1.0")
	what, err = CheckChartVersion(repo)
	require.NoError(t, err)
	assert.Equal(t, "last release v0.1.0 (chart 0.1.0); charts/ha-injector changed in 0 files since; chart now 0.1.0", what)

	// A tag the CHANGELOG does not know.
	run(t, repo, "git", "tag", "v0.0.9", "HEAD")
	_, err = CheckChartVersion(repo)
	assert.ErrorContains(t, err, "tag v0.0.9 has no dated section")
	run(t, repo, "git", "tag", "-d", "v0.0.9")

	// The chart changes: not committed, committed, a file added.
	write(t, repo, "charts/ha-injector/values.yaml", "replicaCount: 3\n")
	_, err = CheckChartVersion(repo)
	assert.ErrorContains(t, err, "charts/ha-injector changed since v0.1.0 (charts/ha-injector/values.yaml) but Chart.yaml's version is still 0.1.0")
	commit(t, repo, "values")
	_, err = CheckChartVersion(repo)
	assert.ErrorContains(t, err, "changed since v0.1.0")
	write(t, repo, "charts/ha-injector/templates/new.yaml", "{}\n")
	_, err = CheckChartVersion(repo)
	assert.ErrorContains(t, err, "charts/ha-injector/templates/new.yaml")

	// Bumped: fine; below the release: not; version and appVersion apart: not.
	write(t, repo, "charts/ha-injector/Chart.yaml", chartYAML("0.2.0", "0.2.0"))
	what, err = CheckChartVersion(repo)
	require.NoError(t, err)
	assert.Contains(t, what, "chart now 0.2.0")
	write(t, repo, "charts/ha-injector/Chart.yaml", chartYAML("0.0.5", "0.0.5"))
	_, err = CheckChartVersion(repo)
	assert.ErrorContains(t, err, "Chart.yaml's version 0.0.5 is below v0.1.0's 0.1.0")
	write(t, repo, "charts/ha-injector/Chart.yaml", chartYAML("0.2.0", "0.1.0"))
	_, err = CheckChartVersion(repo)
	assert.ErrorContains(t, err, "appVersion \"0.1.0\" differs from its version \"0.2.0\"")
	write(t, repo, "charts/ha-injector/Chart.yaml", chartYAML("0.2.0", "0.2.0"))
	commit(t, repo, "bump")

	// Shallow clones without tags: the CHANGELOG still says whether there was a release.
	shallow := filepath.Join(t.TempDir(), "shallow")
	run(t, "", "git", "clone", "-q", "--depth", "1", "--no-tags", "file://"+repo, shallow)
	_, err = CheckChartVersion(shallow)
	assert.ErrorContains(t, err, "lists releases whose tags this clone lacks (v0.1.0): fetch them (git fetch --unshallow --tags")
	fresh := newRepo(t, "0.1.0", "# Changelog\n\n## [Unreleased]\n")
	write(t, fresh, "README", "x\n")
	commit(t, fresh, "second")
	shallow = filepath.Join(t.TempDir(), "fresh")
	run(t, "", "git", "clone", "-q", "--depth", "1", "--no-tags", "file://"+fresh, shallow)
	what, err = CheckChartVersion(shallow)
	require.NoError(t, err)
	assert.Contains(t, what, "no release yet")

	// Outside git: an error, not a pass.
	plain := t.TempDir()
	write(t, plain, "charts/ha-injector/Chart.yaml", chartYAML("0.1.0", "0.1.0"))
	write(t, plain, "CHANGELOG.md", "# Changelog\n")
	_, err = CheckChartVersion(plain)
	assert.ErrorContains(t, err, "checked against the git tags of the releases")
}

func chartYAML(version, appVersion string) string {
	return "apiVersion: v2\nname: ha-injector\nversion: " + version + "\nappVersion: \"" + appVersion + "\"\n"
}

func newRepo(t *testing.T, version, changelog string) string {
	t.Helper()
	repo := t.TempDir()
	run(t, repo, "git", "init", "-q", "-b", "main")
	write(t, repo, "charts/ha-injector/Chart.yaml", chartYAML(version, version))
	write(t, repo, "CHANGELOG.md", changelog)
	commit(t, repo, "first")
	return repo
}

func write(t *testing.T, root, name, data string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, name), []byte(data), 0o644))
}

func commit(t *testing.T, repo, msg string) {
	t.Helper()
	run(t, repo, "git", "add", "-A")
	run(t, repo, "git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", msg)
}

func run(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%v: %s", args, out)
}

// TestCheckTag: the release workflow's first step refuses a tag Chart.yaml or the
// CHANGELOG does not agree with.
func TestCheckTag(t *testing.T) {
	repo := t.TempDir()
	write(t, repo, "charts/ha-injector/Chart.yaml", chartYAML("0.2.0", "0.2.0"))
	write(t, repo, "CHANGELOG.md", "# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2027-01-15\n\n### Fixed\n\n- A bug.\n")
	require.NoError(t, CheckTag(repo, "v0.2.0"))
	assert.ErrorContains(t, CheckTag(repo, "0.2.0"), "a release tag is vX.Y.Z")
	assert.ErrorContains(t, CheckTag(repo, "v0.3.0"), "a release of 0.3.0 needs both to be 0.3.0")
	write(t, repo, "charts/ha-injector/Chart.yaml", chartYAML("0.3.0", "0.3.0"))
	assert.ErrorContains(t, CheckTag(repo, "v0.3.0"), `CHANGELOG.md has no section "## [0.3.0] - YYYY-MM-DD"`)
}
