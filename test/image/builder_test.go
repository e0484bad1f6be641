package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/image"
)

// dockerfileLayout reads the final stage's COPY, USER, ENTRYPOINT, CMD and EXPOSE
// lines into an image.Layout.
func dockerfileLayout(t *testing.T, root string) image.Layout {
	t.Helper()
	var l image.Layout
	for _, in := range parseDockerfile(t, filepath.Join(root, "Dockerfile")) {
		if in.stage != 1 {
			continue
		}
		switch in.keyword {
		case "COPY":
			f := strings.Fields(in.args)
			require.Len(t, f, 3, "COPY --from=build SRC DEST: %s", in.args)
			src, ok := strings.CutPrefix(f[1], "/src/bin/")
			require.True(t, ok, "copied from make build's bin/: %s", in.args)
			l.Files = append(l.Files, image.File{Source: src, Path: f[2]})
		case "USER":
			l.User = in.args
		case "ENTRYPOINT":
			require.NoError(t, json.Unmarshal([]byte(in.args), &l.Entrypoint), "exec form")
		case "CMD":
			require.NoError(t, json.Unmarshal([]byte(in.args), &l.Cmd), "exec form")
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				l.ExposedPorts = append(l.ExposedPorts, p)
			}
		}
	}
	sort.Strings(l.ExposedPorts)
	return l
}

