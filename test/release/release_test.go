// Package release_test runs `make release-dry-run` and checks what a release would
// publish: the files' names, the image and the chart that pins its digest, the CLI
// archive and its checksum, and the krew manifest, installed with krew itself so that
// `kubectl ha-injector` runs the archived binary. It also holds the repository to its
// versioning rules (docs/versioning.md).
package release_test

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/image"
	"github.com/ha-injector/ha-injector/internal/release"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
)

// krewVersion is the krew the manifest is installed with (built from its Go module).
const krewVersion = "v0.4.3"

var root = filepath.Join("..", "..")

// TestReleaseDryRun runs `make release-dry-run` for this machine's platform only (the
// image and one CLI archive: the other five cross-compilations would cost minutes of a
// 2-core machine on a cold build cache; TestReleasePlatforms checks the full list's names,
// and `make release-dry-run` builds it) and checks every artifact.
func TestReleaseDryRun(t *testing.T) {
	md, err := release.ChartMetadata(root)
	require.NoError(t, err)
	version := md.AppVersion
	platform := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	out := t.TempDir()
	cmd := exec.Command("make", "-C", root, "release-dry-run", "OUTPUT="+out,
		"IMAGE_PLATFORMS="+platform.String(), "RELEASE_PLATFORMS="+platform.String())
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "make release-dry-run: %s", b)
	dir := filepath.Join(out, "release")

	// The names, and nothing else.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Equal(t, release.Artifacts(version, []v1.Platform{platform}), names)

	// The checksums file lists every other file, with its SHA-256, in sha256sum's format.
	sums := readChecksums(t, filepath.Join(dir, release.ChecksumsName(version)))
	var listed []string
	for name, sum := range sums {
		listed = append(listed, name)
		assert.Equal(t, sum, sha256File(t, filepath.Join(dir, name)), name)
	}
	sort.Strings(listed)
	var others []string
	for _, n := range names {
		if n != release.ChecksumsName(version) {
			others = append(others, n)
		}
	}
	assert.Equal(t, others, listed)

	// The image: an OCI layout named as the chart pulls it, its platform's binaries.
	idx, ref, err := image.ReadLayout(filepath.Join(dir, release.ImageArchiveName(version)), t.TempDir())
	require.NoError(t, err)
	assert.Equal(t, release.ImageRepository+":"+version, ref)
	digest, err := idx.Digest()
	require.NoError(t, err)
	m, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, m.Manifests, 1)
	assert.Equal(t, platform.String(), m.Manifests[0].Platform.String())

	// The chart: version and appVersion, the image pinned to the digest built, in what it
	// renders (the webhook, the CRD hook Job, the ha-sysctl image serve injects), and
	// Artifact Hub's metadata.
	chrt, err := loader.Load(filepath.Join(dir, release.ChartArchiveName(version)))
	require.NoError(t, err)
	assert.Equal(t, version, chrt.Metadata.Version)
	assert.Equal(t, version, chrt.Metadata.AppVersion)
	pinned := release.ImageRepository + "@" + digest.String()
	r, err := chartrender.Render(chrt, nil, chartrender.Options{})
	require.NoError(t, err)
	deploy := &appsv1.Deployment{}
	obj := r.Get("Deployment", "ha-injector")
	require.NotNil(t, obj)
	require.NoError(t, k8sruntime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, deploy))
	webhook := deploy.Spec.Template.Spec.Containers[0]
	assert.Equal(t, pinned, webhook.Image, "the webhook runs the image the release built")
	assert.Contains(t, webhook.Args, "--sysctl-image="+pinned, "and injects it as ha-sysctl")
	var job batchv1.Job
	for _, h := range r.Hooks {
		if h.Object.GetKind() == "Job" {
			require.NoError(t, yaml.Unmarshal(h.YAML, &job))
		}
	}
	require.NotEmpty(t, job.Spec.Template.Spec.Containers)
	assert.Equal(t, pinned, job.Spec.Template.Spec.Containers[0].Image, "the CRD hook too")
	var images []struct{ Name, Image string }
	require.NoError(t, yaml.Unmarshal([]byte(chrt.Metadata.Annotations["artifacthub.io/images"]), &images))
	assert.Equal(t, []struct{ Name, Image string }{{"ha-injector", release.ImageRepository + ":" + version}}, images,
		"Artifact Hub names the image the chart installs, at its appVersion")
	assert.Equal(t, "Apache-2.0", chrt.Metadata.Annotations["artifacthub.io/license"])
	var changes []release.Change
	require.NoError(t, yaml.Unmarshal([]byte(chrt.Metadata.Annotations[release.ChangesAnnotation]), &changes))
	assert.NotEmpty(t, changes, "the CHANGELOG's changes")
	var crds []struct{ Kind, Version, Name string }
	require.NoError(t, yaml.Unmarshal([]byte(chrt.Metadata.Annotations["artifacthub.io/crds"]), &crds))
	require.Len(t, chrt.CRDObjects(), 1)
	var crd struct {
		Metadata struct{ Name string }
		Spec     struct {
			Names    struct{ Kind string }
			Versions []struct{ Name string }
		}
	}
	require.NoError(t, yaml.Unmarshal(chrt.CRDObjects()[0].File.Data, &crd))
	require.Len(t, crds, 1)
	assert.Equal(t, crd.Metadata.Name, crds[0].Name)
	assert.Equal(t, crd.Spec.Names.Kind, crds[0].Kind)
	assert.Equal(t, crd.Spec.Versions[0].Name, crds[0].Version)

	// The CLI archive: the binary of its platform, the licence and the README.
	archive := filepath.Join(dir, release.ArchiveName(version, platform))
	files := untarGz(t, archive, t.TempDir())
	assert.Equal(t, []string{"LICENSE", "README.md", "ha-injector"}, sortedKeys(files))
	exe, err := elf.Open(files["ha-injector"])
	require.NoError(t, err)
	assert.Equal(t, map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH], exe.Machine)
	exe.Close()

	// The krew manifest, installed by krew from the archive: `kubectl ha-injector` runs it.
	var plugin release.KrewPlugin
	manifest := filepath.Join(dir, release.KrewManifestName)
	data, err := os.ReadFile(manifest)
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(data, &plugin))
	require.Len(t, plugin.Spec.Platforms, 1)
	assert.Equal(t, "v"+version, plugin.Spec.Version)
	assert.Equal(t, sums[filepath.Base(archive)], plugin.Spec.Platforms[0].Sha256)
	assert.Equal(t, "https://github.com/ha-injector/ha-injector/releases/download/v"+version+"/"+filepath.Base(archive), plugin.Spec.Platforms[0].URI)
	kubectl, err := exec.LookPath("kubectl")
	require.NoError(t, err, "the plugin is run through kubectl, as a user would")
	krew := buildKrew(t)
	krewRoot := t.TempDir()
	env := append(os.Environ(), "KREW_ROOT="+krewRoot, "KREW_NO_UPGRADE_CHECK=1", "PATH="+filepath.Join(krewRoot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	install := exec.Command(krew, "install", "--manifest="+manifest, "--archive="+archive)
	install.Env = env
	b, err = install.CombinedOutput()
	require.NoError(t, err, "krew install: %s", b)
	plug := exec.Command(kubectl, "ha-injector", "version")
	plug.Env = env
	b, err = plug.CombinedOutput()
	require.NoError(t, err, "kubectl ha-injector version: %s", b)
	assert.Regexp(t, `^ha-injector `+regexp.QuoteMeta(version)+`\n`, string(b))
	plug = exec.Command(kubectl, "ha-injector", "preview", "-f", filepath.Join(root, "examples", "web-server.yaml"))
	plug.Env = env
	b, err = plug.CombinedOutput()
	require.NoError(t, err, "kubectl ha-injector preview: %s", b)
	assert.Contains(t, string(b), "ha-injector.io/status")
}

// TestReleasePlatforms: the Makefile's RELEASE_PLATFORMS, which the release workflow
// builds, are the platforms the release names: Linux, macOS and Windows on amd64 and arm64.
func TestReleasePlatforms(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "Makefile"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^RELEASE_PLATFORMS \?= (.*)$`).FindSubmatch(data)
	require.NotNil(t, m)
	var want []string
	for _, p := range release.CLIPlatforms {
		want = append(want, p.String())
	}
	assert.Equal(t, want, strings.Fields(string(m[1])))
	assert.Equal(t, []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64", "windows/arm64"}, want)
}

// TestChartVersion holds this repository to the rule of docs/versioning.md: a chart that
// changed since the last release tag has a new version. It needs the clone's tags (the
// CHANGELOG says which releases exist); with no release yet it says so.
func TestChartVersion(t *testing.T) {
	what, err := release.CheckChartVersion(root)
	require.NoError(t, err)
	t.Log(what)
}

// buildKrew builds krew from its Go module into a temporary folder (the build cache
// keeps its packages: later builds only link).
func buildKrew(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "install", "sigs.k8s.io/krew/cmd/krew@"+krewVersion)
	cmd.Dir = bin
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go install krew: %s", out)
	return filepath.Join(bin, "krew")
}

func readChecksums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sums := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		sum, name, ok := strings.Cut(s.Text(), "  ")
		require.True(t, ok, "sha256sum's format: %q", s.Text())
		sums[name] = sum
	}
	require.NoError(t, s.Err())
	return sums
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// untarGz extracts a tar.gz into dir and returns each file's path by its name.
func untarGz(t *testing.T, path, dir string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	require.NoError(t, err)
	tr := tar.NewReader(gz)
	files := map[string]string{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.Equal(t, byte(tar.TypeReg), hdr.Typeflag, hdr.Name)
		p := filepath.Join(dir, hdr.Name)
		out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, os.FileMode(hdr.Mode))
		require.NoError(t, err)
		_, err = io.Copy(out, tr)
		require.NoError(t, err)
		require.NoError(t, out.Close())
		files[hdr.Name] = p
	}
	return files
}

func sortedKeys(m map[string]string) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestDocsVersionStrings: the documentation writes the version one way, the chart's
// appVersion without a v, wherever it names an image tag, a chart version, a release's
// files or the checkout of a release (whose git tag alone has the v).
func TestDocsVersionStrings(t *testing.T) {
	md, err := release.ChartMetadata(root)
	require.NoError(t, err)
	v := md.AppVersion
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	require.NoError(t, err)
	docs = append(docs, filepath.Join(root, "README.md"), filepath.Join(root, "SECURITY.md"), filepath.Join(root, "CONTRIBUTING.md"))
	// Placeholders, and "dev": what an unstamped `go run` build calls itself in the output
	// the docs quote.
	placeholder := map[string]bool{"<appVersion>": true, "<version>": true, "X.Y.Z": true, "dev": true}
	rules := []struct {
		what string
		re   *regexp.Regexp
	}{
		{"an image tag", regexp.MustCompile(`(?:ghcr\.io/ha-injector|registry\.example\.com)/ha-injector:([^\s"'` + "`" + `,)]+)`)},
		{"a chart version", regexp.MustCompile(`--version ([0-9v][^\s` + "`" + `]*)`)},
		{"a release's download folder", regexp.MustCompile(`releases/download/v([^/\s]+)/`)},
		{"a release's file", regexp.MustCompile(`ha-injector_([0-9v][^_\s]*)_`)},
		{"a release's checkout", regexp.MustCompile(`git checkout v(\S+)`)},
		{"an image.tag value", regexp.MustCompile(`image\.tag=([^\s` + "`" + `]+)`)},
	}
	found := 0
	for _, doc := range docs {
		data, err := os.ReadFile(doc)
		require.NoError(t, err)
		for _, r := range rules {
			for _, m := range r.re.FindAllStringSubmatch(string(data), -1) {
				found++
				tag := strings.TrimSuffix(m[1], ".")
				assert.True(t, tag == v || placeholder[tag], "%s: %s %q is not %s", filepath.Base(doc), r.what, m[0], v)
			}
		}
	}
	assert.Greater(t, found, 10, "the rules find the versions the docs give")
}
