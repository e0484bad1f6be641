package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/bench/loadgen"
	"github.com/ha-injector/ha-injector/test/harness/chartrender"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
)

// sideStats is what the machine did during one side's rounds.
type sideStats struct {
	// cpu is the CPU time of the server's process, loadgen that of this one (the load
	// generator), others that of every other process: the benchmark's own kube-apiserver
	// and etcd, and whatever else shares the machine.
	cpu, loadgen, others time.Duration
	// wall is the length of the rounds.
	wall time.Duration
}

// alternateTargets runs load (one round against one target) rounds times against ours
// and peer, swapping who goes first each round so machine noise hits both alike, and
// adds up what the machine did during each side's rounds.
func alternateTargets(rounds int, ours, peer target, load func(target) (loadgen.Result, error)) (p pair, stats [2]sideStats, err error) {
	pids := []int{ours.proc.Pid(), peer.proc.Pid(), os.Getpid()}
	sample := func() (busy time.Duration, own [3]time.Duration, err error) {
		if busy, err = machineBusy(); err != nil {
			return 0, own, err
		}
		for i, pid := range pids {
			if own[i], err = pidCPU(pid); err != nil {
				return 0, own, err
			}
		}
		return busy, own, nil
	}
	for i := range rounds {
		order := []int{0, 1}
		if i%2 == 1 {
			order = []int{1, 0}
		}
		for _, side := range order {
			busy0, own0, err := sample()
			if err != nil {
				return p, stats, err
			}
			start := time.Now()
			res, err := load([]target{ours, peer}[side])
			if err != nil {
				return p, stats, err
			}
			wall := time.Since(start)
			busy1, own1, err := sample()
			if err != nil {
				return p, stats, err
			}
			st := &stats[side]
			st.cpu += own1[side] - own0[side]
			st.loadgen += own1[2] - own0[2]
			st.others += busy1 - busy0 - (own1[0] - own0[0]) - (own1[1] - own0[1]) - (own1[2] - own0[2])
			st.wall += wall
			if side == 0 {
				p.ours = append(p.ours, res)
			} else {
				p.noop = append(p.noop, res)
			}
		}
	}
	return p, stats, nil
}

// clockTick is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// pidCPU is the user and system CPU time process pid has used, from /proc/PID/stat.
func pidCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from after it.
	rest := string(data)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	fields := strings.Fields(rest)
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	// utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
	return sumTicks(fields[11:13])
}

// machineBusy is the CPU time every CPU of the machine has spent busy (not idle or
// waiting for I/O), from /proc/stat.
func machineBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat starts with %q", line)
	}
	// user nice system idle iowait irq softirq steal: all but idle and iowait.
	return sumTicks([]string{fields[1], fields[2], fields[3], fields[6], fields[7], fields[8]})
}

func sumTicks(fields []string) (time.Duration, error) {
	var total time.Duration
	for _, f := range fields {
		ticks, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, err
		}
		total += time.Duration(ticks) * clockTick
	}
	return total, nil
}