// elfMachine is the ELF machine of each architecture the image is built for.
var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// TestImageBuilderAgreesWithTheDockerfile runs `make image-tar` (the image built without
// Docker, as the release builds and pushes it) into a temporary folder and reads the
// archive back: an OCI image layout named with the chart's repository and appVersion,
// holding one index of linux/amd64 and linux/arm64, each image with the Dockerfile's
// files at the same paths, its user, entrypoint, command and ports, and binaries of its
// own architecture, byte for byte make build's. So the image that cannot be built here is
// held to the one that can.
func TestImageBuilderAgreesWithTheDockerfile(t *testing.T) {
	root := repoRoot(t)
	want := dockerfileLayout(t, root)
	require.NotEmpty(t, want.Files)
	assert.Equal(t, want, image.Default)
	chartVersion := appVersion(t, root)

	out := t.TempDir()
	cmd := exec.Command("make", "-C", root, "image-tar", "OUTPUT="+out)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "make image-tar: %s", b)
	archive := filepath.Join(out, "ha-injector-image.tar")

	// index.json and oci-layout at the archive's root, every blob under blobs/sha256.
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		names = append(names, hdr.Name)
		assert.True(t, hdr.Name == "index.json" || hdr.Name == "oci-layout" || strings.HasPrefix(hdr.Name, "blobs/"), hdr.Name)
		assert.True(t, hdr.ModTime.IsZero() || hdr.ModTime.Unix() == 0, "%s has no time stamp", hdr.Name)
	}
	assert.Contains(t, names, "index.json")
	assert.Contains(t, names, "oci-layout")

	idx, ref, err := image.ReadLayout(archive, t.TempDir())
	require.NoError(t, err)
	assert.Equal(t, "ghcr.io/ha-injector/ha-injector:"+chartVersion, ref, "named as the chart pulls it by default: its repository and appVersion")
	mt, err := idx.MediaType()
	require.NoError(t, err)
	assert.Equal(t, types.OCIImageIndex, mt)
	m, err := idx.IndexManifest()
	require.NoError(t, err)
	var platforms []string
	for _, d := range m.Manifests {
		require.NotNil(t, d.Platform)
		platforms = append(platforms, d.Platform.String())
		t.Run(d.Platform.String(), func(t *testing.T) {
			img, err := idx.Image(d.Digest)
			require.NoError(t, err)
			cfg, err := img.ConfigFile()
			require.NoError(t, err)
			assert.Equal(t, d.Platform.OS, cfg.OS)
			assert.Equal(t, d.Platform.Architecture, cfg.Architecture)
			assert.Equal(t, want.User, cfg.Config.User)
			assert.Equal(t, want.Entrypoint, cfg.Config.Entrypoint, "the Dockerfile's ENTRYPOINT")
			assert.Equal(t, want.Cmd, cfg.Config.Cmd)
			var ports []string
			for p := range cfg.Config.ExposedPorts {
				ports = append(ports, p)
			}
			sort.Strings(ports)
			assert.Equal(t, want.ExposedPorts, ports)

			entries, contents := layerFiles(t, img)
			bin := filepath.Join(out, "bin", image.PlatformDir(*d.Platform))
			for _, f := range want.Files {
				hdr := entries[f.Path]
				require.NotNil(t, hdr, "the image has %s", f.Path)
				assert.Equal(t, byte(tar.TypeReg), hdr.Typeflag)
				assert.Equal(t, int64(0o755), hdr.Mode, "%s is executable by every user", f.Path)
				data, err := os.ReadFile(filepath.Join(bin, f.Source))
				require.NoError(t, err)
				assert.True(t, bytes.Equal(data, contents[f.Path]), "%s is make build's %s", f.Path, f.Source)
				exe, err := elf.NewFile(bytes.NewReader(contents[f.Path]))
				require.NoError(t, err, "%s is an ELF binary", f.Path)
				assert.Equal(t, elfMachine[cfg.Architecture], exe.Machine, "%s is built for %s", f.Path, cfg.Architecture)
				for _, p := range exe.Progs {
					assert.NotEqual(t, elf.PT_INTERP, p.Type, "%s is static", f.Path)
				}
			}
			require.NotNil(t, entries["/tmp/"])
			assert.Equal(t, int64(0o1777), entries["/tmp/"].Mode)
			assert.Len(t, entries, len(want.Files)+1, "nothing else")
		})
	}
	assert.Equal(t, []string{"linux/amd64", "linux/arm64"}, platforms)

	// The binary of this machine's platform was stamped with the chart's version.
	version, err := exec.Command(filepath.Join(out, "bin", "linux_"+runtime.GOARCH, "ha-injector"), "--version").Output()
	require.NoError(t, err)
	assert.Contains(t, string(version), chartVersion)

	// Reproducible: the same binaries give the same index.
	again, err := image.BuildIndex(filepath.Join(out, "bin"), image.Default, image.Platforms)
	require.NoError(t, err)
	d1, err := idx.Digest()
	require.NoError(t, err)
	d2, err := again.Digest()
	require.NoError(t, err)
	assert.Equal(t, d1, d2, "the same binaries give the same image")
	second := filepath.Join(t.TempDir(), "image.tar")
	require.NoError(t, image.WriteLayout(second, ref, again))
	a, err := os.ReadFile(archive)
	require.NoError(t, err)
	b2, err := os.ReadFile(second)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(a, b2), "the same image gives the same archive")

	// Named as containerd and the kubelet spell it, Docker Hub's short names included.
	for ref, want := range map[string]string{
		"docker.io/library/ha-injector:node-test": "docker.io/library/ha-injector:node-test",
		"ha-injector:dev":                         "docker.io/library/ha-injector:dev",
		"registry.example.com/ha-injector:0.1.0":  "registry.example.com/ha-injector:0.1.0",
	} {
		require.NoError(t, image.WriteLayout(second, ref, again))
		_, named, err := image.ReadLayout(second, t.TempDir())
		require.NoError(t, err)
		assert.Equal(t, want, named, ref)
	}

	_, err = image.BuildIndex(t.TempDir(), image.Default, image.Platforms)
	assert.ErrorContains(t, err, "the image's /ha-injector", "a missing binary is named")
	_, err = image.BuildIndex(filepath.Join(out, "bin"), image.Default, nil)
	assert.Error(t, err, "no platform")
	assert.Error(t, image.WriteLayout(second, "Not A Valid:Name:", again))
}

// layerFiles reads the image's only layer: each entry's header and contents by path.
func layerFiles(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	entries := map[string]*tar.Header{}
	contents := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		entries["/"+hdr.Name] = hdr
		contents["/"+hdr.Name], err = io.ReadAll(tr)
		require.NoError(t, err)
	}
	return entries, contents
}

// appVersion is the chart's appVersion: the version make stamps and tags by default.
func appVersion(t *testing.T, root string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "charts", "ha-injector", "Chart.yaml"))
	require.NoError(t, err)
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	require.NoError(t, yaml.Unmarshal(data, &chart))
	require.NotEmpty(t, chart.AppVersion)
	return chart.AppVersion
}
