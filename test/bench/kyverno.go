package bench

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/proc"
)

// KyvernoVersion is the Kyverno release hack/kyverno.sh builds (its KYVERNO_VERSION).
const KyvernoVersion = "v1.19.1"

// ErrKyvernoNotBuilt is KyvernoBuild's answer when Kyverno is not in the cache and it
// was asked not to build it.
var ErrKyvernoNotBuilt = errors.New("Kyverno " + KyvernoVersion + " is not built")

// KyvernoBuild returns the folder hack/kyverno.sh builds Kyverno into (the binary, its
// CRDs and its chart). With build it builds it when it is not cached (a cold build is
// several GB and many minutes); without, it returns ErrKyvernoNotBuilt instead.
func KyvernoBuild(root string, build bool) (string, error) {
	cmd := exec.Command(filepath.Join(root, "hack", "kyverno.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = os.Stderr
	if !build {
		cmd.Args = append(cmd.Args, "--cached")
		cmd.Stderr = &stderr
	}
	out, err := cmd.Output()
	if err != nil {
		if !build {
			return "", fmt.Errorf("%w: %s", ErrKyvernoNotBuilt, strings.TrimSpace(stderr.String()))
		}
		return "", fmt.Errorf("hack/kyverno.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// kyvernoCRDDirs are the folders of Kyverno's CRDs in its build, for envtest.
func kyvernoCRDDirs(dir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "crds"))
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(dir, "crds", e.Name()))
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("no CRD folders in %s/crds", dir)
	}
	return dirs, nil
}

var (
	//go:embed kyverno/mutatingpolicy.yaml
	kyvernoMutatingPolicy []byte
	//go:embed kyverno/clusterpolicy.yaml
	kyvernoClusterPolicy []byte
)

// kyvernoForm is one of the two forms of Kyverno policy the benchmark measures.
type kyvernoForm struct {
	// kind is the policy's kind; file names its profile.
	kind, file string
	manifest   []byte
	// pathPrefix is the start of the path of the webhook Kyverno registers for it.
	pathPrefix string
}

var kyvernoForms = []kyvernoForm{
	{kind: "MutatingPolicy", file: "mutatingpolicy", manifest: kyvernoMutatingPolicy, pathPrefix: "/mpol/"},
	{kind: "ClusterPolicy", file: "clusterpolicy", manifest: kyvernoClusterPolicy, pathPrefix: "/mutate/"},
}

// kyvernoName is the peer's name in the rows.
func kyvernoName(form kyvernoForm) string {
	return fmt.Sprintf("kyverno %s, %s", KyvernoVersion, form.kind)
}

// Kyverno's names, as its chart installs it with release name and namespace "kyverno".
const (
	kyvernoNamespace  = "kyverno"
	kyvernoDeployment = "kyverno-admission-controller"
	kyvernoCASecret   = "kyverno-svc.kyverno.svc.kyverno-tls-ca"
	kyvernoWebhooks   = "kyverno-resource-mutating-webhook-cfg"
)

// kyvernoValues are the chart values the benchmark sets: the webhooks' namespace
// selector limited to the namespaces labelled kyvernoLabel, so that the API server
// sends Kyverno no pod of the other servers' namespaces; and admission reports off, so
// that Kyverno does not create an EphemeralReport through the API server for each pod
// it admits (the reports controller that would consume them is not running): Kyverno
// at its cheapest for this job.
func kyvernoValues() map[string]any {
	return map[string]any{
		"features": map[string]any{"admissionReports": map[string]any{"enabled": false}},
		"config": map[string]any{"webhooks": map[string]any{"namespaceSelector": map[string]any{
			"matchExpressions": []any{map[string]any{"key": kyvernoLabel, "operator": "Exists"}},
		}}},
	}
}

// kyvernoServer is Kyverno's admission controller running as a local process.
type kyvernoServer struct {
	proc  *proc.Process
	url   string
	ca    []byte
	pprof string
	c     client.Client
}

// startKyverno runs Kyverno's admission controller the way its developers run it
// outside a cluster (DEVELOPMENT.md, "Debugging local code"): with its chart rendered
// (kyvernoValues) and what a Deployment would get from it (the container's arguments
// and environment, its ConfigMaps in namespace kyverno) but --kubeconfig and
// --serverIP, so that it registers its webhooks by URL. It creates its own CA and
// serving certificate (for --serverIP's address) in Secrets, as in a cluster. It binds
// to 127.0.0.1 only, on free ports, with its profiling endpoint on, and returns once
// its readiness endpoint answers over TLS.
func startKyverno(ctx context.Context, c client.Client, dir, work, kubeconfig string) (*kyvernoServer, error) {
	chart, err := loader.Load(filepath.Join(dir, "chart"))
	if err != nil {
		return nil, err
	}
	r, err := chartrender.Render(chart, kyvernoValues(), chartrender.Options{ReleaseName: "kyverno", Namespace: kyvernoNamespace})
	if err != nil {
		return nil, fmt.Errorf("rendering Kyverno's chart: %w", err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kyvernoNamespace}}); err != nil {
		return nil, err
	}
	for _, name := range []string{"kyverno", "kyverno-metrics"} {
		cm := r.Get("ConfigMap", name)
		if cm == nil {
			return nil, fmt.Errorf("Kyverno's chart renders no ConfigMap %s", name)
		}
		if err := c.Create(ctx, cm.DeepCopy()); err != nil {
			return nil, err
		}
	}
	u := r.Get("Deployment", kyvernoDeployment)
	if u == nil {
		return nil, fmt.Errorf("Kyverno's chart renders no Deployment %s", kyvernoDeployment)
	}
	dep := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, dep); err != nil {
		return nil, err
	}
	var container *corev1.Container
	for i := range dep.Spec.Template.Spec.Containers {
		if dep.Spec.Template.Spec.Containers[i].Name == "kyverno" {
			container = &dep.Spec.Template.Spec.Containers[i]
		}
	}
	if container == nil {
		return nil, fmt.Errorf("Deployment %s has no container kyverno", kyvernoDeployment)
	}
	env, err := kyvernoEnv(container, work)
	if err != nil {
		return nil, err
	}
	// automemlimit sets GOMEMLIMIT to 90% of the container's memory limit in a cluster;
	// out of one it would take the machine's memory, so it gets what it would get.
	if limit, ok := container.Resources.Limits[corev1.ResourceMemory]; ok {
		env = append(env, fmt.Sprintf("GOMEMLIMIT=%d", limit.Value()*9/10))
	}

	addrs, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addrs[0])
	_, metricsPort, _ := net.SplitHostPort(addrs[1])
	_, profilePort, _ := net.SplitHostPort(addrs[2])
	// The chart's arguments, then the out-of-cluster ones (a later flag wins).
	args := append(container.Args,
		"--kubeconfig="+kubeconfig,
		"--serverIP="+addrs[0],
		"--webhookServerHost="+host, "--webhookServerPort="+port,
		"--metricsHost=127.0.0.1", "--metricsPort="+metricsPort,
		"--controllerRuntimeMetricsAddress="+addrs[3],
		"--profile=true", "--profileAddress=127.0.0.1", "--profilePort="+profilePort,
	)
	p, err := proc.Start("kyverno", filepath.Join(work, "kyverno.log"), filepath.Join(dir, "kyverno"), env, args...)
	if err != nil {
		return nil, err
	}
	k := &kyvernoServer{proc: p, url: "https://" + addrs[0], pprof: "http://" + addrs[2], c: c}
	if err := k.waitReady(ctx, 120*time.Second); err != nil {
		_ = p.Stop(15 * time.Second)
		return nil, fmt.Errorf("%w; its log ends:\n%s", err, proc.Tail(p.Log, 30))
	}
	return k, nil
}

