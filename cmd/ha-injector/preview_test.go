package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/policies"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}

// splitDocs splits preview's YAML output into its documents.
func splitDocs(out string) []string {
	return strings.Split(out, "---\n")
}

func TestPreviewExampleGetsEveryInjection(t *testing.T) {
	r := runCLI(t, "", "preview", "-f", "../../examples/web-server.yaml")
	require.Equal(t, 0, r.code, r.stderr)

	docs := splitDocs(r.stdout)
	require.Len(t, docs, 2, "the Deployment and the Service, in order")
	var dep appsv1.Deployment
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs[0]), &dep))
	spec := dep.Spec.Template.Spec
	require.NotNil(t, spec.Affinity)
	require.Len(t, spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1)
	assert.Equal(t, map[string]string{"app": "web-server"},
		spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector.MatchLabels)
	seconds := map[string]int64{}
	for _, tol := range spec.Tolerations {
		seconds[tol.Key] = *tol.TolerationSeconds
	}
	assert.Equal(t, map[string]int64{policies.NotReadyTaint: 60, policies.UnreachableTaint: 30}, seconds)
	require.NotNil(t, spec.SecurityContext)
	assert.Equal(t, []corev1.Sysctl{
		{Name: "net.ipv4.tcp_keepalive_intvl", Value: "30"},
		{Name: "net.ipv4.tcp_keepalive_probes", Value: "5"},
		{Name: "net.ipv4.tcp_keepalive_time", Value: "30"},
	}, spec.SecurityContext.Sysctls)
	require.Len(t, spec.InitContainers, 1)
	require.Len(t, spec.TopologySpreadConstraints, 1)
	spread := spec.TopologySpreadConstraints[0]
	assert.Equal(t, corev1.LabelTopologyZone, spread.TopologyKey)
	assert.Equal(t, corev1.ScheduleAnyway, spread.WhenUnsatisfiable)
	assert.Equal(t, map[string]string{"app": "web-server"}, spread.LabelSelector.MatchLabels)
	sysctl := spec.InitContainers[0]
	assert.Equal(t, policies.SysctlContainerName, sysctl.Name)
	assert.Equal(t, "ghcr.io/ha-injector/ha-injector:"+version, sysctl.Image, "ha-injector's own image at this binary's version")
	assert.Equal(t, []string{"/ha-sysctl", "net.ipv4.tcp_retries2=9"}, sysctl.Command)
	assert.True(t, *sysctl.SecurityContext.ReadOnlyRootFilesystem)
	assert.Contains(t, dep.Annotations, policies.StatusAnnotation)
	assert.NotContains(t, r.stdout, "busybox")

	assert.Contains(t, docs[1], "kind: Service")
	assert.Equal(t, 6, strings.Count(r.stderr, "Deployment web-server: "), "one line per decision:\n%s", r.stderr)
	assert.Contains(t, r.stderr, "examples/web-server.yaml: document 1: Deployment web-server: tolerations: applied:")
}

// TestPreviewNeverInjectsAPrivilegedContainerWherePodSecurityForbidsIt: a
// cluster default of baseline, or an enforce label that is not a level (which
// Pod Security enforces as restricted), leaves no privileged container.
func TestPreviewNeverInjectsAPrivilegedContainerWherePodSecurityForbidsIt(t *testing.T) {
	for name, args := range map[string][]string{
		"cluster default baseline":    {"--pod-security-default-level", "baseline"},
		"cluster default at v1.28":    {"--pod-security-default-level", "restricted", "--pod-security-default-version", "v1.28"},
		"namespace label not a level": {"--namespace-labels", "pod-security.kubernetes.io/enforce=bogus"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runCLI(t, "", append([]string{"preview", "-f", "../../examples/web-server.yaml"}, args...)...)
			require.Equal(t, 0, r.code, r.stderr)
			var dep appsv1.Deployment
			require.NoError(t, yaml.UnmarshalStrict([]byte(splitDocs(r.stdout)[0]), &dep))
			assert.Empty(t, dep.Spec.Template.Spec.InitContainers)
			assert.NotContains(t, r.stdout, "privileged: true")
			assert.Contains(t, r.stderr, "dropped net.ipv4.tcp_retries2=9")
		})
	}
	r := runCLI(t, "", "preview", "-f", "../../examples/web-server.yaml", "--pod-security-default-level", "auto")
	assert.Equal(t, 2, r.code, "auto needs a cluster: %s", r.stderr)
}

