package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ha-injector/ha-injector/internal/doctor"
)

// doctorConfig is the command line of `ha-injector doctor`.
type doctorConfig struct {
	cluster clusterFlags
	opts    doctor.Options
	output  string
}

func newDoctorCommand() *cobra.Command {
	var cfg doctorConfig
	cmd := &cobra.Command{
		Use:   "doctor [--namespace NS] [--workloads] [-o text|json]",
		Short: "Check that injection works on the current cluster, and say why not",
		Long: `doctor checks, read-only, that ha-injector works on the cluster of the current
kubeconfig: the HAPolicy CRD and policies, the webhook configuration and its
certificate (and cert-manager's), the webhook's pods, the namespaces that opt in,
and, decisively, a server-side dry-run create of a probe pod in each kind of
opted-in namespace (same policy, same Pod Security labels), sent with and
without the injection, so a rule of another admission controller that refuses
the injection is caught before a rollout meets it. It then looks for pods the
injection broke and for workloads a restart would change.

Its only writes are those dry runs, which need create on pods in the namespaces
probed. Each check prints ok, warn or fail, what it saw and what to do.
Exit status: 0 nothing failed, 1 a check failed, 2 usage error, 3 the cluster
could not be reached.`,
		Example: `  ha-injector doctor
  ha-injector doctor --namespace team-a --workloads
  ha-injector doctor --context prod -o json`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.output != "text" && cfg.output != "json" {
				return usageError{fmt.Errorf("--output must be text or json, not %q", cfg.output)}
			}
			return runDoctor(cmd, cfg)
		},
	}
	f := cmd.Flags()
	cfg.cluster.bind(f)
	f.StringVarP(&cfg.opts.Namespace, "namespace", "n", "", "check and probe only this namespace (default: every namespace that opts in)")
	f.StringVar(&cfg.opts.ReleaseNamespace, "release-namespace", "", "namespace the chart is installed in (default: found from the webhook configuration)")
	f.BoolVar(&cfg.opts.Workloads, "workloads", false, "list the workloads a restart would change, not only their count per namespace")
	f.StringVarP(&cfg.output, "output", "o", "text", "output format: text or json ({\"checks\": [{name, status, message, fix}]})")
	return cmd
}

func runDoctor(cmd *cobra.Command, cfg doctorConfig) error {
	restCfg, err := cfg.cluster.restConfig()
	if err != nil {
		return err
	}
	cfg.opts.DefaultSysctlImage = defaultSysctlImage()
	report, err := doctor.Run(cmd.Context(), restCfg, cfg.opts)
	var unreachable *doctor.UnreachableError
	if errors.As(err, &unreachable) {
		return unreachableError{err}
	}
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if cfg.output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		err = enc.Encode(report)
	} else {
		err = report.WriteText(out)
	}
	if err != nil {
		return err
	}
	if report.Failed() {
		return failedError{errors.New("a check failed")}
	}
	return nil
}
