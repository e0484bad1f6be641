// Package bench measures ha-injector's admission cost the way users meet it, side by
// side with a no-op webhook in the same run:
//
//   - AdmissionReview load over TLS against the real `ha-injector serve` binary and the
//     no-op server (test/bench/noop), alternating rounds so machine noise hits both
//     alike: the Pod and Deployment CREATE mix as fast as answered (throughput) and at
//     one fixed rate (latency); a ~1 MiB Pod of 1000 environment variables (latency, and
//     the heap serve allocates per request body byte); a Deployment UPDATE that
//     re-applies the manifest of an injected Deployment, the GitOps case (throughput);
//   - pod creation through a real kube-apiserver in a namespace opted in to ours and in
//     one opted in to the no-op webhook, registered the same way, so the ratio is our
//     handler's cost and not the webhook call's; in the same alternating batches, in a
//     namespace served by native mode (the API server applies the same policy itself)
//     and in one where no admission applies, with kube-apiserver's CPU time per pod;
//   - the memory of `serve` with 10,000 namespaces and 50,000 ReplicaSets carrying
//     2 KiB of annotations in its cache, against an empty cluster;
//   - zero failed requests across a replica's SIGTERM and a certificate rotation.
//
// Absolute numbers are printed, never asserted; rows with a target say whether it
// was met.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/webhook"
)

// Sizes are how much load each scenario gets.
type Sizes struct {
	// Concurrency is the number of connections of the admission load (and of the
	// Deployment UPDATE load, and the clients creating pods through the API server).
	Concurrency int
	// Rounds alternate the two servers; each round gives each server RoundTime.
	Rounds    int
	RoundTime time.Duration
	// LargeRequests are large Pods sent to serve, one at a time, to measure what it
	// allocates for each.
	LargeRequests int
	// BurstRounds are the rounds of BurstConcurrency of the largest Deployment UPDATEs.
	BurstRounds int
	// PodsPerNamespace are created through the API server in each of the four namespaces.
	PodsPerNamespace int
	// Namespaces, Policies and ReplicaSets (spread over the namespaces) fill the cache
	// for the memory scenario.
	Namespaces, Policies, ReplicaSets int
	// CrowdedReplicaSets are in the namespace of the crowded-UPDATE scenario, which sends
	// CrowdedUpdates template-changing Deployment UPDATEs a round.
	CrowdedReplicaSets, CrowdedUpdates int
	// ResilienceTime is the length of each resilience run.
	ResilienceTime time.Duration
}

// Full is what `make bench` runs.
var Full = Sizes{Concurrency: 8, Rounds: 3, RoundTime: 5 * time.Second, LargeRequests: 100, BurstRounds: 10, PodsPerNamespace: 2000, Namespaces: 10000, Policies: 100, ReplicaSets: 50000, CrowdedReplicaSets: 5000, CrowdedUpdates: 50, ResilienceTime: 9 * time.Second}

// Short is the version `make test` runs: every scenario, little load.
var Short = Sizes{Concurrency: 4, Rounds: 1, RoundTime: time.Second, LargeRequests: 10, BurstRounds: 2, PodsPerNamespace: 100, Namespaces: 300, Policies: 10, ReplicaSets: 600, CrowdedReplicaSets: 200, CrowdedUpdates: 5, ResilienceTime: 4 * time.Second}

// Row is one line of the report.
type Row struct {
	Scenario string   `json:"scenario"`
	Metric   string   `json:"metric"`
	Unit     string   `json:"unit"`
	Ours     float64  `json:"ours"`
	Baseline *float64 `json:"baseline"`
	Ratio    *float64 `json:"ratio"`
	// Target is what the row should reach, e.g. ">= 0.8" for a ratio; Met says if it did.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
	// RatioTarget is the bound of Target when Target is on the ratio (not on ours).
	RatioTarget *float64 `json:"ratioTarget,omitempty"`
}

func row(scenario, metric, unit string, ours float64, baseline *float64) Row {
	r := Row{Scenario: scenario, Metric: metric, Unit: unit, Ours: ours, Baseline: baseline}
	if baseline != nil && *baseline != 0 {
		r.Ratio = ptr.To(ours / *baseline)
	}
	return r
}

func (r Row) target(t string, met bool) Row {
	r.Target, r.Met = t, &met
	return r
}

// Profiles say which CPU profiles Run writes besides the rows; empty fields write none.
type Profiles struct {
	// Serve is the file of a profile of `serve` under the admission load.
	Serve string
	// APIServerDir is the folder of the profiles of kube-apiserver creating pods with
	// native mode, with ours' webhook and with no admission (apiServerProfiles).
	APIServerDir string
}