// kyvernoEnv is the container's environment with the values a pod would get from the
// downward API and a writable TUF_ROOT.
func kyvernoEnv(container *corev1.Container, work string) ([]string, error) {
	var env []string
	for _, e := range container.Env {
		value := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			value = kyvernoNamespace
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			value = kyvernoDeployment + "-bench"
		case e.ValueFrom != nil:
			return nil, fmt.Errorf("Kyverno's container takes %s from %v, which the benchmark cannot give it", e.Name, e.ValueFrom)
		case e.Name == "TUF_ROOT":
			value = filepath.Join(work, "sigstore")
		}
		env = append(env, e.Name+"="+value)
	}
	return env, nil
}

// waitReady waits (bounded by timeout) for Kyverno's CA in its Secret, then for its
// readiness endpoint to answer 200 over TLS trusting that CA.
func (k *kyvernoServer) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for k.ca == nil {
		if err := k.proc.Alive(); err != nil {
			return err
		}
		var secret corev1.Secret
		err := k.c.Get(ctx, client.ObjectKey{Namespace: kyvernoNamespace, Name: kyvernoCASecret}, &secret)
		switch {
		case err == nil && len(secret.Data[corev1.TLSCertKey]) > 0:
			k.ca = secret.Data[corev1.TLSCertKey]
		case err != nil && !apierrors.IsNotFound(err):
			return err
		case time.Now().After(deadline):
			return fmt.Errorf("Kyverno made no CA in Secret %s/%s within %s", kyvernoNamespace, kyvernoCASecret, timeout)
		default:
			time.Sleep(200 * time.Millisecond)
		}
	}
	hc, err := loadgen.NewClient(k.ca, 1)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	return proc.WaitHTTP(ctx, hc, k.url+"/health/readiness", time.Until(deadline), k.proc.Alive)
}

