package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/testenv"
	"github.com/ha-injector/ha-injector/webhook"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Stop()
	os.Exit(code)
}

// previewCluster is the shared API server, a client of it and a kubeconfig file naming it.
type previewCluster struct {
	c          client.Client
	kubeconfig string
}

func startPreviewCluster(t *testing.T) (context.Context, previewCluster) {
	t.Helper()
	restCfg := testenv.Start(t)
	c, err := client.New(restCfg, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx, previewCluster{c: c, kubeconfig: writeKubeconfig(t, restCfg.Host, restCfg)}
}

// writeKubeconfig writes a kubeconfig for server with cfg's credentials, as a user has one.
func writeKubeconfig(t *testing.T, server string, cfg *rest.Config) string {
	t.Helper()
	if !strings.Contains(server, "://") {
		server = "https://" + server
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: cfg.CAData, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientCertificate: cfg.CertFile,
		ClientKeyData: cfg.KeyData, ClientKey: cfg.KeyFile, Token: cfg.BearerToken,
	}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*kc, path))
	return path
}

// uniqueName keeps objects of the shared API server apart from other tests'.
func uniqueName(prefix string) string { return prefix + "-" + utilrand.String(5) }

// create creates objects and deletes them when the test ends (namespaces stay
// Terminating: envtest runs no namespace controller, hence the unique names).
func (p previewCluster) create(ctx context.Context, t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, obj := range objs {
		require.NoError(t, p.c.Create(ctx, obj))
		t.Cleanup(func() { _ = p.c.Delete(context.Background(), obj) })
	}
}

func (p previewCluster) namespace(ctx context.Context, t *testing.T, prefix string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName(prefix), Labels: labels}}
	p.create(ctx, t, ns)
	return ns.Name
}

// installChart creates the part of a `helm install` of the chart with values that preview
// --cluster reads: the MutatingWebhookConfiguration and the webhook's Deployment (no pod
// runs), in a new release namespace. It returns that namespace and the Deployment.
func (p previewCluster) installChart(ctx context.Context, t *testing.T, values map[string]any) (releaseNamespace string, deployment *appsv1.Deployment) {
	t.Helper()
	root, err := testenv.RepoRoot()
	require.NoError(t, err)
	chart, err := chartrender.Load(root)
	require.NoError(t, err)
	release := uniqueName("preview-release")
	res, err := chartrender.Render(chart, values, chartrender.Options{ReleaseName: release, Namespace: release})
	require.NoError(t, err)
	deployments, hooks := res.Find("Deployment"), res.Find("MutatingWebhookConfiguration")
	require.Len(t, deployments, 1)
	require.Len(t, hooks, 1)
	deployment = &appsv1.Deployment{}
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(deployments[0].Object, deployment))
	deployment.Namespace = release
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(hooks[0].Object, mwc))

	p.create(ctx, t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: release}})
	p.create(ctx, t, deployment, mwc)
	return release, deployment
}

// policy creates an HAPolicy with spec under a unique name, which it returns.
func (p previewCluster) policy(ctx context.Context, t *testing.T, prefix string, spec v1alpha1.HAPolicySpec) string {
	t.Helper()
	hap := &v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: uniqueName(prefix)}, Spec: spec}
	p.create(ctx, t, hap)
	return hap.Name
}