// Run builds the binaries, starts a control plane and the servers, runs every scenario
// and returns the rows. Progress goes to log.
func Run(ctx context.Context, sizes Sizes, log io.Writer, profiles Profiles) (rows []Row, err error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "ha-injector-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	step := func(format string, args ...any) { fmt.Fprintf(log, "==> "+format+"\n", args...) }

	step("Building ha-injector (make build, as the image does) and the no-op server")
	bin := filepath.Join(work, "bin")
	if out, err := exec.CommandContext(ctx, "make", "-C", root, "build", "BIN_DIR="+bin).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("make build: %v: %s", err, out)
	}
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(bin, "noop"), "./test/bench/noop")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build noop: %v: %s", err, out)
	}

	step("Starting kube-apiserver and etcd")
	env, err := controlplane.New(root)
	if err != nil {
		return nil, err
	}
	restCfg, err := env.Start()
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := env.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	restCfg.QPS, restCfg.Burst = 2000, 2000
	c, err := client.New(restCfg, client.Options{Scheme: webhook.Scheme})
	if err != nil {
		return nil, err
	}
	kubeconfig, err := writeKubeconfig(env, work)
	if err != nil {
		return nil, err
	}

	ca, err := certs.NewCA("ha-injector-bench-ca", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	certDir := filepath.Join(work, "certs")
	kp, _, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		return nil, err
	}
	if err := kp.WriteFiles(certDir, "tls.crt", "tls.key"); err != nil {
		return nil, err
	}
	for _, obj := range []client.Object{
		&v1alpha1.HAPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace, Labels: map[string]string{policies.PolicyLabel: "default"}}},
	} {
		if err := c.Create(ctx, obj); err != nil {
			return nil, err
		}
	}

	limits, err := readChartLimits(root)
	if err != nil {
		return nil, err
	}
	s := &servers{bin: bin, work: work, kubeconfig: kubeconfig, certDir: certDir, ca: ca.PEM, chart: limits}
	defer s.stopAll()

	// Memory first: an instance in the (nearly) empty cluster, then one started after
	// the cluster is filled, each measured after the same warm-up.
	step("Memory: serve in an empty cluster")
	empty, err := s.startOurs("serve-empty")
	if err != nil {
		return nil, err
	}
	emptyRSS, emptyHeap, err := s.memory(ctx, empty)
	if err != nil {
		return nil, err
	}
	if err := stopGracefully(empty.proc, 30*time.Second); err != nil {
		return nil, err
	}
	step("Memory: filling the cluster with %d namespaces, %d HAPolicies and %d ReplicaSets", sizes.Namespaces, sizes.Policies, sizes.ReplicaSets)
	start := time.Now()
	annotations, err := fill(ctx, c, sizes)
	if err != nil {
		return nil, err
	}
	step("Memory: filled in %s", time.Since(start).Round(time.Second))
	ours, err := s.startOurs("serve-1")
	if err != nil {
		return nil, err
	}
	fullRSS, fullHeap, err := s.memory(ctx, ours)
	if err != nil {
		return nil, err
	}
	scenario := fmt.Sprintf("memory, %d namespaces, %d ReplicaSets with %.1f KiB annotations, %d HAPolicies (baseline: empty cluster)",
		sizes.Namespaces, sizes.ReplicaSets, float64(annotations)/1024, sizes.Policies)
	rows = append(rows,
		row(scenario, "RSS", "MiB", float64(fullRSS)/mib, ptr.To(float64(emptyRSS)/mib)).target("<= 96", fullRSS <= 96*mib),
		row(scenario, "Go heap in use", "MiB", float64(fullHeap)/mib, ptr.To(float64(emptyHeap)/mib)),
	)

	noop, err := s.startNoop()
	if err != nil {
		return nil, err
	}
	admissionRows, err := admissionLoad(ctx, sizes, step, ca.PEM, ours.url, noop.url)
	if err != nil {
		return nil, err
	}
	rows = append(rows, admissionRows...)
	if profiles.Serve != "" {
		step("Profiling serve under the admission load into %s", profiles.Serve)
		if err := s.profile(ctx, ours, sizes.Concurrency, 5, profiles.Serve); err != nil {
			return nil, err
		}
	}
	largeRows, err := s.largePod(ctx, sizes, step, ours, noop)
	if err != nil {
		return nil, err
	}
	rows = append(rows, largeRows...)
	updateRows, err := s.deploymentUpdate(ctx, sizes, step, ours, noop)
	if err != nil {
		return nil, err
	}
	rows = append(rows, updateRows...)
	crowdedRows, err := s.crowdedUpdate(ctx, sizes, step, ours)
	if err != nil {
		return nil, err
	}
	rows = append(rows, crowdedRows...)
	burstRows, err := s.burst(ctx, sizes, step, benchNamespace)
	if err != nil {
		return nil, err
	}
	rows = append(rows, burstRows...)

	apiPID, err := apiServerPID(env.ControlPlane.APIServer.SecureServing.Port)
	if err != nil {
		return nil, err
	}
	apiRows, err := throughAPIServer(ctx, sizes, step, c, restCfg, apiPID, root, ours, noop, ca.PEM)
	if err != nil {
		return nil, err
	}
	rows = append(rows, apiRows...)
	if profiles.APIServerDir != "" {
		if err := profileAPIServer(ctx, step, c, restCfg, profiles.APIServerDir, sizes.Concurrency, 10); err != nil {
			return nil, err
		}
	}

	resilienceRows, err := s.resilience(ctx, sizes, step, ours, ca)
	if err != nil {
		return nil, err
	}
	return append(rows, resilienceRows...), nil
}

func writeKubeconfig(env *envtest.Environment, dir string) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", err
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}

// benchNamespace is the opted-in namespace of the admission load.
const benchNamespace = "bench"