// direct sends the same Pod CREATE over TLS to ours and to peer, first as fast as each
// answers, then at one fixed rate (half the slower one's throughput) for both, in
// alternating rounds. minThroughput is the target on ours' throughput over the peer's;
// maxP99, if not zero, the target on ours' p99 at the fixed rate over the peer's.
func (r *peersRun) direct(ctx context.Context, peer target, parts Parts, minThroughput, maxP99 float64) ([]Row, error) {
	oursAnswer, oursPatch, err := answered(ctx, r.ours, r.review)
	if err != nil {
		return nil, err
	}
	peerAnswer, peerPatch, err := answered(ctx, peer, r.review)
	if err != nil {
		return nil, err
	}
	for side, patch := range [][]byte{oursPatch, peerPatch} {
		if len(patch) == 0 {
			return nil, fmt.Errorf("%s answered the pod CREATE without a patch", []target{r.ours, peer}[side].name)
		}
	}
	r.res.Answered["ours"], r.res.Answered[peer.name], r.res.Compared[peer.name] = oursAnswer, peerAnswer, parts

	mix := func(t target) []loadgen.Request { return []loadgen.Request{{Path: t.path, Body: r.review.Body}} }
	run := func(rate float64) func(target) (loadgen.Result, error) {
		return func(t target) (loadgen.Result, error) {
			return loadgen.Run(ctx, loadgen.Config{BaseURL: t.url, CA: t.ca, Concurrency: r.sizes.Concurrency, Duration: r.sizes.RoundTime, Rate: rate, Mix: mix(t)})
		}
	}
	for _, t := range []target{r.ours, peer} {
		if _, err := loadgen.Run(ctx, loadgen.Config{BaseURL: t.url, CA: t.ca, Concurrency: r.sizes.Concurrency, Requests: 25 * r.sizes.Concurrency, Mix: mix(t)}); err != nil {
			return nil, err
		}
	}
	r.step("Pod CREATE over TLS next to %s, closed loop with %d connections: %d rounds of %s each, alternating", peer.name, r.sizes.Concurrency, r.sizes.Rounds, r.sizes.RoundTime)
	fastest, stats, err := alternateTargets(r.sizes.Rounds, r.ours, peer, run(0))
	if err != nil {
		return nil, err
	}
	oursTput, peerTput := median(fastest.ours, loadgen.Result.Throughput), median(fastest.noop, loadgen.Result.Throughput)
	scenario := fmt.Sprintf("pod CREATE over TLS, %d connections, as fast as answered (baseline: %s)", r.sizes.Concurrency, peer.name)
	rows := []Row{atLeast(row(scenario, "throughput", "req/s", oursTput, &peerTput), minThroughput)}
	rows = append(rows, latencyRows(scenario, fastest, 50, 99)...)
	rows = append(rows,
		row(scenario, "CPU time per request", "ms", cpuPerRequest(stats[0].cpu, fastest.ours), ptr.To(cpuPerRequest(stats[1].cpu, fastest.noop))),
		row(scenario, "CPU time of the load generator per request", "ms", cpuPerRequest(stats[0].loadgen, fastest.ours), ptr.To(cpuPerRequest(stats[1].loadgen, fastest.noop))),
		row(scenario, "CPU of other processes during the rounds (not the servers, not the load generator)", "cores", stats[0].cores(), ptr.To(stats[1].cores())),
	)

	rate := 0.5 * min(oursTput, peerTput)
	r.step("Pod CREATE over TLS next to %s at a fixed %.0f req/s (half the slower one's throughput) for both", peer.name, rate)
	fixed, stats, err := alternateTargets(r.sizes.Rounds, r.ours, peer, run(rate))
	if err != nil {
		return nil, err
	}
	fixedScenario := fmt.Sprintf("pod CREATE over TLS, fixed %.0f req/s (baseline: %s)", rate, peer.name)
	for _, l := range latencyRows(fixedScenario, fixed, 50, 90, 99) {
		if l.Metric == "p99 latency" && maxP99 > 0 {
			l = atMost(l, maxP99)
		}
		rows = append(rows, l)
	}
	rows = append(rows, row(fixedScenario, "CPU of other processes during the rounds (not the servers, not the load generator)", "cores", stats[0].cores(), ptr.To(stats[1].cores())))

	all := fmt.Sprintf("pod CREATE over TLS, all runs (baseline: %s)", peer.name)
	oursRSS, err := procRSS(r.ours.proc)
	if err != nil {
		return nil, err
	}
	peerRSS, err := procRSS(peer.proc)
	if err != nil {
		return nil, err
	}
	same := 0.0
	if oursAnswer.Equal(peerAnswer, parts) {
		same = 1
	}
	rows = append(rows,
		failedRow(all, fastest, fixed),
		row(all, "RSS after the runs", "MiB", float64(oursRSS)/mib, ptr.To(float64(peerRSS)/mib)),
		row(all, "JSON patch in the answer", "bytes", float64(len(oursPatch)), ptr.To(float64(len(peerPatch)))),
		row(all, "answer injects what ours does ("+parts.String()+"; 1 = yes)", "", 1, &same).target("1", same == 1),
	)
	if parts != AllParts {
		return rows, nil
	}
	// A peer that does the whole job does it on the other shapes of pod too.
	differ, err := r.shapes(ctx, peer, parts)
	if err != nil {
		return nil, err
	}
	r.res.ShapesDiffer[peer.name] = differ
	for _, d := range differ {
		r.step("differs from ours on %s", d)
	}
	n := float64(len(podShapes))
	return append(rows, row(all, fmt.Sprintf("of %d other pod shapes, answered with ours' injections", len(podShapes)), "count",
		n, ptr.To(n-float64(len(differ)))).target(fmt.Sprint(len(podShapes)), len(differ) == 0)), nil
}

