package preview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/installation"
	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
)

// clusterSource gives each document the engine context the webhook would build for it,
// read only from the cluster with the webhook's own gatherer: the namespace's labels,
// the HAPolicy they name, a pod's controller, the number of topology domains, and
// serve's settings from the webhook's Deployment. Each is read once, however many
// documents share it.
type clusterSource struct {
	opts    ClusterOptions
	reader  client.Reader
	install *installation.Installation
	facts   *facts.Gatherer
}

// newClusterSource connects to the cluster and finds the installation: the same for
// every document, so a missing one is not a document's fault.
func newClusterSource(ctx context.Context, opts ClusterOptions) (*clusterSource, error) {
	// The mapper is lazy: nothing is requested here.
	reader, err := client.New(opts.RestConfig, client.Options{Scheme: scheme})
	if err != nil {
		return nil, reachError(err)
	}
	in, err := installation.FindAny(ctx, reader, opts.ReleaseNamespace)
	if errors.Is(err, installation.ErrNotInstalled) {
		return nil, fmt.Errorf("%w; preview --cluster shows what an installation does (without --cluster, preview needs no installation)", err)
	}
	if err != nil {
		return nil, reachError(err)
	}
	// No Deployment (a `url` clientConfig, as in `make demo`): serve's defaults.
	settings, err := in.Settings.Facts(opts.RestConfig, opts.DefaultSysctlImage)
	if err != nil {
		return nil, reachError(err)
	}
	return &clusterSource{
		opts: opts, reader: reader, install: in,
		facts: &facts.Gatherer{Source: facts.Memo(&facts.Reader{Cache: reader, API: reader}), Settings: settings},
	}, nil
}

// documentHead is what decides a document's context: its kind, namespace and labels.
type documentHead struct {
	metav1.TypeMeta
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Namespace    string            `json:"namespace"`
		Labels       map[string]string `json:"labels"`
	} `json:"metadata"`
}

// podCreators are the kinds whose pods the webhook mutates although it never sees the
// object itself (PodOf).
var podCreators = []string{"apps/v1 StatefulSet", "apps/v1 DaemonSet", "apps/v1 ReplicaSet", "v1 ReplicationController", "batch/v1 Job", "batch/v1 CronJob"}

// skippedDocument is a document the webhook would not be called for, and why.
type skippedDocument struct {
	line     string // "Pod p: workload: skipped: ...", the text report's line
	head     objectHead
	decision policies.Decision
}

// namespaceOf is where document d is created: -n, else its metadata.namespace.
func (s *clusterSource) namespaceOf(d manifest.Document) (string, error) {
	if s.opts.Namespace != "" {
		return s.opts.Namespace, nil
	}
	var head documentHead
	_ = json.Unmarshal(d.JSON, &head)
	if head.Metadata.Namespace == "" {
		return "", errors.New("no namespace: pass -n or set metadata.namespace")
	}
	return head.Metadata.Namespace, nil
}

