package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/internal/preview"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// previewConfig is the validated command line of `ha-injector preview`.
type previewConfig struct {
	files           []string
	recursive       bool
	report          string // --report FILE, "-" for stderr
	pods            bool
	exitCode        bool
	policyFile      string
	policyName      string
	namespaceLabels map[string]string
	output          string
	topologyDomains domainCounts
	sysctlImage     string
	allowedImages   []string
	podSecurity     policies.PodSecurityDefault
	// admissionMode is webhook or native.
	admissionMode string
	// cluster: the context of each document is read from the cluster.
	cluster          bool
	namespace        string
	releaseNamespace string
	conn             clusterFlags
}

func newPreviewCommand(stdin io.Reader) *cobra.Command {
	cfg := previewConfig{admissionMode: "webhook", sysctlImage: defaultSysctlImage(), podSecurity: policies.PodSecurityDefault{Level: policies.PodSecurityPrivileged, Version: "latest"}}
	cmd := &cobra.Command{
		Use:   "preview -f FILE|- [-f ...] [--policy FILE [--policy-name NAME]] [--namespace-labels k=v,...] [--cluster [-n NAMESPACE]] [-o yaml|json]",
		Short: "Print manifests as the webhook would admit them",
		Long: `preview reads Kubernetes manifests (multi-document YAML or JSON, from files or
stdin) and prints every document in the same order: Pods and Deployments as
the ha-injector webhook would leave them in a namespace that opted in to the
policy, everything else unchanged. What was decided is printed on stderr, one
line per decision. It runs the same code as the webhook and needs no cluster.

With --cluster it reads, read-only, what the webhook would know instead of
taking it from flags: the namespace's labels (-n, else each document's
metadata.namespace), the HAPolicy it names, the number of schedulable nodes
(topology domains) and the webhook's own --sysctl-image and
--pod-security-default-* from its Deployment. A document in a namespace that
does not opt in is printed unchanged.

The first line on stderr says which admission mode is shown. With
--admission-mode=native (with --cluster: when ha-injector runs in native
mode), Deployments are printed unchanged and, as with --pods, the pods their
ReplicaSets create are shown as the API server's MutatingAdmissionPolicy
injects them.

Exit codes: 0 success (with --exit-code: nothing would change); 1 with
--exit-code, a document would change; 2 usage or input error (a malformed
manifest, an invalid policy, no object at all; with --cluster, a namespace or
HAPolicy not found, or ha-injector not installed); 3 the cluster could not be
reached.`,
		Example: `  ha-injector preview -f examples/web-server.yaml
  ha-injector preview -f app.yaml --policy examples/policy-strict.yaml
  kubectl get deploy web -o yaml | ha-injector preview -f - \
      --namespace-labels pod-security.kubernetes.io/enforce=baseline
  ha-injector preview --cluster -n shop -f app.yaml
  ha-injector preview --admission-mode=native --pods -f examples/web-server.yaml`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.validate(); err != nil {
				return usageError{err}
			}
			if err := checkClusterFlags(cmd.Flags(), cfg.cluster); err != nil {
				return usageError{err}
			}
			opts, err := cfg.options()
			if err != nil {
				return err
			}
			err = preview.Run(cmd.Context(), opts, cfg.exitCode, stdin, cmd.OutOrStdout(), cmd.ErrOrStderr())
			var unreachable *preview.UnreachableError
			switch {
			case err == nil:
				return nil
			case errors.Is(err, preview.ErrWouldChange):
				return failedError{err}
			case errors.As(err, &unreachable):
				return unreachableError{err}
			}
			return inputError{err}
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&cfg.files, "filename", "f", nil, "manifests to read, as kubectl reads them: a file, a directory (its .yaml, .yml and .json files), an http(s) URL, or - for stdin (repeatable)")
	f.BoolVarP(&cfg.recursive, "recursive", "R", false, "read the directories of -f and their subdirectories")
	f.StringVar(&cfg.report, "report", "", "write the decisions as JSON to FILE (- for stderr, instead of the text lines): [{file, document, apiVersion, kind, namespace, name, feature, action, fallback, reason}]")
	f.BoolVar(&cfg.pods, "pods", false, "after each StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job and CronJob, print a pod its controller creates as the webhook makes it (native mode: after each Deployment too, as the API server makes it; after DefaultTolerationSeconds; no other admission plugin is emulated)")
	f.BoolVar(&cfg.exitCode, "exit-code", false, "exit with 1 when any document would change, 0 when none would (as git diff --exit-code)")
	f.StringVar(&cfg.policyFile, "policy", "", "file with an HAPolicy, or several and --policy-name (default: the built-in default policy)")
	f.StringVar(&cfg.policyName, "policy-name", "", "with --policy: the HAPolicy of the file to use when it has several")
	f.StringToStringVar(&cfg.namespaceLabels, "namespace-labels", nil, "labels of the target namespace, e.g. pod-security.kubernetes.io/enforce=baseline")
	f.StringVarP(&cfg.output, "output", "o", "yaml", "output format: yaml or json")
	f.Var(&cfg.topologyDomains, "topology-domains", "schedulable domains per topology key, KEY=N (repeatable): a Required anti-affinity is downgraded when a Deployment has more replicas than its key has, and the zone spread is skipped on fewer than 2 zones; a plain N is the anti-affinity's key (nodes, for kubernetes.io/hostname). Default: unknown, never downgraded, never skipped")
	f.StringVar(&cfg.sysctlImage, "sysctl-image", cfg.sysctlImage, "image of the ha-sysctl init container for a policy that names none, as serve --sysctl-image (default: ha-injector's image at this binary's version)")
	f.StringSliceVar(&cfg.allowedImages, "allowed-sysctl-images", nil, "images a policy may name for the ha-sysctl init container, as serve --allowed-sysctl-images (default: --sysctl-image alone)")
	addPodSecurityFlags(f, &cfg.podSecurity.Level, &cfg.podSecurity.Version, false)
	f.StringVar(&cfg.admissionMode, "admission-mode", cfg.admissionMode, "the admission mode to show: webhook, or native (the API server's MutatingAdmissionPolicy: Deployments are stored as they are and their pods injected, without their controller's replica count or annotations); with --cluster, the installation found decides")
	f.BoolVar(&cfg.cluster, "cluster", false, "read the namespace's labels, its HAPolicy, the number of topology domains and the webhook's --sysctl-image and --pod-security-default-* from the cluster of the kubeconfig (read-only) instead of the flags; a namespace or policy not found, or ha-injector not installed, exits 2, an unreachable cluster 3")
	f.StringVarP(&cfg.namespace, "namespace", "n", "", "with --cluster: namespace the documents are created in, for every document (default: each document's metadata.namespace)")
	f.StringVar(&cfg.releaseNamespace, "release-namespace", "", "with --cluster: namespace ha-injector is installed in (default: found from its MutatingWebhookConfiguration, or in native mode from serve's Deployment)")
	cfg.conn.bind(f)
	return cmd
}