// cores is the average number of CPUs other processes kept busy during the rounds.
func (s sideStats) cores() float64 {
	if s.wall <= 0 {
		return 0
	}
	return float64(s.others) / float64(s.wall)
}

// cpuPerRequest is the CPU time of a server over the requests it answered, in ms.
func cpuPerRequest(cpu time.Duration, runs []loadgen.Result) float64 {
	answered := 0
	for _, res := range runs {
		answered += res.Sent - res.Errors
	}
	if answered == 0 {
		return 0
	}
	return ms(float64(cpu) / float64(answered))
}

// apiBaseline is what ours is compared with through the API server.
type apiBaseline struct {
	label, key string
	// labels opt the baseline's namespace in to its webhook configuration.
	labels map[string]string
	// wait waits until the API server calls the baseline's webhook for pods in the
	// namespace; nil waits for a pod that comes back with its tolerations changed (when
	// compare is set) or not at all.
	wait func(ctx context.Context, ns string) error
	// compare, if set, is what of each stored pod must equal ours' injections.
	compare Parts
	// native puts ha-injector's native mode on ours' side instead of its webhook
	// (installNative must have installed it for peersNativePolicy).
	native bool
}

// throughAPIServer creates pods through the API server in a namespace opted in to ours
// and in one opted in to the baseline, in alternating batches, and compares creation
// throughput and latency, then what each stored.
func (r *peersRun) throughAPIServer(ctx context.Context, b apiBaseline) ([]Row, error) {
	oursNS, peerNS := "api-"+b.key+"-ours", "api-"+b.key+"-peer"
	oursLabels, side := map[string]string{policies.PolicyLabel: peersPolicy}, ""
	if b.native {
		oursLabels, side = map[string]string{policies.PolicyLabel: peersNativePolicy, nativeLabel: "true"}, "native, "
	}
	for name, labels := range map[string]map[string]string{oursNS: oursLabels, peerNS: b.labels} {
		if err := r.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
			return nil, err
		}
	}
	wait := localwebhook.WaitEffective
	if b.native {
		wait = localwebhook.WaitNative
	}
	if err := wait(ctx, r.c, oursNS, 30*time.Second); err != nil {
		return nil, err
	}
	switch {
	case b.wait != nil:
		if err := b.wait(ctx, peerNS); err != nil {
			return nil, err
		}
	case b.compare != 0:
		if err := waitMutated(ctx, r.c, peerNS, 60*time.Second); err != nil {
			return nil, fmt.Errorf("%s: %w", b.label, err)
		}
	}

	n, batch := r.sizes.PodsPerNamespace, r.sizes.Batch
	r.step("Through kube-apiserver, ha-injector's %s next to %s: %d pods in each of two namespaces, batches of %d alternating", map[bool]string{false: "webhook", true: "native mode"}[b.native], b.label, n, batch)
	latencies := map[string][]time.Duration{}
	elapsed := map[string]time.Duration{}
	for done, i := 0, 0; done < n; done, i = done+batch, i+1 {
		order := []string{oursNS, peerNS}
		if i%2 == 1 {
			order = []string{peerNS, oursNS}
		}
		for _, ns := range order {
			start := time.Now()
			l, err := createPods(ctx, r.c, ns, done, min(batch, n-done), r.sizes.Concurrency)
			if err != nil {
				return nil, fmt.Errorf("creating pods in %s: %w", ns, err)
			}
			elapsed[ns] += time.Since(start)
			latencies[ns] = append(latencies[ns], l...)
		}
	}
	scenario := fmt.Sprintf("pod creation through kube-apiserver, %s%d pods, %d clients (baseline: %s)", side, n, r.sizes.Concurrency, b.label)
	rows := []Row{row(scenario, "throughput", "pods/s", float64(n)/elapsed[oursNS].Seconds(), ptr.To(float64(n)/elapsed[peerNS].Seconds()))}
	for _, q := range []float64{50, 99} {
		rows = append(rows, row(scenario, fmt.Sprintf("p%g latency", q), "ms", ms(float64(quantile(latencies[oursNS], q))), ptr.To(ms(float64(quantile(latencies[peerNS], q))))))
	}

	var oursPods, peerPods corev1.PodList
	if err := r.c.List(ctx, &oursPods, client.InNamespace(oursNS)); err != nil {
		return nil, err
	}
	if err := r.c.List(ctx, &peerPods, client.InNamespace(peerNS)); err != nil {
		return nil, err
	}
	if len(oursPods.Items) == 0 || len(peerPods.Items) == 0 {
		return nil, fmt.Errorf("no pods stored in %s or %s", oursNS, peerNS)
	}
	unmutated := 0
	for i, p := range oursPods.Items {
		if p.Annotations[policies.StatusAnnotation] == "" || (b.native && !nativeRecord(&oursPods.Items[i])) {
			unmutated++
		}
	}
	record := "ours' status record"
	if b.native {
		record = "native mode's record"
	}
	rows = append(rows, row(scenario, "opted-in pods stored without "+record, "count", float64(unmutated), nil).target("0", unmutated == 0))
	// Ours' webhook's first stored pod is the reference for every side, native mode's
	// included.
	if _, ok := r.res.Stored["ours"]; !ok {
		if b.native {
			return nil, fmt.Errorf("native mode measured before ours' webhook: no reference pod")
		}
		r.res.Stored["ours"] = InjectionsOf(&oursPods.Items[0].Spec)
	}
	reference := r.res.Stored["ours"]
	if b.native {
		if _, ok := r.res.Stored["native"]; !ok {
			r.res.Stored["native"] = InjectionsOf(&oursPods.Items[0].Spec)
		}
	}
	if b.compare == 0 {
		return rows, nil
	}
	r.res.Stored[b.label] = InjectionsOf(&peerPods.Items[0].Spec)
	differ := func(pods []corev1.Pod, parts Parts) int {
		n := 0
		for i := range pods {
			if !InjectionsOf(&pods[i].Spec).Equal(reference, parts) {
				n++
			}
		}
		return n
	}
	// Native mode does all of ours' webhook's job, whatever the peer does.
	oursParts, metric := b.compare, "pods stored with injections that differ from ours' ("+b.compare.String()+")"
	if b.native {
		oursParts = AllParts
		metric = fmt.Sprintf("pods stored with injections that differ from ours' webhook's (native mode: %s; the peer: %s)", AllParts, b.compare)
	}
	oursDiffer, peerDiffer := differ(oursPods.Items, oursParts), differ(peerPods.Items, b.compare)
	return append(rows, row(scenario, metric, "count",
		float64(oursDiffer), ptr.To(float64(peerDiffer))).target("0 for both", oursDiffer == 0 && peerDiffer == 0)), nil
}

