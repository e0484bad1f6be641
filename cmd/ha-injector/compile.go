package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/internal/preview"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/webhook"
)

// compileConfig is the command line of `ha-injector compile`.
type compileConfig struct {
	policyFile    string
	cluster       bool
	conn          clusterFlags
	name          string
	sysctlImage   string
	allowedImages []string
	podSecurity   policies.PodSecurityDefault
	exclude       []string
}

func newCompileCommand() *cobra.Command {
	cfg := compileConfig{name: "ha-injector", sysctlImage: defaultSysctlImage(), podSecurity: policies.PodSecurityDefault{Level: policies.PodSecurityPrivileged, Version: "latest"}}
	cmd := &cobra.Command{
		Use:   "compile --policy FILE|--cluster [--name NAME] [--sysctl-image IMAGE] [--allowed-sysctl-images IMAGE,...] [--exclude-namespace NS ...]",
		Short: "Print what native mode installs: the admission policies and their bindings",
		Long: `compile prints, as YAML, what native mode installs for the HAPolicies of
--policy (a file, - for stdin) or, with --cluster, of the cluster of the
kubeconfig (read-only): the MutatingAdmissionPolicy that applies them in the
API server, the companion ValidatingAdmissionPolicy that gives the warnings
(Warn), and for each HAPolicy its two bindings (the namespaces labelled
ha-injector.io/policy=<its name>). It is for GitOps users who apply these
themselves: the chart's admission.mode=native installs the same, named after
the release, with serve keeping the bindings and each HAPolicy's status (the
number of zones, without which the zone spread is never skipped).

The HAPolicies themselves are not printed: apply them as they are.

Exit codes: 0 success; 2 usage or input error (an unreadable or invalid
file, no HAPolicy); 3 the cluster could not be reached.`,
		Example: `  ha-injector compile --policy examples/policy-default.yaml > native.yaml
  ha-injector compile --cluster --name ha-injector --sysctl-image registry.example/ha-injector:v0.1.0`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cfg.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.policyFile, "policy", "", "file with the HAPolicies to bind (one or more documents, or a List), - for stdin")
	f.BoolVar(&cfg.cluster, "cluster", false, "bind the HAPolicies of the cluster of the kubeconfig instead (read-only)")
	f.StringVar(&cfg.name, "name", cfg.name, "name of both admission policies; each binding is NAME-<HAPolicy>")
	f.StringVar(&cfg.sysctlImage, "sysctl-image", cfg.sysctlImage, "image of the ha-sysctl init container for a policy that names none (default: ha-injector's image at this binary's version)")
	f.StringSliceVar(&cfg.allowedImages, "allowed-sysctl-images", nil, "images a policy may name for the ha-sysctl init container (default: --sysctl-image alone)")
	f.StringSliceVar(&cfg.exclude, "exclude-namespace", nil, "namespaces never mutated whatever their labels, besides kube-system, kube-node-lease and kube-public (repeatable; put ha-injector's own here)")
	addPodSecurityFlags(f, &cfg.podSecurity.Level, &cfg.podSecurity.Version, false)
	cfg.conn.bind(f)
	return cmd
}

func (c *compileConfig) run(ctx context.Context, stdout, stderr io.Writer) error {
	switch {
	case c.policyFile == "" && !c.cluster:
		return usageError{errors.New("name the HAPolicies: --policy FILE or --cluster")}
	case c.policyFile != "" && c.cluster:
		return usageError{errors.New("--policy and --cluster exclude each other")}
	case !v1alpha1.ValidImage(c.sysctlImage):
		return usageError{fmt.Errorf("--sysctl-image %q is not an image reference", c.sysctlImage)}
	case !policies.ValidPodSecurityLevel(c.podSecurity.Level) || !policies.ValidPodSecurityVersion(c.podSecurity.Version):
		return usageError{fmt.Errorf("--pod-security-default-level must be privileged, baseline or restricted and --pod-security-default-version latest or v1.N")}
	}
	for _, image := range c.allowedImages {
		if !v1alpha1.ValidImage(image) {
			return usageError{fmt.Errorf("--allowed-sysctl-images: %q is not an image reference", image)}
		}
	}
	list, err := c.policies(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, p := range list {
		if err := policies.PolicyError(p); err != nil {
			fmt.Fprintf(stderr, "warning: %v: the API server will apply nothing of it until it is fixed\n", err)
		}
		if !slices.Contains(names, p.Name) {
			names = append(names, p.Name)
		}
	}
	o := native.Options{Name: c.name, ExcludeNamespaces: c.exclude, Settings: policies.NativeSettings{
		SysctlImage: c.sysctlImage, AllowedSysctlImages: c.allowedImages, PodSecurity: c.podSecurity,
	}}
	for i, obj := range native.Objects(o, names) {
		data, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(stdout, "---")
		}
		if _, err := stdout.Write(data); err != nil {
			return err
		}
	}
	return nil
}

// policies reads the HAPolicies to bind: from the file, or the cluster's.
func (c *compileConfig) policies(ctx context.Context) ([]*v1alpha1.HAPolicy, error) {
	if !c.cluster {
		list, err := preview.ReadPolicies(c.policyFile)
		if err != nil {
			return nil, inputError{err}
		}
		return list, nil
	}
	cfg, err := c.conn.restConfig()
	if err != nil {
		return nil, err
	}
	cl, err := client.New(cfg, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return nil, usageError{err}
	}
	var list v1alpha1.HAPolicyList
	if err := cl.List(ctx, &list); err != nil {
		if err := reachError(err); err != nil {
			var unreachable unreachableError
			if errors.As(err, &unreachable) {
				return nil, err
			}
			return nil, inputError{fmt.Errorf("listing HAPolicies: %w", err)}
		}
	}
	if len(list.Items) == 0 {
		return nil, inputError{errors.New("the cluster has no HAPolicy")}
	}
	out := make([]*v1alpha1.HAPolicy, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}