func (c previewConfig) validate() error {
	if !policies.ValidPodSecurityLevel(c.podSecurity.Level) {
		return fmt.Errorf("--pod-security-default-level must be privileged, baseline or restricted, not %q", c.podSecurity.Level)
	}
	if !policies.ValidPodSecurityVersion(c.podSecurity.Version) {
		return fmt.Errorf("--pod-security-default-version must be latest or v1.N, not %q", c.podSecurity.Version)
	}
	if !v1alpha1.ValidImage(c.sysctlImage) {
		return fmt.Errorf("--sysctl-image must be an image reference without spaces, not %q", c.sysctlImage)
	}
	for _, image := range c.allowedImages {
		if !v1alpha1.ValidImage(image) {
			return fmt.Errorf("--allowed-sysctl-images: %q is not an image reference", image)
		}
	}
	if c.policyFile == "-" {
		return fmt.Errorf("--policy must name a file: stdin is for -f")
	}
	if c.policyName != "" && c.policyFile == "" {
		return fmt.Errorf("--policy-name needs --policy")
	}
	if len(c.files) == 0 {
		return fmt.Errorf("at least one -f FILE (or -f - for stdin) is required")
	}
	stdins := 0
	for _, f := range c.files {
		if f == "-" {
			stdins++
		}
	}
	if stdins > 1 {
		return fmt.Errorf("stdin (-f -) can be read only once")
	}
	if c.admissionMode != "webhook" && c.admissionMode != "native" {
		return fmt.Errorf("--admission-mode must be webhook or native, not %q", c.admissionMode)
	}
	if c.output != string(manifest.YAML) && c.output != string(manifest.JSON) {
		return fmt.Errorf("--output must be yaml or json, not %q", c.output)
	}
	return nil
}

