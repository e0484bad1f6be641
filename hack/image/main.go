// Command image builds ha-injector's container image without a container engine, from
// the binaries `make build` wrote for each platform, as one OCI image index, and writes
// it as an OCI image layout in a tar archive (index.json at its root) that
// `ctr -n k8s.io images import` reads and a registry client can push as it is:
//
//	go run ./hack/image -bin _output/bin -platforms 'linux/amd64 linux/arm64' \
//	    -o _output/ha-injector-image.tar -tag ghcr.io/ha-injector/ha-injector:0.1.0
//
// -bin holds one folder per platform (linux_amd64, linux_arm64), as `make image-tar`
// writes them before running this. It prints the index's digest. The image is the one
// the Dockerfile's final stage describes (internal/image, held to the Dockerfile by
// test/image).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ha-injector/ha-injector/internal/image"
)

func main() {
	bin := flag.String("bin", "_output/bin", "folder with one folder of make build's binaries per platform (linux_amd64, ...)")
	platforms := flag.String("platforms", "linux/amd64 linux/arm64", "the image's platforms, OS/ARCH separated by spaces")
	out := flag.String("o", "_output/ha-injector-image.tar", "the archive to write")
	tag := flag.String("tag", "ghcr.io/ha-injector/ha-injector:dev", "the image's name in the archive")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "image: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	var ps []v1.Platform
	for _, s := range strings.Fields(*platforms) {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "image: -platforms:", err)
			os.Exit(2)
		}
		ps = append(ps, *p)
	}
	idx, err := image.BuildIndex(*bin, image.Default, ps)
	if err == nil {
		err = image.WriteLayout(*out, *tag, idx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	digest, err := idx.Digest()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("%s@%s (%s) -> %s\n", *tag, digest, *platforms, *out)
}
