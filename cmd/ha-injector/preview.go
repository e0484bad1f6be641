package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ha-injector/ha-injector/internal/manifest"
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
	topologyDomains int
	sysctlImage     string
	allowedImages   []string
	podSecurity     policies.PodSecurityDefault
	// cluster: the context of each document is read from the cluster (preview_cluster.go).
	cluster          bool
	namespace        string
	releaseNamespace string
	conn             clusterFlags
}

func newPreviewCommand(stdin io.Reader) *cobra.Command {
	cfg := previewConfig{sysctlImage: defaultSysctlImage(), podSecurity: policies.PodSecurityDefault{Level: policies.PodSecurityPrivileged, Version: "latest"}}
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

Exit codes: 0 success (with --exit-code: nothing would change); 1 with
--exit-code, a document would change; 2 usage or input error (a malformed
manifest, an invalid policy, no object at all; with --cluster, a namespace or
HAPolicy not found, or ha-injector not installed); 3 the cluster could not be
reached.`,
		Example: `  ha-injector preview -f examples/web-server.yaml
  ha-injector preview -f app.yaml --policy examples/policy-strict.yaml
  kubectl get deploy web -o yaml | ha-injector preview -f - \
      --namespace-labels pod-security.kubernetes.io/enforce=baseline
  ha-injector preview --cluster -n shop -f app.yaml`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.validate(); err != nil {
				return usageError{err}
			}
			if err := checkClusterFlags(cmd.Flags(), cfg.cluster); err != nil {
				return usageError{err}
			}
			err := runPreview(cmd.Context(), cfg, stdin, cmd.OutOrStdout(), cmd.ErrOrStderr())
			var unreachable unreachableError
			var usage usageError
			var failed failedError
			if err != nil && !errors.As(err, &unreachable) && !errors.As(err, &usage) && !errors.As(err, &failed) {
				return inputError{err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&cfg.files, "filename", "f", nil, "manifests to read, as kubectl reads them: a file, a directory (its .yaml, .yml and .json files), an http(s) URL, or - for stdin (repeatable)")
	f.BoolVarP(&cfg.recursive, "recursive", "R", false, "read the directories of -f and their subdirectories")
	f.StringVar(&cfg.report, "report", "", "write the decisions as JSON to FILE (- for stderr, instead of the text lines): [{file, document, apiVersion, kind, namespace, name, feature, action, fallback, reason}]")
	f.BoolVar(&cfg.pods, "pods", false, "after each StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job and CronJob, print a pod its controller creates as the webhook makes it (after DefaultTolerationSeconds; no other admission plugin is emulated)")
	f.BoolVar(&cfg.exitCode, "exit-code", false, "exit with 1 when any document would change, 0 when none would (as git diff --exit-code)")
	f.StringVar(&cfg.policyFile, "policy", "", "file with an HAPolicy, or several and --policy-name (default: the built-in default policy)")
	f.StringVar(&cfg.policyName, "policy-name", "", "with --policy: the HAPolicy of the file to use when it has several")
	f.StringToStringVar(&cfg.namespaceLabels, "namespace-labels", nil, "labels of the target namespace, e.g. pod-security.kubernetes.io/enforce=baseline")
	f.StringVarP(&cfg.output, "output", "o", "yaml", "output format: yaml or json")
	f.IntVar(&cfg.topologyDomains, "topology-domains", -1, "number of schedulable domains of the policy's topology key (nodes, for kubernetes.io/hostname); Required anti-affinity is downgraded when a Deployment has more replicas (default: unknown, never downgrade)")
	f.StringVar(&cfg.sysctlImage, "sysctl-image", cfg.sysctlImage, "image of the ha-sysctl init container for a policy that names none, as serve --sysctl-image (default: ha-injector's image at this binary's version)")
	f.StringSliceVar(&cfg.allowedImages, "allowed-sysctl-images", nil, "images a policy may name for the ha-sysctl init container, as serve --allowed-sysctl-images (default: --sysctl-image alone)")
	addPodSecurityFlags(f, &cfg.podSecurity.Level, &cfg.podSecurity.Version, false)
	f.BoolVar(&cfg.cluster, "cluster", false, "read the namespace's labels, its HAPolicy, the number of topology domains and the webhook's --sysctl-image and --pod-security-default-* from the cluster of the kubeconfig (read-only) instead of the flags; a namespace or policy not found, or ha-injector not installed, exits 2, an unreachable cluster 3")
	f.StringVarP(&cfg.namespace, "namespace", "n", "", "with --cluster: namespace the documents are created in, for every document (default: each document's metadata.namespace)")
	f.StringVar(&cfg.releaseNamespace, "release-namespace", "", "with --cluster: namespace ha-injector is installed in (default: found from its MutatingWebhookConfiguration)")
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
	if c.output != string(manifest.YAML) && c.output != string(manifest.JSON) {
		return fmt.Errorf("--output must be yaml or json, not %q", c.output)
	}
	if c.topologyDomains < -1 {
		return fmt.Errorf("--topology-domains must be 0 or more")
	}
	return nil
}

func runPreview(ctx context.Context, cfg previewConfig, stdin io.Reader, stdout, stderr io.Writer) error {
	policy := v1alpha1.NewDefault()
	if cfg.policyFile != "" {
		var err error
		if policy, err = readPolicy(cfg.policyFile, cfg.policyName); err != nil {
			return err
		}
	}
	pctx := policies.Context{Policy: policy, Namespace: policies.Namespace{Labels: cfg.namespaceLabels}, SysctlImage: cfg.sysctlImage, AllowedSysctlImages: cfg.allowedImages}
	pctx.Cluster.PodSecurity = cfg.podSecurity
	if cfg.topologyDomains >= 0 {
		pctx.Cluster.TopologyDomains = map[string]int{policy.Spec.AntiAffinity.TopologyKey: cfg.topologyDomains}
	}
	var cluster *clusterSource
	if cfg.cluster {
		var err error
		if cluster, err = newClusterSource(cfg); err != nil {
			return err
		}
		// The installation is the same for every document: a missing one is not a
		// document's fault.
		if err := cluster.loadInstallation(ctx); err != nil {
			return err
		}
	}

	docs, err := readInputs(cfg.files, cfg.recursive, stdin)
	if err != nil {
		return err
	}

	// Everything is computed before anything is written, so a bad document
	// leaves stdout empty rather than half-written.
	p := &previewer{ctx: ctx, cluster: cluster, pctx: pctx, pods: cfg.pods}
	if cfg.policyFile != "" {
		for _, w := range policy.Warnings() {
			fmt.Fprintf(&p.log, "warning: %s: HAPolicy %s: %s\n", cfg.policyFile, policy.Name, w)
			p.report = append(p.report, reportEntry{File: cfg.policyFile, Document: 1,
				objectHead: objectHead{APIVersion: "ha-injector.io/v1alpha1", Kind: "HAPolicy", Name: policy.Name},
				Feature:    policies.FeatureTolerations, Action: "warning", Reason: w})
		}
	}
	out := make([][]byte, len(docs))
	for i, d := range docs {
		if out[i], err = p.documentOrList(d); err != nil {
			return err
		}
		p.endOfDocument()
	}
	wouldChange := slices.ContainsFunc(out, func(b []byte) bool { return b != nil })
	if cfg.pods {
		// After each document, the pods its workloads' controllers would create.
		docs, out = p.withPods(docs, out)
	}
	var buf bytes.Buffer
	if err := manifest.Write(&buf, manifest.Format(cfg.output), docs, out); err != nil {
		return err
	}
	// The report file is written first: a path that cannot be written is an error with
	// nothing on stdout.
	if cfg.report != "" && cfg.report != "-" {
		if err := writeReportFile(cfg.report, p.report); err != nil {
			return err
		}
	}
	if _, err := stdout.Write(buf.Bytes()); err != nil {
		return err
	}
	if cfg.report == "-" {
		// The report replaces the text lines on stderr.
		err = writeReport(stderr, p.report)
	} else {
		_, err = stderr.Write(p.log.Bytes())
	}
	if err != nil {
		return err
	}
	if cfg.exitCode && wouldChange {
		return failedError{errors.New("documents would change")}
	}
	return nil
}

// readPolicy reads the HAPolicy of a --policy file: its only one, or the one named name
// among several. Each is decoded strictly, defaulted and validated; an error names the
// document.
func readPolicy(path, name string) (*v1alpha1.HAPolicy, error) {
	docs, err := readSource(path, nil)
	if err != nil {
		return nil, err
	}
	var found []*v1alpha1.HAPolicy
	var names []string
	for _, d := range docs {
		// One HAPolicy, or a List of them (kubectl get hapolicies -o yaml).
		items, isList, err := listItems(d.JSON)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.Name(), err)
		}
		where := []string{d.Name()}
		if !isList {
			items = [][]byte{d.JSON}
		} else {
			where = make([]string, len(items))
			for k := range items {
				where[k] = fmt.Sprintf("%s: item %d", d.Name(), k+1)
			}
		}
		for k, item := range items {
			p, err := policies.ParsePolicy(item)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where[k], err)
			}
			found = append(found, p)
			names = append(names, p.Name)
		}
	}
	switch {
	case len(found) == 0:
		return nil, fmt.Errorf("%s: no HAPolicy", path)
	case name != "":
		var named []*v1alpha1.HAPolicy
		for _, p := range found {
			if p.Name == name {
				named = append(named, p)
			}
		}
		switch len(named) {
		case 0:
			return nil, fmt.Errorf("%s: no HAPolicy named %q (it has %s)", path, name, strings.Join(names, ", "))
		case 1:
			return named[0], nil
		}
		return nil, fmt.Errorf("%s: %d HAPolicies named %q", path, len(named), name)
	case len(found) > 1:
		return nil, fmt.Errorf("%s: %d HAPolicies (%s): pick one with --policy-name", path, len(found), strings.Join(names, ", "))
	}
	return found[0], nil
}

// objectName renders "Deployment web-server" (or the generateName prefix and *).
func objectName(m *policies.Mutation) string {
	head := headOf(m)
	return head.Kind + " " + head.Name
}
