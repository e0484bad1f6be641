package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ha-injector/ha-injector/facts"
	"github.com/ha-injector/ha-injector/internal/native"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
	"github.com/ha-injector/ha-injector/webhook"
)

// nativeName is the name of native mode's two admission policies here, as the chart
// names them after its release.
const nativeName = "ha-injector"

// installNative installs native mode for the HAPolicy named policy (which must exist)
// as the chart and serve do (localwebhook.InstallNative), with the settings `serve` runs
// with in the benchmarks: its default --sysctl-image, the image of its version, which
// make build stamps from the chart's appVersion; the cluster's Pod Security default,
// which serve's --pod-security-default-level=auto finds.
func installNative(ctx context.Context, c client.Client, restCfg *rest.Config, root, policy string) (uninstall func(context.Context) error, err error) {
	level, err := facts.DetectPodSecurityDefault(restCfg)
	if err != nil {
		return nil, err
	}
	chart, err := chartrender.Load(root)
	if err != nil {
		return nil, err
	}
	serve := webhook.DefaultConfig()
	o := native.Options{Name: nativeName, Settings: policies.NativeSettings{
		SysctlImage: webhook.ImageRepository + ":" + chart.Metadata.AppVersion, AllowedSysctlImages: serve.AllowedSysctlImages,
		PodSecurity: policies.PodSecurityDefault{Level: level, Version: serve.PodSecurityDefaultVersion},
	}}
	return localwebhook.InstallNative(ctx, c, o, policy)
}

// nativeRecord reports whether the pod carries a record written by native mode's policy.
func nativeRecord(p *corev1.Pod) bool {
	r := policies.ReadRecord(p.Annotations)
	return r != nil && r.Native
}

// nativeNamespace is a namespace opted in to policy, which ours' webhook configuration
// leaves out by name (the chart's webhook.excludeNamespaces).
func nativeNamespace(name, policy string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{policies.PolicyLabel: policy}}}
}

// apiServerProfiles are the namespaces whose pod creation profileAPIServer profiles,
// by the name of the file each profile is written to.
var apiServerProfiles = []struct{ file, namespace string }{
	{"kube-apiserver-native.pprof", apiNativeNS},
	{"kube-apiserver-webhook.pprof", apiOursNS},
	{"kube-apiserver-no-admission.pprof", apiNoneNS},
	{"kube-apiserver-native-floor.pprof", apiFloorNS},
}

// profileAPIServer records, for each of apiServerProfiles, a CPU profile of
// kube-apiserver (its /debug/pprof/profile, as the benchmark's admin user) while
// concurrency clients create pods in that namespace for the whole profile, and writes
// it into dir.
func profileAPIServer(ctx context.Context, step func(string, ...any), c client.Client, restCfg *rest.Config, dir string, concurrency int, seconds int) error {
	hc, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range apiServerProfiles {
		path := filepath.Join(dir, p.file)
		step("Profiling kube-apiserver for %d s while %d clients create pods in %s, into %s", seconds, concurrency, p.namespace, path)
		loadCtx, stop := context.WithCancel(ctx)
		created := make(chan error, 1)
		var n int
		go func() {
			var err error
			for first := 0; loadCtx.Err() == nil && err == nil; first += apiBatch {
				var l []time.Duration
				l, err = createPods(loadCtx, c, p.namespace, 1_000_000+first, apiBatch, concurrency)
				n += len(l)
			}
			if loadCtx.Err() != nil {
				err = nil
			}
			created <- err
		}()
		profErr := fetchProfile(ctx, hc, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(restCfg.Host, "/"), seconds), path)
		stop()
		if err := errors.Join(profErr, <-created); err != nil {
			return fmt.Errorf("profiling kube-apiserver in %s: %w", p.namespace, err)
		}
		step("%d pods created in %s while profiling (about %.0f a second)", n, p.namespace, float64(n)/float64(seconds))
	}
	return nil
}

// fetchProfile GETs url with hc and writes the answer to path.
func fetchProfile(ctx context.Context, hc *http.Client, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, body)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// policyCheckMetric is the API server's count of a MutatingAdmissionPolicy's
// evaluations, by policy, binding and outcome (error_type).
const policyCheckMetric = "apiserver_mutating_admission_policy_check_total"

// policyChecks reads, from the API server's /metrics (as the benchmark's admin user),
// how many times it evaluated the MutatingAdmissionPolicy named policy, and how many of
// those evaluations ended in an error.
func policyChecks(ctx context.Context, hc *http.Client, restCfg *rest.Config, policy string) (total, failed float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(restCfg.Host, "/")+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("kube-apiserver /metrics: HTTP %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, 0, fmt.Errorf("kube-apiserver /metrics: %w", err)
	}
	for _, m := range families[policyCheckMetric].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["policy"] != policy {
			continue
		}
		total += m.GetCounter().GetValue()
		if labels["error_type"] != "no_error" {
			failed += m.GetCounter().GetValue()
		}
	}
	return total, failed, nil
}
