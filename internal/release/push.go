package release

import (
	"context"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ha-injector/ha-injector/internal/image"
)

// Pushed is what PushImage pushed: the index and each platform's image, as
// REPOSITORY@DIGEST (what cosign signs and attests).
type Pushed struct {
	Index     string
	Platforms []PushedPlatform
}

// PushedPlatform is one platform's image of a pushed index.
type PushedPlatform struct {
	Platform string
	Ref      string
}

// PushImage pushes the image index of an archive `make image-tar` wrote to ref, byte for
// byte (its digest is the one the packaged chart pins). The archive must be named ref:
// what was built for one tag is not pushed under another.
func PushImage(ctx context.Context, archive, ref string, opts ...remote.Option) (*Pushed, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ha-injector-push-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	idx, named, err := image.ReadLayout(archive, dir)
	if err != nil {
		return nil, err
	}
	if named != image.FullName(tag) {
		return nil, fmt.Errorf("the archive holds %s, not %s", named, image.FullName(tag))
	}
	if err := remote.WriteIndex(tag, idx, append(opts, remote.WithContext(ctx))...); err != nil {
		return nil, err
	}
	digest, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	p := &Pushed{Index: tag.Context().Name() + "@" + digest.String()}
	for _, d := range m.Manifests {
		if d.Platform != nil {
			p.Platforms = append(p.Platforms, PushedPlatform{Platform: d.Platform.String(), Ref: tag.Context().Name() + "@" + d.Digest.String()})
		}
	}
	return p, nil
}