func TestPreviewOutputDiffersOnlyByTheInjection(t *testing.T) {
	in := `apiVersion: v1
kind: Pod
metadata:
  name: p
  labels:
    app: p
spec:
  containers:
    - name: app
      image: app:1
`
	r := runCLI(t, in, "preview", "-f", "-", "--policy", writeFile(t, "p.yaml", `apiVersion: ha-injector.io/v1alpha1
kind: HAPolicy
metadata: {name: only-tolerations}
spec:
  antiAffinity: {enabled: false}
  zoneSpread: {enabled: false}
  sysctls: {enabled: false}
`))
	require.Equal(t, 0, r.code, r.stderr)
	// The input lines come back in their order; only tolerations and the
	// status annotation are new. No creationTimestamp: null, no status: {}.
	assert.Equal(t, `apiVersion: v1
kind: Pod
metadata:
  name: p
  labels:
    app: p
  annotations:
    ha-injector.io/status: '{"v":2,"policy":"only-tolerations","hash":"dde563e0","applied":["tolerations"],"skipped":{"antiAffinity":"disabled by the policy","sysctls":"disabled by the policy","zoneSpread":"disabled by the policy"},"tolerations":[{"key":"node.kubernetes.io/not-ready","seconds":60},{"key":"node.kubernetes.io/unreachable","seconds":30}]}'
spec:
  containers:
    - name: app
      image: app:1
  tolerations:
    - key: node.kubernetes.io/not-ready
      operator: Exists
      effect: NoExecute
      tolerationSeconds: 60
    - key: node.kubernetes.io/unreachable
      operator: Exists
      effect: NoExecute
      tolerationSeconds: 30
`, r.stdout)
}

func TestPreviewKeepsUnchangedDocumentsAsWritten(t *testing.T) {
	in := "# my config\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}  # inline\ndata:\n  z: \"1\"\n  a: \"2\"\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: skip\n  annotations: {ha-injector.io/inject: \"false\"}\nspec:\n  containers: [{name: a, image: a}]\n"
	r := runCLI(t, in, "preview", "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	docs := splitDocs(r.stdout)
	require.Len(t, docs, 2)
	assert.Contains(t, docs[0], "# my config")
	assert.Contains(t, docs[0], "# inline")
	assert.Less(t, strings.Index(docs[0], "  z: "), strings.Index(docs[0], "  a: "), "key order kept")
	assert.NotContains(t, docs[1], policies.StatusAnnotation)
	assert.Contains(t, r.stderr, "document 2: Pod skip: workload: skipped: opted out")
	assert.Equal(t, in, r.stdout, "both unchanged: byte for byte")

	// Unchanged documents keep their own indentation, flow style and comment spacing, next
	// to a mutated one; a comment after the marker stays with its document.
	service := "# my service\napiVersion: v1\nkind: Service   # inline\nmetadata:\n    name: db\nspec:\n    ports:\n    - port: 80   # http\n"
	pod := "# the pod\napiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: p}}\nspec:\n  containers: [{name: a, image: a}]\n"
	lead := "---\n# the list starts here\n"
	r = runCLI(t, lead+service+"---\n"+pod+"---\n"+service, "preview", "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	rest, ok := strings.CutPrefix(r.stdout, lead+service+"---\n")
	require.True(t, ok, "the first document with the marker and comments above it, as written:\n%s", r.stdout)
	docs = strings.Split(rest, "\n---\n")
	require.Len(t, docs, 2, rest)
	assert.True(t, strings.HasPrefix(docs[0], "# the pod\napiVersion: v1\n"), docs[0])
	assert.Contains(t, docs[0], policies.StatusAnnotation)
	assert.Equal(t, service, docs[1])

	// A marker followed by content is not split by line: such a stream is re-encoded
	// from what the parser read (here without the marker).
	r = runCLI(t, "--- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n", "preview", "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n", r.stdout)
}

func TestPreviewReadsSeveralFilesAndJSON(t *testing.T) {
	pod := writeFile(t, "pod.json", `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j", "labels": {"app": "j"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}}`)
	r := runCLI(t, "", "preview", "-f", pod, "-f", "../../examples/web-server.yaml", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "pod.json: document 1: Pod j:")
	assert.Contains(t, r.stderr, "web-server.yaml: document 1: Deployment web-server:")
	// Several objects are one v1 List, as kubectl get -o json prints them: one JSON value.
	var list struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []json.RawMessage `json:"items"`
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	require.Error(t, dec.Decode(&list), "metadata is there too")
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), r.stdout)
	assert.Equal(t, "v1", list.APIVersion)
	assert.Equal(t, "List", list.Kind)
	require.Len(t, list.Items, 3)
	assert.True(t, strings.HasPrefix(string(list.Items[0]), "{\n      \"apiVersion\": \"v1\",\n      \"kind\": \"Pod\""), "each item keeps its key order: %.80s", list.Items[0])
	var second map[string]any
	require.NoError(t, json.Unmarshal(list.Items[1], &second))
	assert.Equal(t, "Deployment", second["kind"])

	// One object is that object.
	r = runCLI(t, "", "preview", "-f", pod, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, strings.HasPrefix(r.stdout, "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Pod\""), r.stdout[:80])
}