// calledFor says whether the webhook is called for document d: when it is not, why (the
// report's "Pod p: workload: skipped: ..."). Documents the webhook never mutates get no
// answer: the caller reports them.
func (s *clusterSource) calledFor(ctx context.Context, d manifest.Document) (ns *facts.Namespace, policy *v1alpha1.HAPolicy, notCalled *skippedDocument, err error) {
	var head documentHead
	if json.Unmarshal(d.JSON, &head) != nil {
		return nil, nil, nil, nil
	}
	kind, ok := policies.KindOf(head.APIVersion, head.Kind)
	switch {
	case ok:
	case slices.Contains(podCreators, head.APIVersion+" "+head.Kind):
		// The webhook sees their pods, in their namespace: the pods webhook decides.
		kind = policies.KindPod
	default:
		return nil, nil, nil, nil
	}
	name := head.Metadata.Name
	if name == "" && head.Metadata.GenerateName != "" {
		name = head.Metadata.GenerateName + "*"
	}
	namespace, err := s.namespaceOf(d)
	if err != nil {
		return nil, nil, nil, err
	}
	ns, err = s.facts.Namespace(ctx, namespace)
	if apierrors.IsNotFound(err) {
		return nil, nil, nil, fmt.Errorf("namespace %q not found in the cluster", namespace)
	}
	if err != nil {
		return nil, nil, nil, reachError(fmt.Errorf("reading namespace %s: %w", namespace, err))
	}
	policy, err = s.facts.Policy(ctx, ns)
	var perr *facts.PolicyError
	switch {
	case errors.As(err, &perr) && apierrors.IsNotFound(perr.Err):
		return nil, nil, nil, fmt.Errorf("namespace %s names HAPolicy %q (label %s), which is not found in the cluster", namespace, ns.PolicyName, policies.PolicyLabel)
	case errors.As(err, &perr) && !errors.As(err, new(*policies.InvalidPolicyError)):
		return nil, nil, nil, reachError(fmt.Errorf("reading HAPolicy %s: %w", ns.PolicyName, perr.Err))
	case err != nil:
		// An invalid policy: the engine says what the webhook does with it.
		if policy, err = s.facts.Source.Policy(ctx, ns.PolicyName); err != nil {
			return nil, nil, nil, reachError(err)
		}
	}
	if reason := s.notCalled(kind, namespace, ns, policy, head.Metadata.Labels); reason != "" {
		skipped := policies.Decision{Feature: policies.FeatureWorkload, Action: policies.Skipped, Reason: reason}
		return nil, nil, &skippedDocument{
			line:     fmt.Sprintf("%s %s: %s", head.Kind, name, skipped),
			head:     objectHead{APIVersion: head.APIVersion, Kind: head.Kind, Namespace: namespace, Name: name},
			decision: skipped,
		}, nil
	}
	return ns, policy, nil, nil
}

// notCalled says why the API server would not call the webhook for an object of kind with
// objectLabels created in namespace, from the selectors of the installed webhook
// configuration; empty when it would be called.
func (s *clusterSource) notCalled(kind policies.Kind, namespace string, ns *facts.Namespace, policy *v1alpha1.HAPolicy, objectLabels map[string]string) string {
	if m := s.install.Native; m != nil {
		switch {
		case policy == nil:
			return fmt.Sprintf("namespace %s does not opt in (no %s label): MutatingAdmissionPolicy %s does not apply", namespace, policies.PolicyLabel, m.Name)
		case m.Spec.MatchConstraints != nil && !installation.Selects(m.Spec.MatchConstraints.NamespaceSelector, ns.Labels):
			return fmt.Sprintf("namespace %s is exempt by the namespaceSelector of MutatingAdmissionPolicy %s (kube-system, kube-node-lease, kube-public and the namespaces the installation excludes are): its pods are not injected", namespace, m.Name)
		}
		return ""
	}
	if policy == nil {
		// Only the Deployments ha-injector injected are sent, to take the injection back.
		hook := installation.Hook(s.install.Webhooks, installation.LeavingDeploymentsWebhook)
		if kind != policies.KindDeployment || hook == nil || !installation.Selects(hook.NamespaceSelector, ns.Labels) || !installation.Selects(hook.ObjectSelector, objectLabels) {
			return fmt.Sprintf("namespace %s does not opt in (no %s label): the webhook is not called", namespace, policies.PolicyLabel)
		}
		return ""
	}
	hookName := installation.PodsWebhook
	if kind == policies.KindDeployment {
		hookName = installation.DeploymentsWebhook
	}
	hook := installation.Hook(s.install.Webhooks, hookName)
	switch {
	case hook == nil:
		return fmt.Sprintf("MutatingWebhookConfiguration %s has no webhook %s: the webhook is not called", s.install.Webhooks.Name, hookName)
	case !installation.Selects(hook.NamespaceSelector, ns.Labels):
		return fmt.Sprintf("namespace %s is exempt by the namespaceSelector of webhook %s (the release namespace, kube-system, kube-node-lease, kube-public and the chart's webhook.excludeNamespaces are): the webhook is not called", namespace, hookName)
	case !installation.Selects(hook.ObjectSelector, objectLabels):
		return fmt.Sprintf("the object's labels are exempt by the objectSelector of webhook %s: the webhook is not called", hookName)
	}
	return ""
}

// reachError turns an error of a request to the cluster into an *UnreachableError
// unless the API server answered it (then it is returned as is).
func reachError(err error) error {
	var status apierrors.APIStatus
	if err == nil || errors.As(err, &status) {
		return err
	}
	return &UnreachableError{fmt.Errorf("the cluster could not be reached: %w", err)}
}

// scheme knows the built-in types and the HAPolicy API.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}()
