package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

// demoRun is what runDemo saw: the demo's output, each command's, and the node that
// kill-node killed.
type demoRun struct {
	text       string
	kubectlOut map[string]string
	killed     string
}

// runDemo runs `make demo`'s program as a process, with the short node timings, to the
// point where it waits for Ctrl-C; runs the real kubectl with each of kubectlArgs,
// `ha-injector doctor` (under "doctor") and kill-node (under "kill-node") with the
// kubeconfig it printed, checking the pods and the killed node with client-go; then sends
// it SIGINT, as Ctrl-C does, and checks it exits with status 0 and cleaned up.
func runDemo(t *testing.T, native bool, kubectlArgs map[string][]string) demoRun {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	require.NoError(t, err, "the demo test drives kubectl, as a user would")
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	bin := filepath.Join(t.TempDir(), "demo")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	b, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./hack/demo: %s", b)
	mode := "webhook"
	if native {
		mode = "native"
	}
	demo := exec.CommandContext(ctx, bin, "-mode="+mode, "-timings=short")
	demo.Dir = root
	// Should this test's process die without stopping it, the demo dies too (its own
	// children follow it: proc.Start).
	demo.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := demo.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	demo.Stderr = &stderr
	started := time.Now()
	require.NoError(t, demo.Start())
	var mu sync.Mutex
	var out strings.Builder
	ready := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			// The last line before the demo waits for Ctrl-C.
			if strings.HasPrefix(sc.Text(), "(logs: ") {
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	text := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	select {
	case <-ready:
	case <-scanned:
		_ = demo.Wait()
		t.Fatalf("the demo ended before it was ready:\n%s\n%s", text(), stderr.String())
	case <-ctx.Done():
		t.Fatalf("the demo was not ready in time:\n%s\n%s", text(), stderr.String())
	}
	t.Logf("ready %.1f s after start", time.Since(started).Seconds())

	m := regexp.MustCompile(`(?m)^export KUBECONFIG=(\S+)$`).FindStringSubmatch(text())
	require.NotNil(t, m, "a line of its own with export KUBECONFIG=...:\n%s", text())
	kubeconfig := m[1]
	assert.True(t, filepath.IsAbs(kubeconfig), "an absolute path")
	run := demoRun{kubectlOut: map[string]string{}}
	for name, args := range kubectlArgs {
		cmd := exec.CommandContext(ctx, kubectl, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		b, err := cmd.CombinedOutput()
		assert.NoError(t, err, "kubectl %v: %s", args, b)
		run.kubectlOut[name] = string(b)
	}
	// What the README says to run against it: the real command, exit status 0.
	cmd := exec.CommandContext(ctx, "go", "run", "./cmd/ha-injector", "doctor")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	b, err = cmd.CombinedOutput()
	assert.NoError(t, err, "ha-injector doctor against the demo:\n%s", b)
	run.kubectlOut["doctor"] = string(b)

	cs, err := clientFor(kubeconfig)
	require.NoError(t, err)
	checkPods(ctx, t, cs)

	// The node the demo says to kill: kill-node (the program make demo-kill-node runs)
	// returns once the node lifecycle controller has tainted it.
	km := regexp.MustCompile(`make demo-kill-node NODE=(\S+)`).FindStringSubmatch(text())
	require.NotNil(t, km, "the demo says which node to kill:\n%s", text())
	run.killed = km[1]
	kill := exec.CommandContext(ctx, bin, "kill-node", run.killed, "-kubeconfig", kubeconfig, "-until=tainted", "-timeout=90s")
	b, err = kill.CombinedOutput()
	assert.NoError(t, err, "kill-node %s:\n%s", run.killed, b)
	run.kubectlOut["kill-node"] = string(b)
	node, err := cs.CoreV1().Nodes().Get(ctx, run.killed, metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotEqual(t, corev1.ConditionTrue, readyStatus(node), "the killed node is not Ready")
	assert.True(t, hasTaint(node, corev1.TaintNodeUnreachable), "the killed node is tainted unreachable: %v", node.Spec.Taints)

	// Ctrl-C.
	require.NoError(t, demo.Process.Signal(syscall.SIGINT))
	waited := make(chan error, 1)
	go func() { <-scanned; waited <- demo.Wait() }()
	select {
	case err := <-waited:
		require.NoError(t, err, "exit status 0 after Ctrl-C:\n%s\n%s", text(), stderr.String())
	case <-time.After(90 * time.Second):
		_ = demo.Process.Kill()
		t.Fatalf("the demo did not stop after SIGINT:\n%s", text())
	}
	run.text = text()
	assert.NoFileExists(t, kubeconfig, "cleaned up on exit")
	assert.Contains(t, run.text, "ha-injector.io/status:")
	assert.Contains(t, run.text, "podAntiAffinity:")
	assert.Contains(t, run.text, "name: ha-sysctl")
	assert.Contains(t, run.text, "tolerationSeconds: 60")
	assert.Contains(t, run.text, "dropped net.ipv4.tcp_retries2=9", "the restricted namespace's warning")
	assert.Regexp(t, `(?m)^ok    probe +in namespace demo \(policy default`, run.text, "doctor's decisive check")
	assert.Regexp(t, `(?m)^ok    probe +in namespace demo-restricted \(policy default, Pod Security restricted\)`, run.text)
	assert.NotRegexp(t, `(?m)^fail  `, run.text, "doctor finds nothing failed in the demo")
	assert.Contains(t, run.kubectlOut["doctor"], "ok    probe")
	// The pods, printed with their nodes, side by side.
	assert.Regexp(t, `(?m)^NAMESPACE +NAME +READY +STATUS +RESTARTS +IP +NODE +ZONE +UNREACHABLE TOLERATED$`, run.text)
	assert.Regexp(t, `(?m)^demo +web-server-\S+ +1/1 +Running +0 +\S+ +zone-[abc]-[12] +zone-[abc] +30 s$`, run.text)
	assert.Regexp(t, `(?m)^demo-plain +web-server-\S+ +1/1 +Running +0 +\S+ +zone-[abc]-[12] +zone-[abc] +300 s$`, run.text)
	// doctor sees the nodes, in the demo's report and in the command's.
	for _, report := range []string{run.text, run.kubectlOut["doctor"]} {
		nm := regexp.MustCompile(`(?m)^ok    nodes +(\d+) nodes`).FindStringSubmatch(report)
		require.NotNil(t, nm, "doctor's nodes check:\n%s", report)
		n, err := strconv.Atoi(nm[1])
		require.NoError(t, err)
		assert.Equal(t, len(zones), n, "doctor counts the demo's nodes")
	}
	assert.Contains(t, run.kubectlOut["kill-node"], "Killed "+run.killed)
	assert.Contains(t, run.kubectlOut["kill-node"], run.killed+" is tainted node.kubernetes.io/unreachable after")
	return run
}

// checkPods asserts what the demo is for: the opted-in namespace's 3 pods Running on 3
// nodes in 3 zones, with the injected anti-affinity, tolerations and init container, and
// the same Deployment's pods without any in the namespace that does not opt in.
func checkPods(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	zoneOf := map[string]string{}
	for _, n := range nodes.Items {
		zoneOf[n.Name] = n.Labels[corev1.LabelTopologyZone]
	}
	for _, ns := range []string{optedIn, notOptedIn} {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web-server"})
		require.NoError(t, err)
		require.Len(t, pods.Items, 3, ns)
		onNodes, inZones := map[string]bool{}, map[string]bool{}
		for _, p := range pods.Items {
			assert.Equal(t, corev1.PodRunning, p.Status.Phase, "%s/%s", ns, p.Name)
			onNodes[p.Spec.NodeName], inZones[zoneOf[p.Spec.NodeName]] = true, true
			var inits []string
			for _, c := range p.Spec.InitContainers {
				inits = append(inits, c.Name)
			}
			if ns == optedIn {
				assert.Equal(t, []string{"ha-sysctl"}, inits, p.Name)
				assert.Equal(t, strconv.Itoa(int(v1alpha1.DefaultUnreachable))+" s", unreachableToleration(&p), p.Name)
				assert.NotEmpty(t, p.Annotations[policies.StatusAnnotation], p.Name)
				require.NotNil(t, p.Spec.Affinity, p.Name)
				assert.NotNil(t, p.Spec.Affinity.PodAntiAffinity, p.Name)
				assert.NotEmpty(t, p.Spec.TopologySpreadConstraints, p.Name)
			} else {
				assert.Empty(t, inits, p.Name)
				assert.Equal(t, "300 s", unreachableToleration(&p), "the API server's default: %s", p.Name)
				assert.Empty(t, p.Annotations[policies.StatusAnnotation], p.Name)
				assert.Nil(t, p.Spec.Affinity, p.Name)
			}
		}
		if ns == optedIn {
			assert.Len(t, onNodes, 3, "one pod per node")
			assert.Len(t, inZones, 3, "one pod per zone")
			assert.NotContains(t, inZones, "", "every node has a zone")
		}
	}
}

// TestDemo runs `make demo` (webhook mode): the webhook mutates the web-server
// Deployment, whose pods run one per zone; a killed node is tainted.
func TestDemo(t *testing.T) {
	run := runDemo(t, false, map[string][]string{
		"init container": {"-n", "demo", "get", "deployment", "web-server", "-o", "jsonpath={.spec.template.spec.initContainers[*].name}"},
		"tolerations":    {"-n", "demo", "get", "deployment", "web-server", "-o", "jsonpath={.spec.template.spec.tolerations[*].tolerationSeconds}"},
		"plain":          {"-n", "demo-plain", "get", "deployment", "web-server", "-o", "jsonpath={.spec.template.spec.initContainers[*].name}{.spec.template.spec.tolerations}"},
		"policies":       {"get", "hapolicies", "-o", "name"},
	})
	assert.Equal(t, "ha-sysctl", run.kubectlOut["init container"])
	assert.Equal(t, "60 30", run.kubectlOut["tolerations"])
	assert.Empty(t, run.kubectlOut["plain"], "demo-plain's Deployment is stored as created")
	assert.Equal(t, "hapolicy.ha-injector.io/default\n", run.kubectlOut["policies"])
}

// TestDemoNative runs `make demo MODE=native`: the API server injects the pods the
// ReplicaSet controller creates, from the chart's MutatingAdmissionPolicy, bound by
// serve, and there is no webhook configuration.
func TestDemoNative(t *testing.T) {
	run := runDemo(t, true, map[string][]string{
		"init container":   {"-n", "demo", "get", "pods", "-l", "app=web-server", "-o", "jsonpath={.items[*].spec.initContainers[*].name}"},
		"tolerations":      {"-n", "demo", "get", "pods", "-l", "app=web-server", "-o", "jsonpath={.items[0].spec.tolerations[*].tolerationSeconds}"},
		"deployment":       {"-n", "demo", "get", "deployment", "web-server", "-o", "jsonpath={.spec.template.spec.initContainers}"},
		"bindings":         {"get", "mutatingadmissionpolicybindings", "-o", "name"},
		"webhook configs":  {"get", "mutatingwebhookconfigurations", "-o", "name"},
		"admission policy": {"get", "mutatingadmissionpolicies", "-o", "name"},
	})
	assert.Contains(t, run.text, "serve --admission-mode=native")
	assert.Contains(t, run.text, `"native":true`, "the record native mode writes")
	assert.Regexp(t, `(?m)^ok    admission-mode +native`, run.text)
	assert.Equal(t, "ha-sysctl ha-sysctl ha-sysctl", run.kubectlOut["init container"])
	assert.Equal(t, "60 30", run.kubectlOut["tolerations"])
	assert.Empty(t, run.kubectlOut["deployment"], "native mode mutates pods, not Deployments")
	assert.Equal(t, "mutatingadmissionpolicybinding.admissionregistration.k8s.io/ha-injector-default\n", run.kubectlOut["bindings"])
	assert.Equal(t, "mutatingadmissionpolicy.admissionregistration.k8s.io/ha-injector\n", run.kubectlOut["admission policy"])
	assert.Empty(t, run.kubectlOut["webhook configs"])
}