// options are what the command line asks preview to do.
func (c previewConfig) options() (preview.Options, error) {
	opts := preview.Options{
		Files: c.files, Recursive: c.recursive, Report: c.report, Pods: c.pods, Output: manifest.Format(c.output),
		PolicyFile: c.policyFile, PolicyName: c.policyName, NamespaceLabels: c.namespaceLabels,
		TopologyDomains: c.topologyDomains, Native: c.admissionMode == "native",
		Settings: facts.Settings{SysctlImage: c.sysctlImage, AllowedSysctlImages: c.allowedImages, PodSecurity: c.podSecurity},
	}
	if c.cluster {
		restConfig, err := c.conn.restConfig()
		if err != nil {
			return opts, err
		}
		opts.Cluster = &preview.ClusterOptions{RestConfig: restConfig, Namespace: c.namespace, ReleaseNamespace: c.releaseNamespace, DefaultSysctlImage: defaultSysctlImage()}
	}
	return opts, nil
}

// domainCounts is --topology-domains: KEY=N, repeatable; a plain N is the policy's
// anti-affinity key (the key "").
type domainCounts map[string]int

func (d *domainCounts) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(*d)) {
		if k == "" {
			parts = append(parts, strconv.Itoa((*d)[k]))
		} else {
			parts = append(parts, fmt.Sprintf("%s=%d", k, (*d)[k]))
		}
	}
	return strings.Join(parts, ",")
}

func (d *domainCounts) Set(s string) error {
	key, count, hasKey := strings.Cut(s, "=")
	if !hasKey {
		key, count = "", s
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 {
		return fmt.Errorf("%q: want N or KEY=N, N a count of 0 or more", s)
	}
	if hasKey && !v1alpha1.ValidTopologyKey(key) {
		return fmt.Errorf("%q: %q is not a label key", s, key)
	}
	if *d == nil {
		*d = domainCounts{}
	}
	(*d)[key] = n
	return nil
}

func (d *domainCounts) Type() string { return "KEY=N" }

// clusterOnlyFlags mean something only with --cluster; flagsCluster replaces the rest.
var (
	clusterOnlyFlags = []string{"namespace", "release-namespace", "kubeconfig", "context"}
	flagsCluster     = []string{"policy", "policy-name", "namespace-labels", "topology-domains", "sysctl-image", "allowed-sysctl-images", "pod-security-default-level", "pod-security-default-version", "admission-mode"}
)

// checkClusterFlags rejects a command line that mixes what --cluster reads with the flags
// that would say it instead, or cluster flags without --cluster.
func checkClusterFlags(fs *pflag.FlagSet, cluster bool) error {
	names, problem := flagsCluster, "conflicts with --cluster, which reads that from the cluster"
	if !cluster {
		names, problem = clusterOnlyFlags, "needs --cluster"
	}
	for _, name := range names {
		if fs.Changed(name) {
			return fmt.Errorf("--%s %s", name, problem)
		}
	}
	return nil
}
