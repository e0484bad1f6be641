// Command ha-injector is a Kubernetes mutating admission webhook that makes
// workloads survive the loss of a node, and an offline preview of what it does.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// usageError marks a mistake in how the command was called (exit code 2).
type usageError struct{ error }

// inputError marks input the command cannot use: a malformed manifest, an invalid policy
// file, a namespace preview --cluster does not find (exit code 2, without the usage hint).
type inputError struct{ error }

// The exit codes of every subcommand, one table in docs/doctor.md.
const (
	exitOK          = 0 // nothing failed
	exitFailed      = 1 // a doctor check failed (serve: it could not run)
	exitUsage       = 2 // the command line or the input is wrong
	exitUnreachable = 3 // the cluster could not be reached
)

// run executes the command line and returns the process exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand(stdin)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var failed failedError
	if errors.As(err, &failed) {
		return exitFailed
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var usage usageError
	if errors.As(err, &usage) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", root.Name())
		return exitUsage
	}
	var unreachable unreachableError
	if errors.As(err, &unreachable) {
		return exitUnreachable
	}
	var input inputError
	if errors.As(err, &input) {
		return exitUsage
	}
	return exitFailed
}

func newRootCommand(stdin io.Reader) *cobra.Command {
	root := &cobra.Command{
		Use:   "ha-injector",
		Short: "Make Kubernetes workloads survive the loss of a node",
		Long: `ha-injector injects pod anti-affinity, short not-ready/unreachable tolerations and
TCP keepalive sysctls into the Pods and Deployments of namespaces labelled
ha-injector.io/policy=<HAPolicy name>.`,
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          usageArgs(cobra.NoArgs),
		// Bare `ha-injector` shows what it can do.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newPreviewCommand(stdin), newServeCommand(), newDoctorCommand(), newCompileCommand(), newCRDsCommand(), newVersionCommand())
	return root
}

// usageArgs wraps a cobra argument validator so that its errors exit with 2.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