// waitMutated waits (bounded by timeout) until a pod created in namespace (a server-side
// dry run: nothing stored) comes back with its tolerations changed.
func waitMutated(ctx context.Context, c client.Client, namespace string, timeout time.Duration) error {
	for i, deadline := 0, time.Now().Add(timeout); time.Now().Before(deadline); i++ {
		probe := benchPod(namespace, fmt.Sprintf("probe-%d", i))
		if err := c.Create(ctx, probe, client.DryRunAll); err != nil {
			return err
		}
		if InjectionsOf(&probe.Spec).mutated() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("pods in %s were not mutated within %s", namespace, timeout)
}

// profile records a CPU profile of t (its net/http/pprof handlers) while the Pod CREATE
// runs against it as fast as it answers, and writes it to path.
func (r *peersRun) profile(ctx context.Context, t target, path string) error {
	const seconds = 10
	if t.pprof == "" {
		return fmt.Errorf("%s has no pprof address", t.name)
	}
	loadDone := make(chan error, 1)
	go func() {
		_, err := loadgen.Run(ctx, loadgen.Config{BaseURL: t.url, CA: t.ca, Concurrency: r.sizes.Concurrency,
			Duration: (seconds + 1) * time.Second, Mix: []loadgen.Request{{Path: t.path, Body: r.review.Body}}})
		loadDone <- err
	}()
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", t.pprof, seconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof of %s: HTTP %d", t.name, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return <-loadDone
}

// chartWebhookConfiguration is the chart's MutatingWebhookConfiguration pointed at url,
// trusting ca.
func chartWebhookConfiguration(root, url string, ca []byte) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	chart, err := chartrender.Load(root)
	if err != nil {
		return nil, err
	}
	r, err := chartrender.Render(chart, localwebhook.ProvidedValues(nil), chartrender.Options{})
	if err != nil {
		return nil, err
	}
	return r.LocalWebhookConfiguration(url, ca)
}

