// Package preview is `ha-injector preview`: it reads manifests, runs each Pod and
// Deployment through the webhook's own path (the facts gatherer, the engine, the
// patch) and prints them as the webhook would leave them, with what was decided; for
// the workloads whose pods the webhook mutates (StatefulSets, Jobs...), the decisions
// for those pods. The facts come from the flags (offline) or, read only, from a
// cluster (--cluster). The command only parses flags and calls Run.
package preview

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"k8s.io/client-go/rest"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// Options are what preview is asked to do.
type Options struct {
	// Files are the -f arguments: files, directories, URLs, "-" for stdin.
	Files []string
	// Recursive reads the subdirectories of directories too.
	Recursive bool
	// Report is where the decisions go as JSON ("-": stderr, instead of the
	// text lines; "": not written).
	Report string
	// Pods prints, after each workload, a pod its controller creates.
	Pods bool
	// Output is the format of the documents printed: yaml or json.
	Output manifest.Format
	// PolicyFile and PolicyName name the HAPolicy (none: the built-in default).
	PolicyFile, PolicyName string
	// NamespaceLabels are the target namespace's labels.
	NamespaceLabels map[string]string
	// TopologyDomains are the schedulable domains per topology key; the key
	// "" stands for the policy's anti-affinity key. A key not there is unknown.
	TopologyDomains map[string]int
	// Settings are the installation's, as serve's flags would give them.
	Settings facts.Settings
	// Native previews native mode (the API server's MutatingAdmissionPolicy):
	// Deployments are stored as they are and their pods injected at creation,
	// with what CEL cannot read unknown (policies.NativeDifferences). With
	// Cluster, the installation found decides instead.
	Native bool
	// Cluster, when set, reads the facts from a cluster instead.
	Cluster *ClusterOptions
}

// ClusterOptions are preview --cluster's.
type ClusterOptions struct {
	RestConfig *rest.Config
	// Namespace, when set, is every document's namespace.
	Namespace string
	// ReleaseNamespace is where ha-injector is installed ("": found).
	ReleaseNamespace string
	// DefaultSysctlImage is serve's --sysctl-image default: the image of this
	// binary's version.
	DefaultSysctlImage string
}

// ErrWouldChange is returned, after the documents are printed, when a
// document would change and the caller asked to know (--exit-code).
var ErrWouldChange = errors.New("documents would change")

// UnreachableError is a cluster that could not be reached or read.
type UnreachableError struct{ Err error }

func (e *UnreachableError) Error() string { return e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// Run previews the documents of opts.Files: the documents on stdout, what was
// decided on stderr (or in the report). Everything is computed before
// anything is written, so a bad document leaves stdout empty rather than half
// written. With exitCode it returns ErrWouldChange when a document would
// change. Any other error is the input's fault, or an *UnreachableError.
func Run(ctx context.Context, opts Options, exitCode bool, stdin io.Reader, stdout, stderr io.Writer) error {
	policy := v1alpha1.NewDefault()
	if opts.PolicyFile != "" {
		var err error
		if policy, err = readPolicy(opts.PolicyFile, opts.PolicyName); err != nil {
			return err
		}
	}
	p := &previewer{ctx: ctx, pods: opts.Pods, policy: policy, labels: opts.NamespaceLabels, native: opts.Native}
	if opts.Cluster != nil {
		var err error
		if p.cluster, err = newClusterSource(ctx, *opts.Cluster); err != nil {
			return err
		}
		p.native = p.cluster.install.Native != nil
	} else {
		domains := map[string]int{}
		for key, n := range opts.TopologyDomains {
			if key == "" {
				key = policy.Spec.AntiAffinity.TopologyKey
			}
			domains[key] = n
		}
		p.offline = &facts.Gatherer{
			Source:   facts.Static{Labels: opts.NamespaceLabels, Policy: policy, TopologyDomains: domains}.Source(),
			Settings: opts.Settings,
		}
	}

	docs, err := readInputs(opts.Files, opts.Recursive, stdin)
	if err != nil {
		return err
	}
	fmt.Fprintln(&p.log, p.modeLine())
	if opts.PolicyFile != "" {
		for _, w := range policy.Warnings() {
			fmt.Fprintf(&p.log, "warning: %s: HAPolicy %s: %s\n", opts.PolicyFile, policy.Name, w)
			p.report = append(p.report, reportEntry{File: opts.PolicyFile, Document: 1,
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
	if opts.Pods {
		// After each document, the pods its workloads' controllers would create.
		docs, out = p.withPods(docs, out)
	}
	var buf bytes.Buffer
	if err := manifest.Write(&buf, opts.Output, docs, out); err != nil {
		return err
	}
	// The report file is written first: a path that cannot be written is an error with
	// nothing on stdout.
	if opts.Report != "" && opts.Report != "-" {
		if err := writeReportFile(opts.Report, p.report); err != nil {
			return err
		}
	}
	if _, err := stdout.Write(buf.Bytes()); err != nil {
		return err
	}
	if opts.Report == "-" {
		// The report replaces the text lines on stderr.
		err = writeReport(stderr, p.report)
	} else {
		_, err = stderr.Write(p.log.Bytes())
	}
	if err != nil {
		return err
	}
	if exitCode && wouldChange {
		return ErrWouldChange
	}
	return nil
}

// readPolicy reads the HAPolicy of a --policy file: its only one, or the one named name
// among several. Each is decoded strictly, defaulted and validated; an error names the
// document.
func readPolicy(path, name string) (*v1alpha1.HAPolicy, error) {
	found, err := ReadPolicies(path)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(found))
	for i, p := range found {
		names[i] = p.Name
	}
	switch {
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

// ReadPolicies reads the HAPolicies of a file (or - for stdin, or a URL, as
// -f reads manifests): documents of one HAPolicy each, or Lists of them (as
// kubectl get hapolicies -o yaml prints them). A file without one is an error.
func ReadPolicies(path string) ([]*v1alpha1.HAPolicy, error) {
	docs, err := readSource(path, nil)
	if err != nil {
		return nil, err
	}
	var found []*v1alpha1.HAPolicy
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
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("%s: no HAPolicy", path)
	}
	return found, nil
}

// modeLine is the first line of the text report: which admission mode the
// documents are shown in, and where that comes from.
func (p *previewer) modeLine() string {
	switch {
	case p.cluster != nil && p.native:
		return "admission mode: native (MutatingAdmissionPolicy " + p.cluster.install.Native.Name + " found): Deployments are stored as they are and their pods injected by the API server at creation"
	case p.cluster != nil:
		return "admission mode: webhook (MutatingWebhookConfiguration " + p.cluster.install.Webhooks.Name + " found): the webhook injects Pods and Deployments"
	case p.native:
		return "admission mode: native (--admission-mode=native): Deployments are stored as they are and their pods injected by the API server at creation"
	}
	return "admission mode: webhook (--admission-mode=native shows native mode): the webhook injects Pods and Deployments"
}
