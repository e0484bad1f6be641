// Command release builds and checks the artifacts of an ha-injector release
// (internal/release); the release workflow (.github/workflows/release.yml) runs it:
//
//	go run ./hack/release build -version 0.1.0 -image-tar _output/ha-injector-image.tar \
//	    -bin _output/bin -platforms 'linux/amd64 darwin/arm64 ...' -o _output/release
//	go run ./hack/release check-tag v0.1.0       # the tag, Chart.yaml and the CHANGELOG agree
//	go run ./hack/release check-chart            # the chart's version moved if the chart did
//	go run ./hack/release notes 0.1.0            # the CHANGELOG's section: the release notes
//	go run ./hack/release push-image -image-tar _output/ha-injector-image.tar \
//	    ghcr.io/ha-injector/ha-injector:0.1.0    # the tested archive, pushed as it is; prints
//	                                             # the index's and each platform's digest
//
// `make release-dry-run` runs build after `make image-tar`. Only push-image writes
// anywhere but the output folder; it prints the pushed digest.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ha-injector/ha-injector/internal/release"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "build":
		err = build(args)
	case "check-tag":
		err = one(args, func(tag string) error { return release.CheckTag(".", tag) })
	case "check-chart":
		var what string
		if what, err = release.CheckChartVersion("."); err == nil {
			fmt.Println(what)
		}
	case "notes":
		err = one(args, func(version string) error {
			data, err := os.ReadFile(release.ChangelogFile)
			if err != nil {
				return err
			}
			notes, err := release.Notes(data, strings.TrimPrefix(version, "v"))
			if err == nil {
				fmt.Print(notes)
			}
			return err
		})
	case "push-image":
		err = pushImage(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: release build|check-tag TAG|check-chart|notes VERSION|push-image -image-tar FILE REF")
	os.Exit(2)
}

func one(args []string, f func(string) error) error {
	if len(args) != 1 {
		usage()
	}
	return f(args[0])
}

func build(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	version := fs.String("version", "", "the release's version (the chart's appVersion, no v)")
	imageTar := fs.String("image-tar", "_output/ha-injector-image.tar", "make image-tar's OCI layout archive")
	bin := fs.String("bin", "_output/bin", "where make build writes each platform's CLI (BIN/linux_amd64)")
	platforms := fs.String("platforms", "", "the CLI archives' platforms, OS/ARCH separated by spaces (default: every released one)")
	out := fs.String("o", "_output/release", "the folder to write the artifacts into (emptied first)")
	_ = fs.Parse(args)
	ps := release.CLIPlatforms
	if *platforms != "" {
		ps = nil
		for _, s := range strings.Fields(*platforms) {
			p, err := v1.ParsePlatform(s)
			if err != nil {
				return err
			}
			ps = append(ps, *p)
		}
	}
	res, err := release.Build(release.Options{Root: ".", Version: *version, ImageArchive: *imageTar, BinRoot: *bin,
		Platforms: ps, Out: *out, Log: os.Stderr})
	if err != nil {
		return err
	}
	fmt.Printf("image digest %s\n", res.ImageDigest)
	for _, f := range res.Files {
		fmt.Println(f)
	}
	return nil
}

// pushImage pushes the image index of the archive to ref with the credentials of the
// Docker config (docker/login-action, crane auth login), and prints REPOSITORY@DIGEST of
// the index, then one line per platform: OS/ARCH REPOSITORY@DIGEST.
func pushImage(args []string) error {
	fs := flag.NewFlagSet("push-image", flag.ExitOnError)
	imageTar := fs.String("image-tar", "_output/ha-injector-image.tar", "make image-tar's OCI layout archive")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		usage()
	}
	pushed, err := release.PushImage(context.Background(), *imageTar, fs.Arg(0), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return err
	}
	fmt.Println(pushed.Index)
	for _, p := range pushed.Platforms {
		fmt.Printf("%s %s\n", p.Platform, p.Ref)
	}
	return nil
}
