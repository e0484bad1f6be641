package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/internal/installation"
	"github.com/ha-injector/ha-injector/internal/manifest"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/webhook"
)

// clusterOnlyFlags mean something only with --cluster; flagsCluster replaces the rest.
var (
	clusterOnlyFlags = []string{"namespace", "release-namespace", "kubeconfig", "context"}
	flagsCluster     = []string{"policy", "policy-name", "namespace-labels", "topology-domains", "sysctl-image", "pod-security-default-level", "pod-security-default-version"}
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

// clusterSource gives each document the engine context the webhook would build for it, read
// only from the cluster: the namespace's labels, the HAPolicy they name, the number of
// topology domains, and serve's --sysctl-image and --pod-security-default-* from the
// webhook's Deployment. Everything is read once, however many documents share it.
type clusterSource struct {
	restConfig       *rest.Config
	reader           client.Reader
	namespace        string // -n: overrides every document's metadata.namespace
	releaseNamespace string

	install     *installation.Installation // nil until the first document that needs it
	sysctlImage string
	podSecurity policies.PodSecurityDefault
	namespaces  map[string]namespaceFacts
	domains     map[string]int // by topology key
}

// namespaceFacts is what the webhook reads about a namespace.
type namespaceFacts struct {
	labels map[string]string
	policy *v1alpha1.HAPolicy // nil: the namespace does not opt in
}

func newClusterSource(cfg previewConfig) (*clusterSource, error) {
	restConfig, err := cfg.conn.restConfig()
	if err != nil {
		return nil, err
	}
	// The mapper is lazy: nothing is requested here.
	reader, err := client.New(restConfig, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return nil, reachError(err)
	}
	return &clusterSource{
		restConfig: restConfig, reader: reader,
		namespace: cfg.namespace, releaseNamespace: cfg.releaseNamespace,
		namespaces: map[string]namespaceFacts{}, domains: map[string]int{},
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
// object itself (patch.PodOf).
var podCreators = []string{"apps/v1 StatefulSet", "apps/v1 DaemonSet", "apps/v1 ReplicaSet", "v1 ReplicationController", "batch/v1 Job", "batch/v1 CronJob"}

// skippedDocument is a document the webhook would not be called for, and why.
type skippedDocument struct {
	line     string // "Pod p: workload: skipped: ...", the text report's line
	head     objectHead
	decision policies.Decision
}

// contextFor returns the engine context for document d. When the webhook would not be
// called for it, it returns instead why (the report's "Pod p: workload: skipped: ...").
// Documents the webhook never mutates, or that do not decode (the engine names the
// fault), get a zero context and no request.
func (s *clusterSource) contextFor(ctx context.Context, d manifest.Document) (pctx policies.Context, notCalled *skippedDocument, err error) {
	var head documentHead
	if json.Unmarshal(d.JSON, &head) != nil {
		return pctx, nil, nil
	}
	var kind policies.Kind
	switch {
	case head.APIVersion == "v1" && head.Kind == "Pod":
		kind = policies.KindPod
	case head.APIVersion == "apps/v1" && head.Kind == "Deployment":
		kind = policies.KindDeployment
	case slices.Contains(podCreators, head.APIVersion+" "+head.Kind):
		// The webhook sees their pods, in their namespace: the pods webhook decides.
		kind = policies.KindPod
	default:
		return pctx, nil, nil
	}
	name := head.Metadata.Name
	if name == "" && head.Metadata.GenerateName != "" {
		name = head.Metadata.GenerateName + "*"
	}
	object := fmt.Sprintf("%s %s", head.Kind, name)
	namespace := s.namespace
	if namespace == "" {
		namespace = head.Metadata.Namespace
	}
	if namespace == "" {
		return pctx, nil, errors.New("no namespace: pass -n or set metadata.namespace")
	}

	if err := s.loadInstallation(ctx); err != nil {
		return pctx, nil, err
	}
	ns, err := s.namespaceFacts(ctx, namespace)
	if err != nil {
		return pctx, nil, err
	}
	if reason := s.notCalled(kind, namespace, ns, head.Metadata.Labels); reason != "" {
		skipped := policies.Decision{Feature: policies.FeatureWorkload, Action: policies.Skipped, Reason: reason}
		return pctx, &skippedDocument{
			line:     object + ": " + skipped.String(),
			head:     objectHead{APIVersion: head.APIVersion, Kind: head.Kind, Namespace: namespace, Name: name},
			decision: skipped,
		}, nil
	}

	pctx = policies.Context{
		Policy:              ns.policy,
		Namespace:           policies.Namespace{Name: namespace, Labels: ns.labels},
		SysctlImage:         s.sysctlImage,
		AllowedSysctlImages: s.install.Settings.AllowedSysctlImages,
		NotOptedIn:          ns.policy == nil,
	}
	pctx.Cluster.PodSecurity = s.podSecurity
	if ns.policy != nil {
		// preview knows no Pod's owner: as for the webhook, only a Deployment's replicas count.
		if key, needed := policies.NeedsTopologyDomains(ns.policy, kind, nil); needed {
			n, err := s.topologyDomains(ctx, key)
			if err != nil {
				return pctx, nil, err
			}
			pctx.Cluster.TopologyDomains = map[string]int{key: n}
		}
	}
	return pctx, nil, nil
}

// loadInstallation finds the webhook and serve's settings, once. Empty settings are
// serve's defaults; a Pod Security level of auto is resolved as serve resolves it.
func (s *clusterSource) loadInstallation(ctx context.Context) error {
	if s.install != nil {
		return nil
	}
	in, err := installation.Find(ctx, s.reader, s.releaseNamespace)
	if errors.Is(err, installation.ErrNotInstalled) {
		return fmt.Errorf("%w; preview --cluster shows what an installed webhook does (without --cluster, preview needs no installation)", err)
	}
	if err != nil {
		return reachError(err)
	}
	// No Deployment (a `url` clientConfig, as in `make demo`): serve's defaults.
	s.sysctlImage = in.Settings.SysctlImage
	if s.sysctlImage == "" {
		s.sysctlImage = defaultSysctlImage()
	}
	s.podSecurity = in.Settings.PodSecurity
	if s.podSecurity.Level == "" {
		s.podSecurity.Level = webhook.PodSecurityAuto
	}
	if s.podSecurity.Version == "" {
		s.podSecurity.Version = "latest"
	}
	if s.podSecurity.Level == webhook.PodSecurityAuto {
		level, err := webhook.DetectPodSecurityDefault(s.restConfig)
		if err != nil {
			return reachError(fmt.Errorf("resolving the webhook's --pod-security-default-level=auto: %w", err))
		}
		s.podSecurity.Level = level
	}
	s.install = in
	return nil
}

// namespaceFacts reads a namespace's labels and, when it opts in, its HAPolicy, defaulted
// as the webhook defaults it.
func (s *clusterSource) namespaceFacts(ctx context.Context, name string) (namespaceFacts, error) {
	if f, ok := s.namespaces[name]; ok {
		return f, nil
	}
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	err := s.reader.Get(ctx, types.NamespacedName{Name: name}, ns)
	if apierrors.IsNotFound(err) {
		return namespaceFacts{}, fmt.Errorf("namespace %q not found in the cluster", name)
	}
	if err != nil {
		return namespaceFacts{}, reachError(fmt.Errorf("reading namespace %s: %w", name, err))
	}
	f := namespaceFacts{labels: ns.Labels}
	if policyName := ns.Labels[policies.PolicyLabel]; policyName != "" {
		p := &v1alpha1.HAPolicy{}
		err := s.reader.Get(ctx, types.NamespacedName{Name: policyName}, p)
		if apierrors.IsNotFound(err) {
			return namespaceFacts{}, fmt.Errorf("namespace %s names HAPolicy %q (label %s), which is not found in the cluster", name, policyName, policies.PolicyLabel)
		}
		if err != nil {
			return namespaceFacts{}, reachError(fmt.Errorf("reading HAPolicy %s: %w", policyName, err))
		}
		p.Default()
		f.policy = p
	}
	s.namespaces[name] = f
	return f, nil
}

// topologyDomains counts the schedulable domains of key as the webhook does, once per key.
func (s *clusterSource) topologyDomains(ctx context.Context, key string) (int, error) {
	if n, ok := s.domains[key]; ok {
		return n, nil
	}
	n, err := webhook.CountTopologyDomains(ctx, s.reader, key)
	if err != nil {
		return 0, reachError(fmt.Errorf("listing nodes: %w", err))
	}
	s.domains[key] = n
	return n, nil
}

// notCalled says why the API server would not call the webhook for an object of kind with
// objectLabels created in namespace, from the selectors of the installed webhook
// configuration; empty when it would be called.
func (s *clusterSource) notCalled(kind policies.Kind, namespace string, ns namespaceFacts, objectLabels map[string]string) string {
	if ns.policy == nil {
		// Only the Deployments ha-injector injected are sent, to take the injection back.
		hook := installation.Hook(s.install.Webhooks, installation.LeavingDeploymentsWebhook)
		if kind != policies.KindDeployment || hook == nil || !installation.Selects(hook.NamespaceSelector, ns.labels) || !installation.Selects(hook.ObjectSelector, objectLabels) {
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
	case !installation.Selects(hook.NamespaceSelector, ns.labels):
		return fmt.Sprintf("namespace %s is exempt by the namespaceSelector of webhook %s (the release namespace, kube-system, kube-node-lease, kube-public and the chart's webhook.excludeNamespaces are): the webhook is not called", namespace, hookName)
	case !installation.Selects(hook.ObjectSelector, objectLabels):
		return fmt.Sprintf("the object's labels are exempt by the objectSelector of webhook %s: the webhook is not called", hookName)
	}
	return ""
}