func deploymentIn(namespace string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: %s
spec:
  replicas: %d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
`, namespace, replicas)
}

func podIn(name, namespace string) string {
	ns := ""
	if namespace != "" {
		ns = ", namespace: " + namespace
	}
	return fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: %s%s, labels: {app: %s}}\nspec: {containers: [{name: a, image: a}]}\n", name, ns, name)
}

func decode[T any](t *testing.T, doc string) *T {
	t.Helper()
	var obj T
	require.NoError(t, yaml.UnmarshalStrict([]byte(doc), &obj))
	return &obj
}

// TestPreviewClusterReadsTheNamespaceItsPolicyAndTheNodes: the namespace's labels, the
// HAPolicy they name and the schedulable nodes decide the preview, as in the webhook.
func TestPreviewClusterReadsTheNamespaceItsPolicyAndTheNodes(t *testing.T) {
	ctx, p := startPreviewCluster(t)
	release, _ := p.installChart(ctx, t, nil)
	policy := p.policy(ctx, t, "strict-preview", v1alpha1.HAPolicySpec{
		AntiAffinity: v1alpha1.AntiAffinitySpec{Type: v1alpha1.AntiAffinityRequired},
		Tolerations:  v1alpha1.TolerationsSpec{NotReadySeconds: ptr.To[int64](17)},
	})
	ns := p.namespace(ctx, t, "preview-strict", map[string]string{policies.PolicyLabel: policy, "pod-security.kubernetes.io/enforce": "restricted"})
	before, _, err := (&facts.Reader{Cache: p.c}).TopologyDomains(ctx, corev1.LabelHostname)
	require.NoError(t, err)
	require.Less(t, before+2, 3, "precondition: the other tests left fewer than 3 schedulable nodes behind")
	for _, role := range []string{"worker", "worker", "control-plane"} {
		name := uniqueName("preview-" + role)
		labels := map[string]string{corev1.LabelHostname: name}
		if role == "control-plane" {
			labels["node-role.kubernetes.io/control-plane"] = "" // not schedulable: not counted
		}
		p.create(ctx, t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
	}

	configMap := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n" // no namespace needed: never mutated
	in := deploymentIn(ns, 3) + "---\n" + podIn("p", ns) + "---\n" + configMap
	r := runCLI(t, in, "preview", "--cluster", "--kubeconfig", p.kubeconfig, "--release-namespace", release, "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	docs := splitDocs(r.stdout)
	require.Len(t, docs, 3)

	dep := decode[appsv1.Deployment](t, docs[0])
	spec := dep.Spec.Template.Spec
	seconds := map[string]int64{}
	for _, tol := range spec.Tolerations {
		seconds[tol.Key] = *tol.TolerationSeconds
	}
	assert.Equal(t, int64(17), seconds[policies.NotReadyTaint], "the namespace's policy: %v", seconds)
	assert.Empty(t, spec.InitContainers, "restricted: no privileged ha-sysctl")
	assert.NotContains(t, r.stdout, "privileged: true")
	require.NotNil(t, spec.Affinity)
	assert.Empty(t, spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
	assert.Len(t, spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1)
	assert.Contains(t, r.stderr, fmt.Sprintf("-: document 1: Deployment web: antiAffinity: note: Required downgraded to Preferred: 3 replicas but only %d schedulable kubernetes.io/hostname domains", before+2))
	assert.Contains(t, r.stderr, `namespace enforces Pod Security "restricted"`)
	assert.Contains(t, r.stderr, "-: document 2: Pod p: tolerations:")
	assert.Equal(t, strings.TrimSpace(configMap), strings.TrimSpace(docs[2]), "unchanged")
	assert.Contains(t, r.stderr, "-: document 3: ConfigMap c: workload: skipped: the webhook mutates Pods and Deployments, and the pods of workloads; a ConfigMap is stored as it is", "every document gets a line")
}

// TestPreviewClusterUsesTheWebhooksOwnArguments: the webhook's --sysctl-image and
// --pod-security-default-level, as the chart passes them, replace preview's defaults.
func TestPreviewClusterUsesTheWebhooksOwnArguments(t *testing.T) {
	ctx, p := startPreviewCluster(t)
	release, dep := p.installChart(ctx, t, map[string]any{
		"sysctlImage": map[string]any{"repository": "example.com/mirror/ha", "tag": "1"},
		"podSecurity": map[string]any{"defaultLevel": "baseline"},
	})
	require.Subset(t, dep.Spec.Template.Spec.Containers[0].Args, []string{"--sysctl-image=example.com/mirror/ha:1", "--pod-security-default-level=baseline"}, "precondition: the chart passes them")
	policy := p.policy(ctx, t, "preview-default", v1alpha1.HAPolicySpec{})
	privileged := p.namespace(ctx, t, "preview-privileged", map[string]string{policies.PolicyLabel: policy, "pod-security.kubernetes.io/enforce": "privileged"})
	unlabelled := p.namespace(ctx, t, "preview-default-level", map[string]string{policies.PolicyLabel: policy})

	r := runCLI(t, podIn("a", privileged)+"---\n"+podIn("b", unlabelled), "preview", "--cluster", "--kubeconfig", p.kubeconfig, "--release-namespace", release, "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	docs := splitDocs(r.stdout)
	require.Len(t, docs, 2)
	a := decode[corev1.Pod](t, docs[0])
	require.Len(t, a.Spec.InitContainers, 1, r.stderr)
	assert.Equal(t, policies.SysctlContainerName, a.Spec.InitContainers[0].Name)
	assert.Equal(t, "example.com/mirror/ha:1", a.Spec.InitContainers[0].Image)
	b := decode[corev1.Pod](t, docs[1])
	assert.Empty(t, b.Spec.InitContainers, "the webhook's default level, baseline, applies")
	assert.Contains(t, r.stderr, `-: document 2: Pod b: sysctls: skipped: the cluster's default Pod Security level "baseline" applies`)
}

