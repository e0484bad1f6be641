// Package release builds the artifacts of an ha-injector release from a checkout, pushing
// nothing: the image (an OCI image layout, built by internal/image from `make build`'s
// binaries), the chart packaged with the Helm SDK and pinned to that image's digest, the
// ha-injector CLI archives, a krew manifest and a checksums file. `make release-dry-run`
// and the release workflow run it through hack/release; the workflow then pushes what it
// wrote. It also holds the rules a release is checked against: one version string
// (the chart's appVersion), the CHANGELOG's section for it, and a chart version that
// changes whenever the chart does (docs/versioning.md).
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/image"
)

// Project facts the artifacts name.
const (
	// Repository is where the source lives and releases are published.
	Repository = "https://github.com/ha-injector/ha-injector"
	// ImageRepository is the registry repository of the image, the one the chart names.
	ImageRepository = "ghcr.io/ha-injector/ha-injector"
	// ChartRepository is the OCI repository the chart is pushed to:
	// helm install ha-injector oci://ghcr.io/ha-injector/charts/ha-injector.
	ChartRepository = "oci://ghcr.io/ha-injector/charts"
	// Name is the CLI's and the krew plugin's name.
	Name = "ha-injector"
	// ChartDir is the chart's folder relative to the repository root (the tests'
	// chartrender names the same folder).
	ChartDir = "charts/ha-injector"
)

// CLIPlatforms are the platforms of the released CLI archives, in order.
var CLIPlatforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"},
	{OS: "darwin", Architecture: "amd64"}, {OS: "darwin", Architecture: "arm64"},
	{OS: "windows", Architecture: "amd64"}, {OS: "windows", Architecture: "arm64"},
}

// ArchiveName is the CLI archive of a platform, with Go's lowercase GOOS and GOARCH:
// ha-injector_0.1.0_darwin_arm64.tar.gz.
func ArchiveName(version string, p v1.Platform) string {
	return fmt.Sprintf("%s_%s_%s_%s.tar.gz", Name, version, p.OS, p.Architecture)
}

// BinaryName is the CLI's file name on a platform.
func BinaryName(p v1.Platform) string {
	if p.OS == "windows" {
		return Name + ".exe"
	}
	return Name
}

// ChartArchiveName is the packaged chart, as `helm package` names it.
func ChartArchiveName(version string) string { return fmt.Sprintf("%s-%s.tgz", Name, version) }

// ImageArchiveName is the image's OCI layout archive among the release's files.
func ImageArchiveName(version string) string { return fmt.Sprintf("%s_%s_image.tar", Name, version) }

// ChecksumsName is the release's SHA-256 sums, in sha256sum's format.
func ChecksumsName(version string) string { return fmt.Sprintf("%s_%s_checksums.txt", Name, version) }

// KrewManifestName is the krew plugin manifest (krew requires <plugin name>.yaml).
const KrewManifestName = Name + ".yaml"

// Artifacts are the names of every file a release of version with these CLI platforms
// writes, sorted.
func Artifacts(version string, platforms []v1.Platform) []string {
	names := []string{ChartArchiveName(version), ImageArchiveName(version), ChecksumsName(version), KrewManifestName}
	for _, p := range platforms {
		names = append(names, ArchiveName(version, p))
	}
	sort.Strings(names)
	return names
}

// Options say what to build and where.
type Options struct {
	// Root is the repository's root.
	Root string
	// Version is the release's version (the chart's appVersion, without a v).
	Version string
	// ImageArchive is `make image-tar`'s OCI layout archive.
	ImageArchive string
	// BinRoot is where make build writes each CLI platform's binary (BinRoot/linux_amd64).
	BinRoot string
	// Platforms are the CLI archives' platforms.
	Platforms []v1.Platform
	// Out is the folder the artifacts are written to (emptied first).
	Out string
	// Log receives what is being done; nil: discarded.
	Log io.Writer
}

// Result is what Build wrote.
type Result struct {
	// ImageDigest is the digest of the image index the chart pins.
	ImageDigest v1.Hash
	// Files are the artifacts' paths, sorted by name.
	Files []string
}

