// Command image builds ha-injector's container image without a container engine, from
// the binaries `make build` wrote, and writes it as a `docker save` archive that
// `ctr -n k8s.io images import` (or `docker load`) reads:
//
//	make build && go run ./hack/image -bin bin -o _output/ha-injector-image.tar -tag ha-injector:dev
//
// (`make image-tar` runs both.) It prints the image's digest. The image is the one the
// Dockerfile's final stage describes (internal/image, held to the Dockerfile by test/image).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ha-injector/ha-injector/internal/image"
)

func main() {
	bin := flag.String("bin", "bin", "folder with the ha-injector and ha-sysctl binaries of make build")
	out := flag.String("o", "_output/ha-injector-image.tar", "the archive to write")
	tag := flag.String("tag", "ha-injector:dev", "the image's name in the archive")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "image: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	img, err := image.Build(*bin, image.Default)
	if err == nil {
		err = image.WriteTarball(*out, *tag, img)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	digest, err := img.Digest()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s -> %s\n", *tag, digest, *out)
}
