package release

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"golang.org/x/mod/semver"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"sigs.k8s.io/yaml"
)

// ChangelogFile is the CHANGELOG, in Keep a Changelog's format.
const ChangelogFile = "CHANGELOG.md"

// ChartMetadata reads the chart's Chart.yaml under root.
func ChartMetadata(root string) (*chartv2.Metadata, error) {
	return chartutil.LoadChartfile(filepath.Join(root, ChartDir, chartutil.ChartfileName))
}

// CheckVersion checks version is the one version of the checkout: a semantic version
// without a v (the image tag and the chart's version; the git tag adds the v), equal to
// the chart's version and appVersion.
func CheckVersion(root, version string) error {
	if !isVersion(version) {
		return fmt.Errorf("version %q is not a semantic version MAJOR.MINOR.PATCH without a v (the git tag is v%s)", version, strings.TrimPrefix(version, "v"))
	}
	md, err := ChartMetadata(root)
	if err != nil {
		return err
	}
	if md.Version != version || md.AppVersion != version {
		return fmt.Errorf("Chart.yaml has version %q and appVersion %q: a release of %s needs both to be %s", md.Version, md.AppVersion, version, version)
	}
	return nil
}

// isVersion is a semantic version without a v, prerelease allowed, no build metadata.
func isVersion(v string) bool {
	return v != "" && !strings.HasPrefix(v, "v") && semver.IsValid("v"+v) && semver.Build("v"+v) == "" &&
		strings.Count(strings.SplitN(v, "-", 2)[0], ".") == 2
}

// Section is one version's section of the CHANGELOG.
type Section struct {
	// Version is "Unreleased" or a version without a v.
	Version string
	// Date is the release date of a released version (YYYY-MM-DD).
	Date string
	// Body is the section's text under its heading.
	Body string
}

var sectionHeading = regexp.MustCompile(`^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?\s*$`)

// Changelog reads the sections of a Keep a Changelog file: "## [Unreleased]" and
// "## [X.Y.Z] - YYYY-MM-DD", in the file's order. A heading of another shape is an error.
func Changelog(data []byte) ([]Section, error) {
	var out []Section
	var body strings.Builder
	flush := func() {
		if len(out) > 0 {
			out[len(out)-1].Body = strings.TrimSpace(body.String())
		}
		body.Reset()
	}
	s := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		if strings.HasPrefix(line, "## ") {
			m := sectionHeading.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("%s:%d: a section heading is \"## [Unreleased]\" or \"## [X.Y.Z] - YYYY-MM-DD\", not %q", ChangelogFile, n, line)
			}
			switch {
			case m[1] == "Unreleased" && m[2] != "":
				return nil, fmt.Errorf("%s:%d: the Unreleased section has no date", ChangelogFile, n)
			case m[1] != "Unreleased" && (!isVersion(m[1]) || m[2] == ""):
				return nil, fmt.Errorf("%s:%d: a released section is \"## [X.Y.Z] - YYYY-MM-DD\" (no v), not %q", ChangelogFile, n, line)
			}
			flush()
			out = append(out, Section{Version: m[1], Date: m[2]})
			continue
		}
		if len(out) > 0 && !isLinkReference(line) {
			body.WriteString(line + "\n")
		}
	}
	flush()
	return out, s.Err()
}

// isLinkReference is a Markdown link definition ("[0.1.0]: https://..."), kept at the
// end of a Keep a Changelog file: not part of the last section's notes.
func isLinkReference(line string) bool { return linkReference.MatchString(line) }

var linkReference = regexp.MustCompile(`^\[[^\]]+\]: \S+$`)

// Notes is the CHANGELOG section of version (without a v): a release's notes.
func Notes(data []byte, version string) (string, error) {
	sections, err := Changelog(data)
	if err != nil {
		return "", err
	}
	for _, s := range sections {
		if s.Version == version {
			if s.Body == "" {
				return "", fmt.Errorf("%s: the section of %s is empty", ChangelogFile, version)
			}
			return s.Body + "\n", nil
		}
	}
	return "", fmt.Errorf("%s has no section \"## [%s] - YYYY-MM-DD\"", ChangelogFile, version)
}

// CheckTag checks a release tag before anything is published: it is v<version> of a
// version the checkout agrees on (CheckVersion), and the CHANGELOG has its dated section.
func CheckTag(root, tag string) error {
	version, ok := strings.CutPrefix(tag, "v")
	if !ok {
		return fmt.Errorf("a release tag is vX.Y.Z, not %q", tag)
	}
	if err := CheckVersion(root, version); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(root, ChangelogFile))
	if err != nil {
		return err
	}
	_, err = Notes(data, version)
	return err
}