// install creates the policy of form, waits (bounded) until Kyverno has registered its
// webhook for Pods and answers the benchmark's Pod CREATE with a patch, and returns the
// target to send it to: the path the API server calls.
func (k *kyvernoServer) install(ctx context.Context, form kyvernoForm, review loadgen.Request) (target, error) {
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(form.manifest, &obj.Object); err != nil {
		return target{}, fmt.Errorf("%s: %w", form.file, err)
	}
	if err := k.c.Create(ctx, obj); err != nil {
		return target{}, fmt.Errorf("creating Kyverno's %s: %w", form.kind, err)
	}
	t := target{name: kyvernoName(form), url: k.url, ca: k.ca, proc: k.proc, pprof: k.pprof}
	hc, err := loadgen.NewClient(k.ca, 1)
	if err != nil {
		return target{}, err
	}
	defer hc.CloseIdleConnections()
	last := "no webhook for pods registered"
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if err := k.proc.Alive(); err != nil {
			return target{}, err
		}
		hook, err := k.podWebhook(ctx, form)
		if err != nil {
			return target{}, err
		}
		if hook == nil {
			continue
		}
		if !selects(hook.NamespaceSelector, kyvernoLabel) {
			return target{}, fmt.Errorf("Kyverno registered its webhook %s with namespace selector %v, which does not require %s: the API server would send it the other servers' pods", hook.Name, hook.NamespaceSelector, kyvernoLabel)
		}
		t.path = hookPath(hook)
		answer, err := loadgen.Answer(ctx, hc, t.url+t.path, review.Body)
		switch {
		case err != nil:
			last = err.Error()
		case !answer.Allowed:
			last = fmt.Sprintf("not allowed: %v", answer.Result)
		case len(answer.Patch) == 0:
			last = "answered without a patch"
		default:
			return t, nil
		}
	}
	return target{}, fmt.Errorf("Kyverno did not mutate with its %s within 90s (%s); its log ends:\n%s", form.kind, last, proc.Tail(k.proc.Log, 30))
}

// podWebhook is the webhook Kyverno registered for form's policy on Pods, or nil if
// there is none yet.
func (k *kyvernoServer) podWebhook(ctx context.Context, form kyvernoForm) (*admissionregistrationv1.MutatingWebhook, error) {
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	if err := k.c.Get(ctx, client.ObjectKey{Name: kyvernoWebhooks}, &cfg); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	for i, h := range cfg.Webhooks {
		if !strings.HasPrefix(hookPath(&h), form.pathPrefix) {
			continue
		}
		for _, rule := range h.Rules {
			for _, res := range rule.Resources {
				if res == "pods" || res == "*" || res == "*/*" {
					return &cfg.Webhooks[i], nil
				}
			}
		}
	}
	return nil, nil
}

// hookPath is the path of a webhook registered by URL, or "".
func hookPath(h *admissionregistrationv1.MutatingWebhook) string {
	if h.ClientConfig.URL == nil {
		return ""
	}
	u, err := url.Parse(*h.ClientConfig.URL)
	if err != nil {
		return ""
	}
	return u.Path
}

// selects reports whether sel requires the label key to exist.
func selects(sel *metav1.LabelSelector, key string) bool {
	if sel == nil {
		return false
	}
	for _, e := range sel.MatchExpressions {
		if e.Key == key && e.Operator == metav1.LabelSelectorOpExists {
			return true
		}
	}
	return false
}

// uninstall deletes form's policy and waits (bounded) until Kyverno has taken its
// webhook away.
func (k *kyvernoServer) uninstall(ctx context.Context, form kyvernoForm) error {
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(form.manifest, &obj.Object); err != nil {
		return err
	}
	if err := k.c.Delete(ctx, obj); err != nil {
		return fmt.Errorf("deleting Kyverno's %s: %w", form.kind, err)
	}
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		hook, err := k.podWebhook(ctx, form)
		if err != nil {
			return err
		}
		if hook == nil {
			return nil
		}
	}
	return fmt.Errorf("Kyverno kept its webhook for the %s 90s after it was deleted", form.kind)
}