func TestPreviewNamespaceLabelsAndTopologyDomains(t *testing.T) {
	policy := writeFile(t, "p.yaml", "apiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: strict}\nspec: {antiAffinity: {type: Required}}\n")
	r := runCLI(t, "", "preview", "-f", "../../examples/web-server.yaml", "--policy", policy,
		"--namespace-labels", "pod-security.kubernetes.io/enforce=baseline,team=a", "--topology-domains", "2")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "Required downgraded to Preferred: 3 replicas but only 2 schedulable kubernetes.io/hostname domains")
	assert.Contains(t, r.stderr, `namespace enforces Pod Security "baseline"`)

	var dep appsv1.Deployment
	require.NoError(t, yaml.Unmarshal([]byte(splitDocs(r.stdout)[0]), &dep))
	assert.Empty(t, dep.Spec.Template.Spec.InitContainers, "no privileged container under baseline")
	assert.Len(t, dep.Spec.Template.Spec.SecurityContext.Sysctls, 3)
	assert.Len(t, dep.Spec.Template.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, 1)
}

func TestPreviewErrors(t *testing.T) {
	good := "apiVersion: v1\nkind: Pod\nmetadata: {name: ok, labels: {app: ok}}\nspec: {containers: [{name: a, image: a}]}\n"
	cases := []struct {
		name     string
		stdin    string
		args     []string
		code     int
		stderrRE string
	}{
		{"no file is a usage error", "", []string{"preview"}, 2, "at least one -f"},
		{"an unknown flag is a usage error", "", []string{"preview", "-f", "-", "--bogus"}, 2, "unknown flag: --bogus"},
		{"a bad output format is a usage error", good, []string{"preview", "-f", "-", "-o", "xml"}, 2, `--output must be yaml or json, not "xml"`},
		{"a positional argument is a usage error", good, []string{"preview", "-f", "-", "extra"}, 2, "unknown command"},
		{"a bad namespace label is a usage error", good, []string{"preview", "-f", "-", "--namespace-labels", "novalue"}, 2, "namespace-labels"},
		{"stdin twice is a usage error", good, []string{"preview", "-f", "-", "-f", "-"}, 2, "only once"},
		{"a missing file", "", []string{"preview", "-f", "does-not-exist.yaml"}, 2, "does-not-exist.yaml: no such file"},
		{"malformed YAML names the document", good + "---\nkind: [\n", []string{"preview", "-f", "-"}, 2, `-: document 2: yaml: `},
		{"a mistyped field names the document and the field", good + "---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: three}\n", []string{"preview", "-f", "-"}, 2, `-: document 3: decoding Deployment: .*spec.replicas`},
		{"a document without kind", good + "---\napiVersion: v1\nmetadata: {name: x}\n", []string{"preview", "-f", "-"}, 2, "document 2: field kind is missing"},
		{"a scalar document", "just text\n", []string{"preview", "-f", "-"}, 2, "document 1: not an object"},
		{"an unknown admission mode", good, []string{"preview", "-f", "-", "--admission-mode", "kyverno"}, 2, `--admission-mode must be webhook or native, not "kyverno"`},
		{"the installation decides the mode", good, []string{"preview", "-f", "-", "--cluster", "--admission-mode", "native"}, 2, `admission-mode.*conflicts with --cluster`},
		{"an invalid policy names the field", good, []string{"preview", "-f", "-", "--policy", "testdata/invalid-policy.yaml"}, 2, `invalid-policy.yaml: document 1: invalid HAPolicy "broken": spec.tolerations.notReadySeconds: Invalid value: 7200`},
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

// TestPreviewNativeMode: --admission-mode=native stores the Deployment as it is and
// shows its pods as native mode's admission policy makes them: injected without the
// replica count (a one-replica Deployment's pods get the anti-affinity the webhook
// skips), with native mode's record; the first line on stderr says which mode.
func TestPreviewNativeMode(t *testing.T) {
	one := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: one}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: one}}\n  template:\n    metadata: {labels: {app: one}}\n    spec: {containers: [{name: a, image: a}]}\n"
	webhook := runCLI(t, one, "preview", "-f", "-", "--pods")
	require.Equal(t, 0, webhook.code, webhook.stderr)
	assert.True(t, strings.HasPrefix(webhook.stderr, "admission mode: webhook "), webhook.stderr)
	assert.Contains(t, webhook.stderr, "Deployment one: antiAffinity: skipped")

	r := runCLI(t, one, "preview", "-f", "-", "--pods", "--admission-mode=native")
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, strings.HasPrefix(r.stderr, "admission mode: native "), r.stderr)
	assert.Contains(t, r.stderr, "Deployment one: antiAffinity: applied: its pods: Preferred")
	docs := splitDocs(r.stdout)
	require.Len(t, docs, 2, "the Deployment as it is, then its pod")
	assert.YAMLEq(t, one, docs[0])
	var pod corev1.Pod
	require.NoError(t, yaml.Unmarshal([]byte(docs[1]), &pod))
	assert.Equal(t, policies.NativeRecord("default", []policies.Feature{policies.FeatureAntiAffinity, policies.FeatureZoneSpread, policies.FeatureTolerations, policies.FeatureSysctls}),
		pod.Annotations[policies.StatusAnnotation])
	assert.NotNil(t, pod.Spec.Affinity)
	assert.Equal(t, "ReplicaSet", pod.OwnerReferences[0].Kind)
}

