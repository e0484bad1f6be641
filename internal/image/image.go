// Package image builds ha-injector's container image without a container engine:
// the image the Dockerfile describes (its final stage), from the binaries `make build`
// writes for each platform, with go-containerregistry, as one OCI index of linux/amd64
// and linux/arm64. The Dockerfile cannot be built where there is no Docker engine or
// registry; this image can, and test/image holds the two to the same paths, user,
// entrypoint, command and ports. `make image-tar`, `make release-dry-run`, the release
// workflow and the real-node test all build it here.
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
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
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

// Platforms are the platforms of the published image, in the order of its index.
var Platforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
}

// PlatformDir is the folder, under a binaries' root, that holds one platform's
// binaries: linux_amd64, as `make image-tar` writes them.
func PlatformDir(p v1.Platform) string { return p.OS + "_" + p.Architecture }

// Build returns the image of layout for platform with the binaries found in binDir
// (built for that platform). It is reproducible: the same binaries give the same digest
// (every time stamp is zero). Its media types are OCI's.
func Build(binDir string, layout Layout, platform v1.Platform) (v1.Image, error) {
	if platform.OS == "" || platform.Architecture == "" {
		return nil, fmt.Errorf("the image's platform needs an OS and an architecture, not %q", platform.String())
	}
	layer, err := filesLayer(binDir, layout.Files)
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = platform.OS, platform.Architecture, platform.Variant
	cfg.Config.User = layout.User
	cfg.Config.Entrypoint = layout.Entrypoint
	cfg.Config.Cmd = layout.Cmd
	cfg.Config.ExposedPorts = map[string]struct{}{}
	for _, p := range layout.ExposedPorts {
		cfg.Config.ExposedPorts[p] = struct{}{}
	}
	return mutate.ConfigFile(img, cfg)
}

// BuildIndex builds layout for each platform, from the binaries in
// binRoot/PlatformDir(platform), into one OCI image index: what a registry serves
// under one tag, each node pulling its own architecture's image.
func BuildIndex(binRoot string, layout Layout, platforms []v1.Platform) (v1.ImageIndex, error) {
	if len(platforms) == 0 {
		return nil, fmt.Errorf("an image index needs at least one platform")
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := Build(filepath.Join(binRoot, PlatformDir(p)), layout, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.String(), err)
		}
		platform := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &platform}})
	}
	return idx, nil
}

// Index is an OCI image index of images, each under the platform of its config.
func Index(images ...v1.Image) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, img := range images {
		cfg, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		platform := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &platform}})
	}
	return idx, nil
}

// The annotations of the OCI layout's index.json that name the image it holds.
const (
	// AnnotationRefName is the OCI image layout's name of a reference (the tag).
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationContainerdName is the full name `ctr images import` gives the image.
	AnnotationContainerdName = "io.containerd.image.name"
)

// WriteLayout writes idx as an OCI image layout in a tar archive (oci-layout and
// index.json at its root, every blob under blobs/sha256/), the index named ref in
// index.json: the tag as the OCI annotation, the full name as containerd's, so
// `ctr -n k8s.io images import` stores it under that name with nothing else to say.
// The archive is reproducible: entries in a fixed order, no time stamps.
func WriteLayout(path, ref string, idx v1.ImageIndex) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	dir, err := os.MkdirTemp("", "ha-injector-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	top := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add: idx,
		Descriptor: v1.Descriptor{Annotations: map[string]string{
			AnnotationRefName:        tag.TagStr(),
			AnnotationContainerdName: FullName(tag),
		}},
	})
	if _, err := layout.Write(dir, top); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return tarDir(dir, path)
}

// FullName is the full name of an image as containerd and the kubelet spell it:
// Docker Hub is docker.io (go-containerregistry says index.docker.io), its official
// images are under library/: "ha-injector:dev" is docker.io/library/ha-injector:dev.
func FullName(tag name.Tag) string {
	registry := tag.Context().RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	return registry + "/" + tag.Context().RepositoryStr() + ":" + tag.TagStr()
}

// ReadLayout extracts an archive WriteLayout wrote into dir and returns the image index
// it holds (read from dir, which must outlive it) and the name index.json gives it.
func ReadLayout(path, dir string) (v1.ImageIndex, string, error) {
	if err := untar(path, dir); err != nil {
		return nil, "", err
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, "", fmt.Errorf("%s: not an OCI image layout: %w", path, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, "", err
	}
	m, err := top.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	if len(m.Manifests) != 1 || m.Manifests[0].MediaType != types.OCIImageIndex {
		return nil, "", fmt.Errorf("%s: index.json holds %d descriptors, not one image index", path, len(m.Manifests))
	}
	idx, err := top.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		return nil, "", err
	}
	return idx, m.Manifests[0].Annotations[AnnotationContainerdName], nil
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
	}, tarball.WithMediaType(types.OCILayer))
}

// tarDir writes the files under dir into a tar archive at path: sorted, with no time
// stamps or owners, so the same layout gives the same archive.
func tarDir(dir, path string) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, p := range names {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Format: tar.FormatPAX}
		if info.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, in)
		in.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// untar extracts the regular files and folders of the archive at path into dir.
func untar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		name := filepath.Clean(filepath.FromSlash(hdr.Name))
		if !filepath.IsLocal(name) {
			return fmt.Errorf("%s: entry %q leaves the archive", path, hdr.Name)
		}
		target := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.Create(target)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			out.Close()
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: entry %q is not a file or folder", path, strings.TrimSuffix(hdr.Name, "/"))
		}
	}
}