// installOurs registers ours at url as the chart does, with two more expressions in each
// webhook's namespaceSelector, kyvernoLabel and nativeLabel DoesNotExist: the namespaces
// whose pods go to Kyverno, and those ha-injector's native mode serves, carry
// policies.PolicyLabel too (Kyverno's policies and native mode's bindings select it),
// and must not be sent to ours as well.
func installOurs(ctx context.Context, c client.Client, root, url string, ca []byte) error {
	cfg, err := chartWebhookConfiguration(root, url, ca)
	if err != nil {
		return err
	}
	for i := range cfg.Webhooks {
		sel := cfg.Webhooks[i].NamespaceSelector
		if sel == nil {
			return fmt.Errorf("the chart's webhook %s has no namespaceSelector", cfg.Webhooks[i].Name)
		}
		sel.MatchExpressions = append(sel.MatchExpressions,
			metav1.LabelSelectorRequirement{Key: kyvernoLabel, Operator: metav1.LabelSelectorOpDoesNotExist},
			metav1.LabelSelectorRequirement{Key: nativeLabel, Operator: metav1.LabelSelectorOpDoesNotExist})
	}
	return c.Create(ctx, cfg)
}

// installPeer registers a server at url the way the chart registers ours (the chart's
// rendered configuration: selectors, failurePolicy, timeout, sideEffects,
// reinvocationPolicy, TLS trusting ca) under the name name, its webhooks' names
// prefixed with prefix, and the namespace selector asking for label where ours asks for
// policies.PolicyLabel. Only the webhooks for opted-in namespaces are kept (not the one
// for namespaces that stop opting in), and with podsOnly only the Pod one.
func installPeer(ctx context.Context, c client.Client, root, name, prefix, label string, podsOnly bool, url string, ca []byte) error {
	cfg, err := chartWebhookConfiguration(root, url, ca)
	if err != nil {
		return err
	}
	cfg.Name = name
	hooks := cfg.Webhooks[:0]
	for _, h := range cfg.Webhooks {
		pods := len(h.Rules) == 1 && len(h.Rules[0].Resources) == 1 && h.Rules[0].Resources[0] == "pods"
		if optInTo(h.NamespaceSelector, label) && (pods || !podsOnly) {
			h.Name = prefix + h.Name
			hooks = append(hooks, h)
		}
	}
	if len(hooks) == 0 {
		return fmt.Errorf("no webhook of the chart selects namespaces with %s Exists", policies.PolicyLabel)
	}
	cfg.Webhooks = hooks
	return c.Create(ctx, cfg)
}