func TestPreviewOutputIsValidForTheTypes(t *testing.T) {
	// Every mutated Pod decodes strictly: the output has no stray fields.
	in := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: p}}\nspec: {containers: [{name: a, image: a}]}\n"
	r := runCLI(t, in, "preview", "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict([]byte(r.stdout), &pod))
	assert.Equal(t, policies.SysctlContainerName, pod.Spec.InitContainers[0].Name)
}

func TestRootCommand(t *testing.T) {
	r := runCLI(t, "")
	assert.Equal(t, 0, r.code, "bare ha-injector is a request for help")
	assert.Contains(t, r.stdout, "Available Commands:")
	for _, sub := range []string{"preview", "serve", "doctor", "crds", "version"} {
		assert.Regexp(t, `(?m)^  `+sub+` `, r.stdout)
	}
	assert.Empty(t, r.stderr)

	r = runCLI(t, "", "--version")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "ha-injector version")

	r = runCLI(t, "", "version")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `^ha-injector dev\ngo go1\.\d+`, r.stdout)
	assert.Regexp(t, `(?m)^k8s\.io/client-go v0\.\d+\.\d+$`, r.stdout, "the Kubernetes library it talks to the API server with")
	assert.Regexp(t, `(?m)^sigs\.k8s\.io/controller-runtime v0\.\d+\.\d+$`, r.stdout)
	r = runCLI(t, "", "version", "extra")
	assert.Equal(t, 2, r.code)

	r = runCLI(t, "", "bogus")
	assert.Equal(t, 2, r.code, "an unknown command is a usage error")

	r = runCLI(t, "", "preview", "--help")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "--namespace-labels")
}

// TestExamplePoliciesAreValid previews the example with every policy under
// examples/, so a policy documented in docs/ cannot rot; and none gets a warning: the
// examples follow the documentation's advice (a not-ready toleration that rides out a
// kubelet hiccup).
func TestExamplePoliciesAreValid(t *testing.T) {
	files, err := filepath.Glob("../../examples/policy-*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := runCLI(t, "", "preview", "-f", "../../examples/web-server.yaml", "--policy", f)
			assert.Equal(t, 0, r.code, r.stderr)
			assert.Contains(t, r.stderr, "Deployment web-server: ")
			assert.NotContains(t, r.stderr, "warning: "+f, "an example policy the documentation advises against")
		})
	}
}

func TestPreviewPolicyFileWithSeveralPolicies(t *testing.T) {
	dir := t.TempDir()
	two := filepath.Join(dir, "two.yaml")
	require.NoError(t, os.WriteFile(two, []byte(`apiVersion: ha-injector.io/v1alpha1
kind: HAPolicy
metadata: {name: relaxed}
spec: {antiAffinity: {type: Preferred}}
---
apiVersion: ha-injector.io/v1alpha1
kind: HAPolicy
metadata: {name: strict}
spec: {antiAffinity: {type: Required}}
`), 0o600))
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: p}}\nspec: {containers: [{name: a, image: a}]}\n"

	r := runCLI(t, pod, "preview", "-f", "-", "--policy", two)
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "2 HAPolicies (relaxed, strict): pick one with --policy-name", "never silently the first")
	assert.Empty(t, r.stdout)

	r = runCLI(t, pod, "preview", "-f", "-", "--policy", two, "--policy-name", "strict")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "Pod p: antiAffinity: note: Required made Preferred", "the strict policy, on a pod whose replicas are unknown")

	r = runCLI(t, pod, "preview", "-f", "-", "--policy", two, "--policy-name", "nope")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, `no HAPolicy named "nope" (it has relaxed, strict)`)

	r = runCLI(t, pod, "preview", "-f", "-", "--policy-name", "strict")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--policy-name needs --policy")

	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("apiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: a}\n---\napiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: b}\nspec: {antiAffinity: {typo: x}}\n"), 0o600))
	r = runCLI(t, pod, "preview", "-f", "-", "--policy", bad, "--policy-name", "a")
	assert.Equal(t, 2, r.code, "every document of the file must be a valid HAPolicy")
	assert.Contains(t, r.stderr, "bad.yaml: document 2: ")
	assert.Contains(t, r.stderr, "typo")
}