// Build writes every artifact of a release into opts.Out.
func Build(opts Options) (*Result, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if err := CheckVersion(opts.Root, opts.Version); err != nil {
		return nil, err
	}
	if len(opts.Platforms) == 0 {
		return nil, fmt.Errorf("no CLI platform")
	}
	if err := os.RemoveAll(opts.Out); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}

	// The image: the archive make image-tar wrote, named as the chart pulls it.
	tmp, err := os.MkdirTemp("", "ha-injector-release-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	idx, ref, err := image.ReadLayout(opts.ImageArchive, tmp)
	if err != nil {
		return nil, fmt.Errorf("the image archive: %w", err)
	}
	if want := ImageRepository + ":" + opts.Version; ref != want {
		return nil, fmt.Errorf("the image archive %s holds %s, not %s (make image-tar VERSION=%s)", opts.ImageArchive, ref, want, opts.Version)
	}
	digest, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	if err := copyFile(opts.ImageArchive, filepath.Join(opts.Out, ImageArchiveName(opts.Version))); err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Log, "image %s@%s\n", ref, digest)

	changelog, err := os.ReadFile(filepath.Join(opts.Root, ChangelogFile))
	if err != nil {
		return nil, err
	}
	notes, err := Notes(changelog, opts.Version)
	if err != nil {
		// A dry run before the release's section is dated: the Unreleased one.
		if notes, err = Notes(changelog, "Unreleased"); err != nil {
			return nil, err
		}
		fmt.Fprintf(opts.Log, "%s has no section for %s yet: the chart's changes are the Unreleased ones\n", ChangelogFile, opts.Version)
	}
	changes, err := Changes(notes)
	if err != nil {
		return nil, err
	}
	chartPath, err := PackageChart(opts.Root, opts.Out, digest, changes)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Log, "chart %s (image.digest %s)\n", chartPath, digest)

	sums := map[string]string{}
	for _, p := range opts.Platforms {
		binDir := filepath.Join(opts.BinRoot, image.PlatformDir(p))
		if err := makeBuild(opts, p, binDir); err != nil {
			return nil, err
		}
		archive := filepath.Join(opts.Out, ArchiveName(opts.Version, p))
		if err := writeArchive(archive, []archiveFile{
			{name: BinaryName(p), path: filepath.Join(binDir, BinaryName(p)), mode: 0o755},
			{name: "LICENSE", path: filepath.Join(opts.Root, "LICENSE"), mode: 0o644},
			{name: "README.md", path: filepath.Join(opts.Root, "README.md"), mode: 0o644},
		}); err != nil {
			return nil, err
		}
		if sums[p.String()], err = sha256File(archive); err != nil {
			return nil, err
		}
		fmt.Fprintf(opts.Log, "cli %s\n", archive)
	}

	krew, err := KrewManifest(opts.Version, opts.Platforms, sums)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(opts.Out, KrewManifestName), krew, 0o644); err != nil {
		return nil, err
	}
	if err := writeChecksums(opts.Out, ChecksumsName(opts.Version)); err != nil {
		return nil, err
	}
	res := &Result{ImageDigest: digest}
	for _, n := range Artifacts(opts.Version, opts.Platforms) {
		res.Files = append(res.Files, filepath.Join(opts.Out, n))
	}
	return res, nil
}

// makeBuild cross-compiles the CLI for p with make build, the build of the image and of
// every test.
func makeBuild(opts Options, p v1.Platform, binDir string) error {
	cmd := exec.Command("make", "--no-print-directory", "-C", opts.Root, "build",
		"GOOS="+p.OS, "GOARCH="+p.Architecture, "CMDS="+Name, "BIN_DIR="+binDir, "VERSION="+opts.Version)
	cmd.Stdout, cmd.Stderr = opts.Log, opts.Log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("make build for %s: %w", p.String(), err)
	}
	return nil
}

// ChangesAnnotation is Artifact Hub's annotation of what changed in a chart version.
const ChangesAnnotation = "artifacthub.io/changes"

// PackageChart packages the chart with the Helm SDK into out, as `helm package` does,
// with image.digest set to digest in its values.yaml (the installed image is the one the
// release built and tested, whatever its tag later points to) and the CHANGELOG's
// changes in its artifacthub.io/changes annotation.
func PackageChart(root, out string, digest v1.Hash, changes []Change) (string, error) {
	chrt, err := loader.Load(filepath.Join(root, ChartDir))
	if err != nil {
		return "", err
	}
	if err := PinDigest(chrt, digest); err != nil {
		return "", err
	}
	if len(changes) == 0 {
		return "", fmt.Errorf("no change to announce: the CHANGELOG section has no entry")
	}
	annotation, err := yaml.Marshal(changes)
	if err != nil {
		return "", err
	}
	if chrt.Metadata.Annotations == nil {
		chrt.Metadata.Annotations = map[string]string{}
	}
	chrt.Metadata.Annotations[ChangesAnnotation] = string(annotation)
	return chartutil.Save(chrt, out)
}

// imageBlock is values.yaml's image block: "image:" and its indented lines.
var imageBlock = regexp.MustCompile(`(?m)^image:\n(?:(?:[ #].*)?\n)*`)

// imageDigestLine is the block's digest line, empty as the source keeps it.
var imageDigestLine = regexp.MustCompile(`(?m)^  digest: ""$`)

