package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// TestImageBuilderAgreesWithTheDockerfile: the image built without Docker (for the
// real node, `make image-tar`) has the Dockerfile's files at the same paths, its user,
// entrypoint, command and ports, so the image that cannot be built here is held to the
// one that can.
func TestImageBuilderAgreesWithTheDockerfile(t *testing.T) {
	root := repoRoot(t)
	want := dockerfileLayout(t, root)
	require.NotEmpty(t, want.Files)
	assert.Equal(t, want, image.Default)

	bin := t.TempDir()
	cmd := exec.Command("make", "-C", root, "build", "BIN_DIR="+bin, "VERSION=image-test")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make build: %s", out)

	img, err := image.Build(bin, image.Default)
	require.NoError(t, err)
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "linux", cfg.OS)
	assert.Equal(t, want.User, cfg.Config.User)
	assert.Equal(t, want.Entrypoint, cfg.Config.Entrypoint)
	assert.Equal(t, want.Cmd, cfg.Config.Cmd)
	var ports []string
	for p := range cfg.Config.ExposedPorts {
		ports = append(ports, p)
	}
	sort.Strings(ports)
	assert.Equal(t, want.ExposedPorts, ports)

	// The layer holds each binary, byte for byte, where the Dockerfile copies it,
	// executable by the image's non-root user, and a writable /tmp.
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
	for _, f := range want.Files {
		hdr := entries[f.Path]
		require.NotNil(t, hdr, "the image has %s", f.Path)
		assert.Equal(t, byte(tar.TypeReg), hdr.Typeflag)
		assert.Equal(t, int64(0o755), hdr.Mode, "%s is executable by every user", f.Path)
		data, err := os.ReadFile(filepath.Join(bin, f.Source))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(data, contents[f.Path]), "%s is make build's %s", f.Path, f.Source)
	}
	require.NotNil(t, entries["/tmp/"])
	assert.Equal(t, int64(0o1777), entries["/tmp/"].Mode)
	assert.Len(t, entries, len(want.Files)+1, "nothing else")

	// Reproducible, and the archive loads back as the same image.
	again, err := image.Build(bin, image.Default)
	require.NoError(t, err)
	d1, err := img.Digest()
	require.NoError(t, err)
	d2, err := again.Digest()
	require.NoError(t, err)
	assert.Equal(t, d1, d2, "the same binaries give the same image")
	archive := filepath.Join(t.TempDir(), "image.tar")
	require.NoError(t, image.WriteTarball(archive, "ha-injector:image-test", img))
	loaded, err := tarball.ImageFromPath(archive, nil)
	require.NoError(t, err)
	d3, err := loaded.Digest()
	require.NoError(t, err)
	assert.Equal(t, d1, d3)

	_, err = image.Build(t.TempDir(), image.Default)
	assert.ErrorContains(t, err, "the image's /ha-injector", "a missing binary is named")
	assert.Error(t, image.WriteTarball(archive, "Not A Valid:Name:", img))
}