// TestPreviewWarnsAboutUnwiseTolerations: a not-ready toleration shorter than a kubelet
// hiccup is valid, and warned about; a short unreachable one is not.
func TestPreviewWarnsAboutUnwiseTolerations(t *testing.T) {
	zero := filepath.Join(t.TempDir(), "eager.yaml")
	require.NoError(t, os.WriteFile(zero, []byte("apiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: eager}\nspec: {tolerations: {notReadySeconds: 20, unreachableSeconds: 5}}\n"), 0o600))
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: p}}\nspec: {containers: [{name: a, image: a}]}\n"
	r := runCLI(t, pod, "preview", "-f", "-", "--policy", zero)
	require.Equal(t, 0, r.code, "valid, only unwise")
	assert.Contains(t, r.stderr, "warning: "+zero+": HAPolicy eager: spec.tolerations.notReadySeconds is 20, under 30: pods are evicted when a live kubelet reports NotReady for longer, as during a container runtime or CNI restart, and restarted for nothing")
	assert.NotContains(t, r.stderr, "unreachableSeconds")
}

// TestPreviewReadsInputsAsKubectlDoes: a directory (its manifests only, subdirectories
// with -R), a URL, stdin and files, in the order given; no object at all is an error.
func TestPreviewReadsInputsAsKubectlDoes(t *testing.T) {
	pod := func(name string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", labels: {app: x}}\nspec: {containers: [{name: a, image: a}]}\n"
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b.yaml"), []byte(pod("b")), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.json"), []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"app":"x"}},"spec":{"containers":[{"name":"a","image":"a"}]}}`), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a manifest"), 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "c.yml"), []byte(pod("c")), 0o600))
	names := func(stderr string) []string {
		var out []string
		for _, m := range regexp.MustCompile(`(?m)Pod (\w+): antiAffinity`).FindAllStringSubmatch(stderr, -1) {
			out = append(out, m[1])
		}
		return out
	}

	r := runCLI(t, "", "preview", "-f", dir)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, []string{"a", "b"}, names(r.stderr), "the directory's manifests in name order, not its other files or subdirectories")

	r = runCLI(t, pod("s"), "preview", "-R", "-f", dir, "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, []string{"a", "b", "c", "s"}, names(r.stderr), "-R reads subdirectories; -f in the order given")

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/u.yaml" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(pod("u")))
	}))
	defer srv.Close()
	r = runCLI(t, "", "preview", "-f", srv.URL+"/u.yaml")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, []string{"u"}, names(r.stderr))
	r = runCLI(t, "", "preview", "-f", srv.URL+"/missing.yaml")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "missing.yaml: HTTP 404")

	empty := filepath.Join(dir, "sub", "empty")
	require.NoError(t, os.Mkdir(empty, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(empty, "nothing.yaml"), []byte("# only a comment\n---\n"), 0o600))
	r = runCLI(t, "", "preview", "-f", empty)
	assert.Equal(t, 2, r.code, "an input error, not a silent success")
	assert.Contains(t, r.stderr, "no objects passed to preview")
	assert.Empty(t, r.stdout)
	r = runCLI(t, "", "preview", "-f", "-")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "no objects passed to preview (in -)")
}

func TestPreviewReportAndExitCode(t *testing.T) {
	example := filepath.Join("..", "..", "examples", "web-server.yaml")
	reportFile := filepath.Join(t.TempDir(), "report.json")
	r := runCLI(t, "", "preview", "-f", example, "--report", reportFile, "--pod-security-default-level", "baseline")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "Deployment web-server: antiAffinity: applied", "the text lines stay on stderr")
	data, err := os.ReadFile(reportFile)
	require.NoError(t, err)
	var report []map[string]any
	require.NoError(t, json.Unmarshal(data, &report))
	require.NotEmpty(t, report)
	assert.Equal(t, strings.Count(r.stderr, "\n")-1, len(report), "one entry per decision line (the first says the mode)")
	first := report[0]
	assert.Equal(t, example, first["file"])
	assert.Equal(t, 1.0, first["document"])
	assert.Equal(t, "apps/v1", first["apiVersion"])
	assert.Equal(t, "Deployment", first["kind"])
	assert.Equal(t, "web-server", first["name"])
	assert.Equal(t, "antiAffinity", first["feature"])
	assert.Equal(t, "applied", first["action"])
	var fallbacks []any
	for _, e := range report {
		if e["fallback"] != nil {
			fallbacks = append(fallbacks, e["fallback"])
		}
	}
	assert.Contains(t, fallbacks, "pod-security", "baseline moves the sysctls: the fallback is named")

	// --report - replaces the text lines with the JSON; stdout is the manifest as ever.
	r = runCLI(t, "", "preview", "-f", example, "--report", "-")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stderr), &report))
	assert.Contains(t, r.stdout, "kind: Deployment")

	// --exit-code: 1 when a document would change (everything still written), 0 when none
	// would: the mutated output, previewed again, is left alone.
	r = runCLI(t, "", "preview", "-f", example, "--exit-code")
	assert.Equal(t, 1, r.code, r.stderr)
	assert.Contains(t, r.stdout, "ha-injector.io/status")
	assert.NotContains(t, r.stderr, "Error")
	again := runCLI(t, r.stdout, "preview", "-f", "-", "--exit-code")
	assert.Equal(t, 0, again.code, again.stderr)
	assert.Equal(t, r.stdout, again.stdout)
}

// TestPreviewReportsThePodsOfEveryWorkloadKind: the webhook does not mutate a StatefulSet,
// a Job or a CronJob, but it does mutate their pods. preview writes the object unchanged
// and reports the decisions for those pods; a kind without pods gets its own line.
func TestPreviewReportsThePodsOfEveryWorkloadKind(t *testing.T) {
	template := `{metadata: {labels: {app: w}}, spec: {containers: [{name: a, image: a}]}}`
	in := strings.Join([]string{
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec: {replicas: 3, serviceName: db, selector: {matchLabels: {app: w}}, template: " + template + "}\n",
		"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec: {selector: {matchLabels: {app: w}}, template: " + template + "}\n",
		"apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs, annotations: {ha-injector.io/inject: \"false\"}}\nspec: {selector: {matchLabels: {app: w}}, template: " + template + "}\n",
		"apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc}\nspec: {template: " + template + "}\n",
		"apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec: {template: {metadata: {labels: {app: w}}, spec: {restartPolicy: Never, containers: [{name: a, image: a}]}}}\n",
		"apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec: {schedule: \"0 3 * * *\", jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: a, image: a}], tolerations: [{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 10}]}}}}}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 80}]}\n",
	}, "---\n")
	r := runCLI(t, in, "preview", "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, in, r.stdout, "the objects are stored as they are: the webhook mutates their pods")
	for _, line := range []string{
		"-: document 1: StatefulSet db: antiAffinity: applied: its pods: Preferred pod anti-affinity",
		// DefaultTolerationSeconds gave the pod 300 s before the webhook sees it.
		"-: document 1: StatefulSet db: tolerations: applied: its pods: node.kubernetes.io/not-ready shortened 300s -> 60s",
		"-: document 2: DaemonSet agent: workload: skipped: its pods: owned by DaemonSet agent: one pod per node by design",
		"-: document 3: ReplicaSet rs: workload: skipped: its pods: opted out by annotation ha-injector.io/inject=false on its ReplicaSet rs",
		"-: document 4: ReplicationController rc: tolerations: applied: its pods:",
		"-: document 5: Job once: sysctls: applied: its pods:",
		// A CronJob's pods are its Jobs': a toleration it sets is kept when shorter.
		"-: document 6: CronJob nightly: tolerations: kept: its pods: node.kubernetes.io/not-ready already 10s",
		"-: document 7: Service db: workload: skipped: the webhook mutates Pods and Deployments, and the pods of workloads; a Service is stored as it is",
	} {
		assert.Contains(t, r.stderr, line)
	}
	r = runCLI(t, "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec: {replicas: many}\n", "preview", "-f", "-")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "-: document 1: decoding StatefulSet")
}

// TestPreviewProcessesTheItemsOfAList: what `kubectl get deploy,pod -o yaml` prints, a v1
// List, is previewed item by item and written back as a List.
func TestPreviewProcessesTheItemsOfAList(t *testing.T) {
	list := `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings}