// CheckChartVersion holds the chart's version to what was released (docs/versioning.md):
// a published chart version never names two different charts. The releases are the
// CHANGELOG's dated sections and the repository's vX.Y.Z tags, which must agree (a clone
// without the tags of the releases its CHANGELOG lists cannot be checked, and fails);
// when charts/ha-injector differs from the last tag's, Chart.yaml's version must differ
// from (be above) the one at that tag. The CHANGELOG is what a shallow clone without tags
// still knows: with no dated section there was no release (CheckTag publishes none
// without one). It returns what it compared.
func CheckChartVersion(root string) (string, error) {
	md, err := ChartMetadata(root)
	if err != nil {
		return "", err
	}
	if !isVersion(md.Version) {
		return "", fmt.Errorf("Chart.yaml's version %q is not a semantic version without a v", md.Version)
	}
	if md.AppVersion != md.Version {
		return "", fmt.Errorf("Chart.yaml's appVersion %q differs from its version %q: they move together (docs/versioning.md)", md.AppVersion, md.Version)
	}
	data, err := os.ReadFile(filepath.Join(root, ChangelogFile))
	if err != nil {
		return "", err
	}
	sections, err := Changelog(data)
	if err != nil {
		return "", err
	}
	released := map[string]bool{}
	for _, s := range sections {
		if s.Version != "Unreleased" {
			released[s.Version] = true
		}
	}

	if _, err := git(root, "rev-parse", "--git-dir"); err != nil {
		return "", fmt.Errorf("the chart's version is checked against the git tags of the releases: %w", err)
	}
	shallow, err := git(root, "rev-parse", "--is-shallow-repository")
	if err != nil {
		return "", err
	}
	out, err := git(root, "tag", "--list", "v*")
	if err != nil {
		return "", err
	}
	var tags []string
	for _, t := range strings.Fields(out) {
		if isVersion(strings.TrimPrefix(t, "v")) {
			tags = append(tags, t)
			if !released[t[1:]] {
				return "", fmt.Errorf("tag %s has no dated section \"## [%s] - YYYY-MM-DD\" in %s", t, t[1:], ChangelogFile)
			}
		}
	}
	var missing []string
	for v := range released {
		if !slices.Contains(tags, "v"+v) {
			missing = append(missing, "v"+v)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		fetch := "git fetch --tags"
		if shallow == "true" {
			fetch = "git fetch --unshallow --tags"
		}
		return "", fmt.Errorf("%s lists releases whose tags this clone lacks (%s): fetch them (%s; actions/checkout with fetch-depth: 0)",
			ChangelogFile, strings.Join(missing, ", "), fetch)
	}
	if len(tags) == 0 {
		// Every release has its dated section (CheckTag refuses to publish one that has
		// not), so none there and no tag means none was made, shallow clone or not.
		return fmt.Sprintf("no release yet (no v* tag, no dated section in %s): chart %s is the first", ChangelogFile, md.Version), nil
	}
	semver.Sort(tags)
	last := tags[len(tags)-1]
	tagged, err := git(root, "show", last+":"+ChartDir+"/"+chartutil.ChartfileName)
	if err != nil {
		return "", fmt.Errorf("reading %s's Chart.yaml: %w", last, err)
	}
	var lastMD chartv2.Metadata
	if err := yaml.Unmarshal([]byte(tagged), &lastMD); err != nil {
		return "", fmt.Errorf("%s's Chart.yaml: %w", last, err)
	}
	if c := semver.Compare("v"+md.Version, "v"+lastMD.Version); c < 0 {
		return "", fmt.Errorf("Chart.yaml's version %s is below %s's %s", md.Version, last, lastMD.Version)
	}
	changed, err := chartChanges(root, last)
	if err != nil {
		return "", err
	}
	if len(changed) > 0 && md.Version == lastMD.Version {
		return "", fmt.Errorf("charts/ha-injector changed since %s (%s) but Chart.yaml's version is still %s: bump version and appVersion (docs/versioning.md)",
			last, strings.Join(changed, ", "), md.Version)
	}
	return fmt.Sprintf("last release %s (chart %s); charts/ha-injector changed in %d files since; chart now %s", last, lastMD.Version, len(changed), md.Version), nil
}

// chartChanges lists the chart's files that differ from tag, committed or not, and the
// files added but not committed yet.
func chartChanges(root, tag string) ([]string, error) {
	diff, err := git(root, "diff", "--name-only", tag, "--", ChartDir)
	if err != nil {
		return nil, err
	}
	untracked, err := git(root, "ls-files", "--others", "--exclude-standard", "--", ChartDir)
	if err != nil {
		return nil, err
	}
	return append(strings.Fields(diff), strings.Fields(untracked)...), nil
}

func git(root string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-C", root}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return "", fmt.Errorf("git %s: %s", strings.Join(args, " "), strings.TrimSpace(stderr.String()))
		}
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Change is one entry of Artifact Hub's artifacthub.io/changes annotation.
type Change struct {
	Kind        string `json:"kind"`
	Description string `json:"description"`
}

// changeKinds are Keep a Changelog's kinds of change, which are Artifact Hub's.
var changeKinds = map[string]string{"Added": "added", "Changed": "changed", "Deprecated": "deprecated",
	"Removed": "removed", "Fixed": "fixed", "Security": "security"}

// Changes reads a CHANGELOG section's entries ("### Added" then "- ..." items, wrapped
// lines joined) as Artifact Hub's changes. Text outside an entry is not a change.
func Changes(body string) ([]Change, error) {
	var out []Change
	kind := ""
	for _, line := range strings.Split(body, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "### "):
			k, ok := changeKinds[strings.TrimSpace(line[4:])]
			if !ok {
				return nil, fmt.Errorf("%s: %q is not a kind of change (Added, Changed, Deprecated, Removed, Fixed, Security)", ChangelogFile, line)
			}
			kind = k
		case strings.HasPrefix(line, "- ") && kind != "":
			out = append(out, Change{Kind: kind, Description: trimmed[2:]})
		case strings.HasPrefix(line, "  ") && trimmed != "" && len(out) > 0 && kind != "":
			out[len(out)-1].Description += " " + trimmed
		case trimmed == "":
		default:
			// A paragraph ends the kind's list.
			kind = ""
		}
	}
	return out, nil
}