// TestPreviewClusterOutsideOptedInNamespaces: where the API server would not call the
// webhook, the object comes back unchanged with the reason.
func TestPreviewClusterOutsideOptedInNamespaces(t *testing.T) {
	ctx, p := startPreviewCluster(t)
	release, _ := p.installChart(ctx, t, nil)
	policy := p.policy(ctx, t, "preview-default", v1alpha1.HAPolicySpec{})
	plain := p.namespace(ctx, t, "preview-plain", nil)
	exempt := p.namespace(ctx, t, "preview-exempt", map[string]string{policies.PolicyLabel: policy})
	in := deploymentIn(plain, 3) + "---\n" + podIn("p", plain)
	args := []string{"preview", "--cluster", "--kubeconfig", p.kubeconfig, "--release-namespace", release, "-f", "-"}

	r := runCLI(t, in, args...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, in, r.stdout, "unchanged, as written")
	mode, decisions, _ := strings.Cut(r.stderr, "\n")
	assert.Regexp(t, `^admission mode: webhook \(MutatingWebhookConfiguration .*ha-injector found\)`, mode, "the first line says which mode")
	assert.Equal(t, fmt.Sprintf(`-: document 1: Deployment web: workload: skipped: namespace %[1]s does not opt in (no ha-injector.io/policy label): the webhook is not called
-: document 2: Pod p: workload: skipped: namespace %[1]s does not opt in (no ha-injector.io/policy label): the webhook is not called
`, plain), decisions)
	// The JSON report has the same, with the object named.
	r = runCLI(t, in, append(args, "--report", "-")...)
	require.Equal(t, 0, r.code, r.stderr)
	var report []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stderr), &report), r.stderr)
	require.Len(t, report, 2)
	assert.Equal(t, map[string]any{"file": "-", "document": 2.0, "apiVersion": "v1", "kind": "Pod", "namespace": plain, "name": "p",
		"feature": "workload", "action": "skipped", "reason": fmt.Sprintf("namespace %s does not opt in (no ha-injector.io/policy label): the webhook is not called", plain)}, report[1])

	// The pods of a StatefulSet are judged in its namespace, as the webhook judges them.
	sts := "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: " + plain + "}\nspec: {replicas: 3, serviceName: db, selector: {matchLabels: {app: db}}, template: {metadata: {labels: {app: db}}, spec: {containers: [{name: a, image: a}]}}}\n"
	r = runCLI(t, sts, args...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, fmt.Sprintf("\n-: document 1: StatefulSet db: workload: skipped: namespace %s does not opt in (no ha-injector.io/policy label): the webhook is not called\n", plain))
	r = runCLI(t, sts, append(args, "-n", exempt)...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "-: document 1: StatefulSet db: antiAffinity: applied: its pods: ")

	// The chart's namespaceSelector leaves out its own namespace whatever its labels.
	ownNS := &corev1.Namespace{}
	require.NoError(t, p.c.Get(ctx, client.ObjectKey{Name: release}, ownNS))
	ownNS.Labels[policies.PolicyLabel] = policy
	require.NoError(t, p.c.Update(ctx, ownNS))
	r = runCLI(t, in, append(args, "-n", release)...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, in, r.stdout)
	assert.Contains(t, r.stderr, fmt.Sprintf("-: document 2: Pod p: workload: skipped: namespace %s is exempt by the namespaceSelector of webhook pods.ha-injector.io", release))

	// -n replaces metadata.namespace.
	r = runCLI(t, in, append(args, "-n", exempt)...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "ha-sysctl")
	assert.NotContains(t, r.stderr, "does not opt in")

	// A Deployment ha-injector injected is still sent (the chart's leaving-deployments
	// webhook), and its injection is taken back.
	injected := splitDocs(r.stdout)[0]
	require.Contains(t, injected, policies.InjectedLabel)
	r = runCLI(t, injected, append(args, "-n", plain)...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.NotContains(t, r.stdout, "ha-sysctl")
	assert.NotContains(t, r.stdout, policies.StatusAnnotation)
	assert.Contains(t, r.stderr, fmt.Sprintf("-: document 1: Deployment web: workload: skipped: namespace %s no longer carries the ha-injector.io/policy label: ha-injector's earlier injection removed", plain))
}

