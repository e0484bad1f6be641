package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// libraries are the modules whose versions `ha-injector version` reports: what decides
// how the webhook talks to the API server and reads its objects.
var libraries = []string{"k8s.io/api", "k8s.io/client-go", "sigs.k8s.io/controller-runtime"}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, and the Go and Kubernetes library versions it was built with",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			writeVersion(cmd.OutOrStdout())
			return nil
		},
	}
}

func writeVersion(w io.Writer) {
	fmt.Fprintf(w, "ha-injector %s\n", version)
	fmt.Fprintf(w, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	deps := map[string]string{}
	for _, d := range info.Deps {
		deps[d.Path] = d.Version
		if d.Replace != nil {
			deps[d.Path] = d.Replace.Version
		}
	}
	for _, lib := range libraries {
		if v := deps[lib]; v != "" {
			fmt.Fprintf(w, "%s %s\n", lib, v)
		}
	}
}
