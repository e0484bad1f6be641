// Package image builds ha-injector's container image without a container engine:
// the image the Dockerfile describes (its final stage), from the binaries `make build`
// writes, with go-containerregistry. The Dockerfile cannot be built where there is no
// Docker engine or registry; this image can, and test/image holds the two to the same
// paths, user, entrypoint, command and ports.
//
// The base is not distroless: the image holds the two static binaries and an empty
// /tmp (mode 1777), which is all they read or write at run time; distroless adds
// /etc/passwd, CA certificates and time zones, which neither binary uses (in a
// cluster the API server's CA comes from the ServiceAccount's files).
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is a file of the image: Source is its name in the binaries' folder, Path its
// path in the image.
type File struct {
	Source string
	Path   string
}

// Layout is what the Dockerfile's final stage puts in the image and how it runs.
type Layout struct {
	Files        []File
	User         string
	Entrypoint   []string
	Cmd          []string
	ExposedPorts []string // "9443/tcp"
}

// Default is ha-injector's image: the Dockerfile's COPY, USER, ENTRYPOINT, CMD and
// EXPOSE lines (test/image compares them).
var Default = Layout{
	Files: []File{
		{Source: "ha-injector", Path: "/ha-injector"},
		// The applier of the injected ha-sysctl init container.
		{Source: "ha-sysctl", Path: "/ha-sysctl"},
	},
	User:         "65532:65532",
	Entrypoint:   []string{"/ha-injector"},
	Cmd:          []string{"serve"},
	ExposedPorts: []string{"8080/tcp", "8081/tcp", "9443/tcp"},
}

// Build returns the image of layout with the binaries found in binDir. It is
// reproducible: the same binaries give the same digest (every time stamp is zero).
func Build(binDir string, layout Layout) (v1.Image, error) {
	layer, err := filesLayer(binDir, layout.Files)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.User = layout.User
	cfg.Config.Entrypoint = layout.Entrypoint
	cfg.Config.Cmd = layout.Cmd
	cfg.Config.ExposedPorts = map[string]struct{}{}
	for _, p := range layout.ExposedPorts {
		cfg.Config.ExposedPorts[p] = struct{}{}
	}
	return mutate.ConfigFile(img, cfg)
}

// WriteTarball writes img as a `docker save` archive tagged ref, the format
// `ctr images import` and `docker load` read.
func WriteTarball(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}

// filesLayer is one layer with /tmp and each file, owned by root, executable by all.
func filesLayer(binDir string, files []File) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		data, err := os.ReadFile(filepath.Join(binDir, f.Source))
		if err != nil {
			return nil, fmt.Errorf("the image's %s: %w", f.Path, err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.Path[1:], Mode: 0o755, Size: int64(len(data)), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer)), nil
	})
}
