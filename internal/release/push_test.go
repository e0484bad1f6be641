package release

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ha-injector/ha-injector/internal/image"
)

// TestPushImage pushes an archive as the release workflow does, to a registry served on
// 127.0.0.1 by go-containerregistry's own, and reads it back: the same index digest (the
// one the chart pins) and each platform's image under its own digest.
func TestPushImage(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/ha-injector/ha-injector:0.1.0"

	bin := t.TempDir()
	for _, p := range image.Platforms {
		dir := filepath.Join(bin, image.PlatformDir(p))
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for _, f := range image.Default.Files {
			require.NoError(t, os.WriteFile(filepath.Join(dir, f.Source), []byte(f.Source+" for "+p.String()), 0o755))
		}
	}
	idx, err := image.BuildIndex(bin, image.Default, image.Platforms)
	require.NoError(t, err)
	archive := filepath.Join(t.TempDir(), "image.tar")
	require.NoError(t, image.WriteLayout(archive, ref, idx))
	want, err := idx.Digest()
	require.NoError(t, err)

	pushed, err := PushImage(context.Background(), archive, ref)
	require.NoError(t, err)
	assert.Equal(t, host+"/ha-injector/ha-injector@"+want.String(), pushed.Index)
	require.Len(t, pushed.Platforms, 2)

	tag, err := name.NewTag(ref)
	require.NoError(t, err)
	got, err := remote.Index(tag)
	require.NoError(t, err)
	d, err := got.Digest()
	require.NoError(t, err)
	assert.Equal(t, want, d, "the tag serves the index built, byte for byte")
	for i, p := range image.Platforms {
		assert.Equal(t, p.String(), pushed.Platforms[i].Platform)
		digest, err := name.NewDigest(pushed.Platforms[i].Ref)
		require.NoError(t, err)
		img, err := remote.Image(digest)
		require.NoError(t, err)
		cfg, err := img.ConfigFile()
		require.NoError(t, err)
		assert.Equal(t, p.Architecture, cfg.Architecture)
		byPlatform, err := remote.Image(tag, remote.WithPlatform(v1.Platform{OS: p.OS, Architecture: p.Architecture}))
		require.NoError(t, err)
		bd, err := byPlatform.Digest()
		require.NoError(t, err)
		assert.Equal(t, digest.DigestStr(), bd.String(), "a node of %s pulls that image", p.String())
	}

	_, err = PushImage(context.Background(), archive, host+"/ha-injector/ha-injector:0.2.0")
	assert.ErrorContains(t, err, "the archive holds "+ref+", not "+host+"/ha-injector/ha-injector:0.2.0", "built for one tag, never pushed under another")
}
