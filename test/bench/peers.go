package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/webhook"
)

// PeerSizes are how much load the peers benchmark gives each pair.
type PeerSizes struct {
	// Concurrency is the number of connections of the load over TLS, and of the clients
	// creating pods through the API server.
	Concurrency int
	// Rounds alternate ha-injector and the peer; each round gives each RoundTime.
	Rounds    int
	RoundTime time.Duration
	// PodsPerNamespace are created through the API server on each side of a pair, in
	// batches of Batch alternating between the two namespaces.
	PodsPerNamespace, Batch int
}

// PeersFull is what `make bench-peers` runs: five short rounds a side rather than three
// long ones, so that the load of other jobs on a shared machine falls on both sides alike
// and the median of each side skips a noisy round.
var PeersFull = PeerSizes{Concurrency: 8, Rounds: 5, RoundTime: 3 * time.Second, PodsPerNamespace: 2000, Batch: 100}

// PeersShort is what `make test` runs: every server starts, admits, mutates and stops.
var PeersShort = PeerSizes{Concurrency: 2, Rounds: 1, RoundTime: 500 * time.Millisecond, PodsPerNamespace: 10, Batch: 5}

// PeerOptions say what RunPeers measures besides the minimal webhook.
type PeerOptions struct {
	// Kyverno is the folder hack/kyverno.sh built (KyvernoBuild); empty leaves Kyverno out.
	Kyverno string
	// ProfileDir, if set, receives a CPU profile of ha-injector and of Kyverno (one per
	// policy form) under the load over TLS: ours.pprof, kyverno-*.pprof.
	ProfileDir string
}

// Peers is what RunPeers measured and what the servers stored.
type Peers struct {
	Rows []Row
	// Stored holds, for each server that mutated pods through the API server, the
	// injections of its first stored pod ("ours", "minimal", "kyverno MutatingPolicy",
	// ...), and Answered the same from each server's answer over TLS to the same pod
	// CREATE (its patch applied to the request's pod): so a test can compare them.
	Stored, Answered map[string]Injections
	// Compared names, for each peer, the parts compared with ours.
	Compared map[string]Parts
	// ShapesDiffer lists, for each peer that does the whole job (AllParts), the pod
	// shapes (podShapes) on which its answer over TLS does not inject what ours does.
	ShapesDiffer map[string][]string
}

// Labels of the namespaces the peers' webhook configurations select, as
// policies.PolicyLabel selects ours'.
const (
	minimalLabel = "bench.ha-injector.io/minimal"
	// kyvernoLabel is on the namespaces whose pods the API server sends to Kyverno (its
	// configuration's namespaceSelector, a chart value). They carry policies.PolicyLabel
	// too, which Kyverno's policies select; ours' webhook configuration leaves them out.
	kyvernoLabel = "bench.ha-injector.io/kyverno"
	// nativeLabel is on the namespaces ha-injector's native mode serves (labelled
	// policies.PolicyLabel too); ours' webhook configuration leaves them out.
	nativeLabel = "bench.ha-injector.io/native"
)

// peersPolicy is the HAPolicy of the namespaces ha-injector serves in this benchmark:
// the defaults with the keepalive sysctls only and no zone spread, so it does what the
// peers' Kyverno policies do (no ha-sysctl init container, no topologySpreadConstraints,
// which no peer injects).
const peersPolicy = "peers"

// peersNativePolicy is the HAPolicy ha-injector's native mode applies in this benchmark:
// peersPolicy's spec under a name of its own, so that its bindings select only the
// namespaces native mode serves.
const peersNativePolicy = "peers-native"

// peersNamespace is the opted-in namespace of the requests sent over TLS.
const peersNamespace = "bench-peers"

// target is one server under load over TLS: where its Pod path is and whom to trust.
type target struct {
	name string
	url  string // base, https://127.0.0.1:PORT
	path string // of the Pod CREATE
	ca   []byte
	proc *proc.Process
	// pprof is the base URL of its net/http/pprof handlers, if any.
	pprof string
}

