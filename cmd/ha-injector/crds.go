package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/crds"
)

func newCRDsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "crds",
		Short: "Keep the HAPolicy CRD current (the chart's install and upgrade hook)",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			return usageError{errors.New("a subcommand is required: apply")}
		},
	}
	cmd.AddCommand(newCRDsApplyCommand())
	return cmd
}

func newCRDsApplyCommand() *cobra.Command {
	var (
		file string
		conn clusterFlags
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Server-side apply the HAPolicy CRD from FILE",
		Long: `apply server-side applies the CustomResourceDefinitions of the ha-injector.io group
in FILE (the chart's crds/ file), taking over the fields whoever created them set.
Helm never applies a chart's crds/ on an upgrade (Helm 3 not even on an install
when the CRD exists): the chart runs this as a pre-install and pre-upgrade hook so that an upgrade brings
the CRD of the new version. Stored HAPolicies are kept. Anything but a CRD of that
group in FILE is refused (exit 2) before anything is applied.`,
		Example: `  ha-injector crds apply -f charts/ha-injector/crds/ha-injector.io_hapolicies.yaml`,
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{errors.New("-f FILE is required")}
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return inputError{err}
			}
			objs, err := crds.Read(file, data)
			if err != nil {
				return inputError{err}
			}
			restCfg, err := conn.restConfig()
			if err != nil {
				return err
			}
			c, err := client.New(restCfg, client.Options{})
			if err != nil {
				return reachError(err)
			}
			names, err := crds.Apply(cmd.Context(), c, objs)
			for _, n := range names {
				fmt.Fprintf(cmd.OutOrStdout(), "customresourcedefinition %s applied\n", n)
			}
			return reachError(err)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "file with the CRDs (the chart's crds/ file)")
	conn.bind(f)
	return cmd
}