- apiVersion: v1
  kind: Pod
  metadata: {name: p, labels: {app: p}}
  spec: {containers: [{name: a, image: a}]}
metadata:
  resourceVersion: ""
`
	r := runCLI(t, list, "preview", "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "-: document 1: item 1: ConfigMap settings: workload: skipped:")
	assert.Contains(t, r.stderr, "-: document 1: item 2: Pod p: antiAffinity: applied:")
	var out struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Items      []struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
		} `json:"items"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(r.stdout), &out), r.stdout)
	assert.Equal(t, "List", out.Kind)
	require.Len(t, out.Items, 2)
	assert.Equal(t, "ConfigMap", out.Items[0].Kind)
	assert.Empty(t, out.Items[0].Metadata.Annotations, "unchanged")
	assert.NotEmpty(t, out.Items[1].Metadata.Annotations[policies.StatusAnnotation], "the Pod injected")
	assert.Less(t, strings.Index(r.stdout, "items:"), strings.Index(r.stdout, "metadata:\n  resourceVersion"), "the List's keys in their order")

	r = runCLI(t, "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Pod, metadata: {name: x}, spec: {containers: nope}}]\n", "preview", "-f", "-")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "-: document 1: item 1: decoding Pod")
}

// TestPreviewPodsPrintsThePodsOfWorkloads: --pods adds, after a StatefulSet, the pod its
// controller creates as the webhook makes it, and says what was emulated.
func TestPreviewPodsPrintsThePodsOfWorkloads(t *testing.T) {
	sts := "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: shop}\nspec: {serviceName: db, selector: {matchLabels: {app: db}}, template: {metadata: {labels: {app: db}}, spec: {containers: [{name: a, image: a}]}}}\n"
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 80}]}\n"
	r := runCLI(t, sts+"---\n"+svc, "preview", "-f", "-", "--pods", "--exit-code")
	require.Equal(t, 0, r.code, "the StatefulSet itself does not change: %s", r.stderr)
	docs := strings.Split(r.stdout, "\n---\n")
	require.Len(t, docs, 3, r.stdout)
	assert.Equal(t, sts, docs[0]+"\n", "the StatefulSet as it was")
	assert.Contains(t, docs[1], "# ha-injector preview --pods: a pod of -: document 1 as the webhook makes it, after the API server's\n# DefaultTolerationSeconds; no other admission plugin is emulated.")
	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs[1]), &pod), docs[1])
	assert.Equal(t, "db-", pod.GenerateName)
	assert.Equal(t, "shop", pod.Namespace)
	assert.Equal(t, "StatefulSet", pod.OwnerReferences[0].Kind)
	assert.NotEmpty(t, pod.Annotations[policies.StatusAnnotation])
	seconds := map[string]int64{}
	for _, tol := range pod.Spec.Tolerations {
		seconds[tol.Key] = *tol.TolerationSeconds
	}
	assert.Equal(t, map[string]int64{"node.kubernetes.io/not-ready": 60, "node.kubernetes.io/unreachable": 30}, seconds, "DefaultTolerationSeconds' 300 s, shortened")
	assert.NotContains(t, docs[1], "creationTimestamp")
	assert.Equal(t, svc, docs[2])

	r = runCLI(t, sts, "preview", "-f", "-")
	assert.NotContains(t, r.stdout, "kind: Pod", "only with --pods")
}