// RunPeers builds and starts ha-injector, the no-op and the minimal mutating webhook
// (and Kyverno, with opts.Kyverno) beside a real kube-apiserver, measures each peer next
// to ha-injector in alternating rounds, and returns the rows and what each stored.
// Progress goes to log.
func RunPeers(ctx context.Context, sizes PeerSizes, log io.Writer, opts PeerOptions) (res *Peers, err error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "ha-injector-bench-peers-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	step := func(format string, args ...any) { fmt.Fprintf(log, "==> "+format+"\n", args...) }

	step("Building ha-injector (make build, as the image does), the no-op and the minimal mutating webhook")
	bin := filepath.Join(work, "bin")
	if out, err := exec.CommandContext(ctx, "make", "-C", root, "build", "BIN_DIR="+bin).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("make build: %v: %s", err, out)
	}
	for _, name := range []string{"noop", "minimal"} {
		build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(bin, name), "./test/bench/"+name)
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v: %s", name, err, out)
		}
	}

	step("Starting kube-apiserver and etcd")
	env, err := controlplane.New(root)
	if err != nil {
		return nil, err
	}
	if opts.Kyverno != "" {
		dirs, err := kyvernoCRDDirs(opts.Kyverno)
		if err != nil {
			return nil, err
		}
		env.CRDDirectoryPaths = append(env.CRDDirectoryPaths, dirs...)
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
	ca, err := certs.NewCA("ha-injector-bench-peers-ca", 24*time.Hour)
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
	nativePolicy := keepalivePolicy()
	nativePolicy.Name = peersNativePolicy
	for _, p := range []*v1alpha1.HAPolicy{keepalivePolicy(), nativePolicy} {
		if err := c.Create(ctx, p); err != nil {
			return nil, err
		}
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: peersNamespace, Labels: map[string]string{policies.PolicyLabel: peersPolicy}}}); err != nil {
		return nil, err
	}

	limits, err := readChartLimits(root)
	if err != nil {
		return nil, err
	}
	s := &servers{bin: bin, work: work, kubeconfig: kubeconfig, certDir: certDir, ca: ca.PEM, chart: limits}
	defer s.stopAll()
	step("Starting ha-injector serve, the no-op and the minimal mutating webhook")
	oursSrv, err := s.startOurs("serve")
	if err != nil {
		return nil, err
	}
	noop, err := s.startNoop()
	if err != nil {
		return nil, err
	}
	minimal, err := s.startMinimal()
	if err != nil {
		return nil, err
	}
	ours := target{name: "ours", url: oursSrv.url, path: webhook.PodPath, ca: ca.PEM, proc: oursSrv.proc, pprof: oursSrv.pprof}
	minimalT := target{name: "minimal mutating webhook", url: minimal.url, path: webhook.PodPath, ca: ca.PEM, proc: minimal.proc, pprof: minimal.pprof}

	r := &peersRun{sizes: sizes, step: step, c: c, restCfg: restCfg, root: root, ours: ours, res: &Peers{
		Stored: map[string]Injections{}, Answered: map[string]Injections{}, Compared: map[string]Parts{}, ShapesDiffer: map[string][]string{},
	}}
	review, err := Reviews(peersNamespace)
	if err != nil {
		return nil, err
	}
	r.review = review[0]

	step("Registering the webhooks in kube-apiserver as the chart registers ours")
	if err := installOurs(ctx, c, root, ours.url, ca.PEM); err != nil {
		return nil, err
	}
	if err := installNoop(ctx, c, root, noop.url, ca.PEM); err != nil {
		return nil, err
	}
	if err := installPeer(ctx, c, root, "ha-injector-bench-minimal", "minimal.", minimalLabel, true, minimal.url, ca.PEM); err != nil {
		return nil, err
	}

	var direct, api []Row
	rows, err := r.direct(ctx, minimalT, TolerationsOnly, 1, 0)
	if err != nil {
		return nil, err
	}
	direct = append(direct, rows...)
	if opts.ProfileDir != "" {
		path := filepath.Join(opts.ProfileDir, "minimal.pprof")
		step("Profiling the minimal mutating webhook under the load over TLS into %s", path)
		if err := r.profile(ctx, minimalT, path); err != nil {
			return nil, err
		}
	}
	for _, b := range []apiBaseline{
		{label: "no admission", key: "none"},
		{label: "no-op webhook", key: "noop", labels: map[string]string{noopLabel: "true"},
			wait: func(ctx context.Context, ns string) error {
				return waitNoopCalled(ctx, c, noop.url, ca.PEM, ns, 30*time.Second)
			}},
		{label: "minimal mutating webhook", key: "minimal", labels: map[string]string{minimalLabel: "true"}, compare: TolerationsOnly},
	} {
		rows, err := r.throughAPIServer(ctx, b)
		if err != nil {
			return nil, err
		}
		api = append(api, rows...)
	}
	rows, err = r.native(ctx, apiBaseline{label: "minimal mutating webhook", key: "native-minimal", labels: map[string]string{minimalLabel: "true"}, compare: TolerationsOnly})
	if err != nil {
		return nil, err
	}
	api = append(api, rows...)

	if opts.Kyverno != "" {
		step("Starting Kyverno %s's admission controller (%s) out of the cluster, as its developers run it", KyvernoVersion, opts.Kyverno)
		k, err := startKyverno(ctx, c, opts.Kyverno, work, kubeconfig)
		if err != nil {
			return nil, err
		}
		s.all = append(s.all, k.proc)
		for _, form := range kyvernoForms {
			d, a, err := r.kyverno(ctx, k, form, opts.ProfileDir)
			if err != nil {
				return nil, err
			}
			direct, api = append(direct, d...), append(api, a...)
		}
	}
	if opts.ProfileDir != "" {
		path := filepath.Join(opts.ProfileDir, "ours.pprof")
		step("Profiling ha-injector under the load over TLS into %s", path)
		if err := r.profile(ctx, ours, path); err != nil {
			return nil, err
		}
	}
	r.res.Rows = append(direct, api...)
	return r.res, nil
}