// PinDigest sets image.digest to digest in chrt's values.yaml, its comments kept, and
// checks the result reads back as that digest.
func PinDigest(chrt *chartv2.Chart, digest v1.Hash) error {
	for _, f := range chrt.Raw {
		if f.Name != chartutil.ValuesfileName {
			continue
		}
		block := imageBlock.FindIndex(f.Data)
		if block == nil {
			return fmt.Errorf("values.yaml has no image block")
		}
		loc := imageDigestLine.FindIndex(f.Data[block[0]:block[1]])
		if loc == nil {
			return fmt.Errorf("values.yaml has no empty image.digest line to pin")
		}
		loc[0], loc[1] = loc[0]+block[0], loc[1]+block[0]
		pinned := append([]byte(nil), f.Data[:loc[0]]...)
		pinned = append(pinned, fmt.Sprintf("  digest: %q", digest.String())...)
		pinned = append(pinned, f.Data[loc[1]:]...)
		var values map[string]any
		if err := yaml.Unmarshal(pinned, &values); err != nil {
			return fmt.Errorf("values.yaml with the digest pinned: %w", err)
		}
		img, _ := values["image"].(map[string]any)
		if img == nil || img["digest"] != digest.String() {
			return fmt.Errorf("pinning the digest in values.yaml did not set image.digest")
		}
		f.Data = pinned
		chrt.Values = values
		return nil
	}
	return fmt.Errorf("the chart has no values.yaml")
}

// KrewPlugin is krew's plugin manifest (krew.googlecontainertools.github.com/v1alpha2,
// the fields of sigs.k8s.io/krew/pkg/index, whose module cannot be required here: it
// requires an ancient client-go).
type KrewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec KrewSpec `json:"spec"`
}

// KrewSpec is a krew plugin's spec.
type KrewSpec struct {
	Version          string         `json:"version"`
	Homepage         string         `json:"homepage"`
	ShortDescription string         `json:"shortDescription"`
	Description      string         `json:"description"`
	Platforms        []KrewPlatform `json:"platforms"`
}

// KrewPlatform is one archive of a krew plugin.
type KrewPlatform struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	URI    string     `json:"uri"`
	Sha256 string     `json:"sha256"`
	Files  []KrewFile `json:"files"`
	Bin    string     `json:"bin"`
}

// KrewFile is a file krew copies from the archive into the plugin's folder.
type KrewFile struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// DownloadURL is where the release workflow publishes a release file.
func DownloadURL(version, file string) string {
	return fmt.Sprintf("%s/releases/download/v%s/%s", Repository, version, file)
}

// KrewManifest is the krew manifest of the CLI archives (their SHA-256 in sums, by
// platform as OS/ARCH), so
// `kubectl krew install --manifest ha-injector.yaml` makes `kubectl ha-injector` run
// the CLI.
func KrewManifest(version string, platforms []v1.Platform, sums map[string]string) ([]byte, error) {
	var m KrewPlugin
	m.APIVersion, m.Kind = "krew.googlecontainertools.github.com/v1alpha2", "Plugin"
	m.Metadata.Name = Name
	m.Spec = KrewSpec{
		// krew wants a v-prefixed semantic version.
		Version:          "v" + version,
		Homepage:         Repository,
		ShortDescription: "Preview and check ha-injector's node-loss settings",
		Description: "ha-injector is a mutating admission webhook that makes workloads survive the loss of a node\n" +
			"(pod anti-affinity, short not-ready/unreachable tolerations, TCP keepalive sysctls).\n" +
			"`kubectl ha-injector preview -f FILE` shows what it would inject into manifests, offline or\n" +
			"against the cluster (--cluster); `kubectl ha-injector doctor` checks an installation and\n" +
			"says why a pod was not injected.\n",
	}
	for _, p := range platforms {
		sum := sums[p.String()]
		if sum == "" {
			return nil, fmt.Errorf("no checksum for %s", p.String())
		}
		kp := KrewPlatform{URI: DownloadURL(version, ArchiveName(version, p)), Sha256: sum, Bin: BinaryName(p),
			Files: []KrewFile{{From: BinaryName(p), To: "."}, {From: "LICENSE", To: "."}}}
		kp.Selector.MatchLabels = map[string]string{"os": p.OS, "arch": p.Architecture}
		m.Spec.Platforms = append(m.Spec.Platforms, kp)
	}
	return yaml.Marshal(m)
}

type archiveFile struct {
	name string
	path string
	mode int64
}

// writeArchive writes a tar.gz of files at its root, with no time stamps or owners.
func writeArchive(path string, files []archiveFile) error {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(data)), Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// writeChecksums writes the SHA-256 of every other file of dir into dir/name, in
// sha256sum's format (sha256sum -c reads it).
func writeChecksums(dir, name string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, e := range entries {
		if e.IsDir() || e.Name() == name {
			continue
		}
		sum, err := sha256File(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, e.Name())
	}
	return os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644)
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