func TestPreviewKeepsTheCommentAboveAMutatedDocument(t *testing.T) {
	in := "# the web pod\napiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: p}}\nspec:\n  containers: [{name: a, image: a}]\n"
	r := runCLI(t, in, "preview", "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, strings.HasPrefix(r.stdout, "# the web pod\napiVersion: v1\n"), r.stdout)
	assert.Contains(t, r.stdout, policies.StatusAnnotation, "it was mutated")
}

func TestPreviewKeepsTheCommentsOfAMutatedDocument(t *testing.T) {
	in := "# the pod\napiVersion: v1\nkind: Pod   # kind\nmetadata:\n  name: p   # its name\n  labels: {app: p}\nspec:\n  containers:\n  # main\n  - name: a   # the app\n    image: a\n  tolerations:\n  - {key: dedicated, operator: Exists}   # our nodes\n"
	r := runCLI(t, in, "preview", "-f", "-")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, policies.StatusAnnotation, "it was mutated")
	for _, kept := range []string{"# the pod\napiVersion: v1\n", "kind: Pod # kind\n", "  name: p # its name\n", "    # main\n    - name: a # the app\n", "    - key: dedicated # our nodes\n"} {
		assert.Contains(t, r.stdout, kept)
	}
}

// TestPreviewEdgesFoundInReview: each case a reviewer broke preview with.
func TestPreviewEdgesFoundInReview(t *testing.T) {
	dir := t.TempDir()
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: p}}\nspec: {containers: [{name: a, image: a}]}\n"

	t.Run("a report file that cannot be written: nothing on stdout", func(t *testing.T) {
		r := runCLI(t, pod, "preview", "-f", "-", "--report", filepath.Join(dir, "no", "such", "dir", "r.json"))
		assert.Equal(t, 2, r.code)
		assert.Empty(t, r.stdout)
	})
	t.Run("--report -: stderr is JSON only, the policy's warning in it", func(t *testing.T) {
		zero := filepath.Join(dir, "zero.yaml")
		require.NoError(t, os.WriteFile(zero, []byte("apiVersion: ha-injector.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: eager}\nspec: {tolerations: {notReadySeconds: 0}}\n"), 0o600))
		r := runCLI(t, pod, "preview", "-f", "-", "--policy", zero, "--report", "-")
		require.Equal(t, 0, r.code, r.stderr)
		var report []map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.stderr), &report), r.stderr)
		assert.Equal(t, "warning", report[0]["action"])
		assert.Equal(t, "HAPolicy", report[0]["kind"])
	})
	t.Run("List items are told apart in the report; an empty List gets a line", func(t *testing.T) {
		list := "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(strings.TrimSpace(pod), "\n", "\n  ") + "\n- " + strings.ReplaceAll(strings.TrimSpace(pod), "\n", "\n  ") + "\n---\napiVersion: v1\nkind: List\nitems: []\n"
		r := runCLI(t, list, "preview", "-f", "-", "--report", "-")
		require.Equal(t, 0, r.code, r.stderr)
		var report []map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.stderr), &report), r.stderr)
		items := map[float64]bool{}
		for _, e := range report {
			if e["document"] == 1.0 {
				items[e["item"].(float64)] = true
			}
		}
		assert.Equal(t, map[float64]bool{1: true, 2: true}, items)
		last := report[len(report)-1]
		assert.Equal(t, 2.0, last["document"])
		assert.Equal(t, "a List without items", last["reason"])
	})
	t.Run("a Job named by generateName", func(t *testing.T) {
		job := "apiVersion: batch/v1\nkind: Job\nmetadata: {generateName: migrate-}\nspec: {template: {metadata: {labels: {app: m}}, spec: {restartPolicy: Never, containers: [{name: a, image: a}]}}}\n"
		r := runCLI(t, job, "preview", "-f", "-", "--pods")
		require.Equal(t, 0, r.code, r.stderr)
		assert.Contains(t, r.stderr, "Job migrate-*: ")
		assert.Contains(t, r.stdout, "generateName: migrate-\n", "the pod's prefix is the Job's")
		r = runCLI(t, "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {schedule: \"* * * * *\"}\n", "preview", "-f", "-")
		assert.Equal(t, 2, r.code)
		assert.Contains(t, r.stderr, "CronJob c has no pod template with containers")
	})
	t.Run("a second file opening with a marker and a byte order mark", func(t *testing.T) {
		a := filepath.Join(dir, "a.yaml")
		b := filepath.Join(dir, "b.yaml")
		require.NoError(t, os.WriteFile(a, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"), 0o600))
		require.NoError(t, os.WriteFile(b, []byte("\xef\xbb\xbf---\n# b\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n"), 0o600))
		r := runCLI(t, "", "preview", "-f", a, "-f", b)
		require.Equal(t, 0, r.code, r.stderr)
		assert.Equal(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# b\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n", r.stdout)
		again := runCLI(t, r.stdout, "preview", "-f", "-")
		require.Equal(t, 0, again.code, again.stderr)
		assert.Contains(t, again.stderr, "-: document 2: ConfigMap b:", "its own output reads back with the same numbering")
	})
	t.Run("--policy with a List of HAPolicies, and two of one name", func(t *testing.T) {
		list := filepath.Join(dir, "policies.yaml")
		require.NoError(t, os.WriteFile(list, []byte("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: ha-injector.io/v1alpha1, kind: HAPolicy, metadata: {name: x}}\n- {apiVersion: ha-injector.io/v1alpha1, kind: HAPolicy, metadata: {name: x}}\n- {apiVersion: ha-injector.io/v1alpha1, kind: HAPolicy, metadata: {name: other}}\n"), 0o600))
		r := runCLI(t, pod, "preview", "-f", "-", "--policy", list, "--policy-name", "other")
		require.Equal(t, 0, r.code, r.stderr)
		r = runCLI(t, pod, "preview", "-f", "-", "--policy", list, "--policy-name", "x")
		assert.Equal(t, 2, r.code)
		assert.Contains(t, r.stderr, `2 HAPolicies named "x"`)
	})
}