func TestPreviewClusterErrors(t *testing.T) {
	ctx, p := startPreviewCluster(t)
	release, _ := p.installChart(ctx, t, nil)
	missingPolicy := p.namespace(ctx, t, "preview-typo", map[string]string{policies.PolicyLabel: "no-such-policy"})
	notInstalled := p.namespace(ctx, t, "preview-no-release", nil)
	unreachable := writeKubeconfig(t, "https://127.0.0.1:1", &rest.Config{})
	good := podIn("ok", "")
	cluster := []string{"preview", "--cluster", "--kubeconfig", p.kubeconfig, "--release-namespace", release, "-f", "-"}
	cases := []struct {
		name     string
		stdin    string
		args     []string
		code     int
		stderrRE string
	}{
		{"a namespace not found", good, append(cluster, "-n", "preview-nowhere"), 2, `-: document 1: namespace "preview-nowhere" not found in the cluster`},
		{"a label naming a policy not found names both", good, append(cluster, "-n", missingPolicy), 2, `-: document 1: namespace ` + missingPolicy + ` names HAPolicy "no-such-policy" \(label ha-injector.io/policy\), which is not found`},
		{"an object without a namespace names the document", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n" + good, cluster, 2, `-: document 2: no namespace: pass -n or set metadata.namespace`},
		{"ha-injector not installed", good, []string{"preview", "--cluster", "--kubeconfig", p.kubeconfig, "--release-namespace", notInstalled, "-n", notInstalled, "-f", "-"}, 2, `^Error: ha-injector is not installed: no MutatingWebhookConfiguration has a webhook named pods.ha-injector.io calling a Service in namespace ` + notInstalled},
		{"an unreachable cluster", good, []string{"preview", "--cluster", "--kubeconfig", unreachable, "-n", "default", "-f", "-"}, 3, `the cluster could not be reached`},
		{"a kubeconfig not found", good, []string{"preview", "--cluster", "--kubeconfig", "does-not-exist", "-n", "default", "-f", "-"}, 2, `loading the kubeconfig`},
		{"--policy with --cluster", good, append(cluster, "--policy", "testdata/invalid-policy.yaml"), 2, `--policy conflicts with --cluster, which reads that from the cluster`},
		{"--namespace-labels with --cluster", good, append(cluster, "--namespace-labels", "a=b"), 2, `--namespace-labels conflicts with --cluster`},
		{"--topology-domains with --cluster", good, append(cluster, "--topology-domains", "2"), 2, `--topology-domains conflicts with --cluster`},
		{"--sysctl-image with --cluster", good, append(cluster, "--sysctl-image", "x:1"), 2, `--sysctl-image conflicts with --cluster`},
		{"--pod-security-default-level with --cluster", good, append(cluster, "--pod-security-default-level", "baseline"), 2, `--pod-security-default-level conflicts with --cluster`},
		{"--pod-security-default-version with --cluster", good, append(cluster, "--pod-security-default-version", "v1.30"), 2, `--pod-security-default-version conflicts with --cluster`},
		{"-n without --cluster", good, []string{"preview", "-f", "-", "-n", "default"}, 2, `--namespace needs --cluster`},
		{"--kubeconfig without --cluster", good, []string{"preview", "-f", "-", "--kubeconfig", p.kubeconfig}, 2, `--kubeconfig needs --cluster`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.stdin, tc.args...)
			assert.Equal(t, tc.code, r.code, r.stderr)
			assert.Regexp(t, tc.stderrRE, r.stderr)
			assert.Empty(t, r.stdout, "nothing half-written to stdout")
		})
	}
}