// kyverno measures Kyverno with the policy of form next to ours, over TLS and through
// the API server, with a profile of Kyverno under the load over TLS into profileDir (if
// set), and takes the policy away again.
func (r *peersRun) kyverno(ctx context.Context, k *kyvernoServer, form kyvernoForm, profileDir string) (direct, api []Row, err error) {
	r.step("Kyverno with its %s", form.kind)
	t, err := k.install(ctx, form, r.review)
	if err != nil {
		return nil, nil, err
	}
	r.step("Kyverno registered the webhook of its %s at %s%s", form.kind, t.url, t.path)
	if direct, err = r.direct(ctx, t, AllParts, 3, 1); err != nil {
		return nil, nil, err
	}
	if profileDir != "" {
		path := filepath.Join(profileDir, "kyverno-"+form.file+".pprof")
		r.step("Profiling Kyverno (%s) under the load over TLS into %s", form.kind, path)
		if err := r.profile(ctx, t, path); err != nil {
			return nil, nil, err
		}
	}
	peer := apiBaseline{label: t.name, key: "kyverno-" + form.file,
		labels: map[string]string{policies.PolicyLabel: peersPolicy, kyvernoLabel: "true"}, compare: AllParts}
	if api, err = r.throughAPIServer(ctx, peer); err != nil {
		return nil, nil, err
	}
	if form.kind == "MutatingPolicy" {
		// Native mode's natural peer: Kyverno's CEL policy, next to ha-injector's.
		peer.key = "native-" + peer.key
		rows, err := r.native(ctx, peer)
		if err != nil {
			return nil, nil, err
		}
		api = append(api, rows...)
	}
	return direct, api, k.uninstall(ctx, form)
}

// native measures ha-injector's native mode (the API server applying
// peersNativePolicy, the peers policy under another name, itself) next to b through the
// API server, installed for the pair only.
func (r *peersRun) native(ctx context.Context, b apiBaseline) (rows []Row, err error) {
	r.step("Installing ha-injector's native mode for HAPolicy %s", peersNativePolicy)
	uninstall, err := installNative(ctx, r.c, r.restCfg, r.root, peersNativePolicy)
	if err != nil {
		return nil, err
	}
	defer func() {
		if uninstallErr := uninstall(ctx); uninstallErr != nil && err == nil {
			err = uninstallErr
		}
	}()
	b.native = true
	return r.throughAPIServer(ctx, b)
}

// peersRun is what the scenarios of one RunPeers share.
type peersRun struct {
	sizes PeerSizes
	step  func(string, ...any)
	c     client.Client
	// restCfg and root install native mode (installNative).
	restCfg *rest.Config
	root    string
	ours    target
	// review is the Pod CREATE every server is sent over TLS.
	review loadgen.Request
	res    *Peers
}

// keepalivePolicy is the peersPolicy HAPolicy.
func keepalivePolicy() *v1alpha1.HAPolicy {
	return &v1alpha1.HAPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: peersPolicy},
		Spec: v1alpha1.HAPolicySpec{
			Sysctls: v1alpha1.SysctlsSpec{Values: map[string]v1alpha1.SysctlValue{
				"net.ipv4.tcp_keepalive_time": "30", "net.ipv4.tcp_keepalive_intvl": "30", "net.ipv4.tcp_keepalive_probes": "5",
			}},
			ZoneSpread: v1alpha1.ZoneSpreadSpec{Enabled: ptr.To(false)},
		},
	}
}

// startMinimal starts the minimal mutating webhook with the same certificate as ours,
// its profiles on a listener of their own.
func (s *servers) startMinimal() (*server, error) {
	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	addr := addrs[0]
	host, port, _ := net.SplitHostPort(addr)
	p, err := proc.Start("minimal", filepath.Join(s.work, "minimal.log"), filepath.Join(s.bin, "minimal"), nil,
		"--webhook-host="+host, "--webhook-port="+port, "--webhook-cert-path="+s.certDir, "--pprof-bind-address="+addrs[1])
	if err != nil {
		return nil, err
	}
	s.all = append(s.all, p)
	return &server{proc: p, url: "https://" + addr, addr: addr, pprof: "http://" + addrs[1]}, waitTLS(p, addr, s.ca, 30*time.Second)
}
