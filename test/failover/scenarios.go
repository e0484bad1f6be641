package failover

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/examples"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
)

// Namespaces of the run.
const (
	// OptedIn is labelled ha-injector.io/policy=default.
	OptedIn = "with-ha-injector"
	// NotOptedIn has no label: the cluster's defaults apply.
	NotOptedIn = "without-ha-injector"
	// RequiredNS is labelled ha-injector.io/policy=required, a policy with Required anti-affinity.
	RequiredNS = "required-policy"
	// NativeNS is labelled ha-injector.io/policy=native (NativePolicy): native mode
	// serves it, the webhook leaves it out.
	NativeNS = "with-ha-injector-native"
)

// Options choose what a run does.
type Options struct {
	// Settings are the cluster's and the policy's timings.
	Settings Settings
	// Baseline also runs the web-server in NotOptedIn, killed with the same node and
	// measured side by side, and the StatefulSet scenario, which waits for the baseline.
	Baseline bool
	// Native also runs the web-server in NativeNS, served by native mode (the API server
	// applies the same policy itself), killed with the same node.
	Native bool
	// Nodes is the number of fake nodes (at least 3).
	Nodes int
	// NotReadyHiccup, if not 0, is how long another node reports NotReady, its Lease
	// still renewed, just before the node loss (hiccup.go). It must be shorter than
	// the policy's not-ready toleration and longer than the policy's unreachable
	// toleration, which the hiccup's control pod tolerates not-ready for.
	NotReadyHiccup time.Duration
	// TCP, if not nil, also measures the TCP leg (tcp.go), alongside the cluster.
	TCP *TCPOptions
	// Log reports progress; nil is silent.
	Log func(format string, args ...any)
}

// Short is the version `make test` runs: the opted-in namespace only, a node monitor
// grace period of 8 s, a 4 s Lease, a 2 s unreachable toleration and a 12 s not-ready
// one, so the node dies and its pod is replaced within seconds, and a 9 s not-ready
// hiccup (longer than the grace period: a NotReady node whose Lease is renewed is never
// taken for a dead one). It checks that recovery happens, not how fast.
func Short() Options {
	return Options{
		Settings: Settings{
			NodeMonitorGracePeriod:   8 * time.Second,
			NodeMonitorPeriod:        time.Second,
			NodeLeaseDuration:        4 * time.Second,
			DefaultTolerationSeconds: 300,
			PolicyNotReadySeconds:    12,
			PolicyUnreachableSeconds: 2,
		},
		Nodes:          3,
		NotReadyHiccup: 9 * time.Second,
		Native:         true,
	}
}

// MeasuredHiccup is the not-ready hiccup `make failover` runs: 45 s, as long as a
// container runtime or CNI restart that goes badly, under the default policy's 60 s.
const MeasuredHiccup = 45 * time.Second

// Measured is what `make failover` runs: Kubernetes' default timings, both namespaces,
// the StatefulSet, the not-ready hiccup and the TCP leg with the default policy. It
// takes about 6 minutes, most of it the baseline's 300 s.
func Measured() Options {
	return Options{
		Settings: KubernetesDefaults, Baseline: true, Native: true, Nodes: 3, NotReadyHiccup: MeasuredHiccup,
		TCP: &TCPOptions{Policy: v1alpha1.NewDefault(), Cap: TCPMeasuredCap},
	}
}

// Run starts a simulated cluster in dir (logs and etcd data), runs the scenarios and
// stops everything it started. An error means the harness could not run; scenarios
// that ran but did not turn out as expected are in the report (Report.Problems).
func Run(ctx context.Context, root string, bins Binaries, opts Options, dir string) (rep *Report, err error) {
	if opts.Nodes < 3 {
		return nil, fmt.Errorf("the scenarios need at least 3 nodes, not %d", opts.Nodes)
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if h := opts.NotReadyHiccup; h > 0 {
		s := opts.Settings
		if h >= time.Duration(s.PolicyNotReadySeconds)*time.Second || h <= time.Duration(s.PolicyUnreachableSeconds)*time.Second {
			return nil, fmt.Errorf("the not-ready hiccup (%s) must be shorter than the not-ready toleration (%d s) and longer than the control's (%d s)",
				h, s.PolicyNotReadySeconds, s.PolicyUnreachableSeconds)
		}
	}
	rep = &Report{Settings: reportSettings(opts.Settings)}
	start := time.Now()
	example, err := examples.WebServer(root)
	if err != nil {
		return nil, err
	}
	if opts.TCP != nil {
		// Alongside everything else: the kernel's timers, not the cluster, set its pace.
		tcpOpts := *opts.TCP
		tcpOpts.Log = logf
		if tcpOpts.HASysctl == "" {
			if tcpOpts.HASysctl, err = BuildHASysctl(ctx, root, dir); err != nil {
				return nil, err
			}
		}
		tcpCtx, cancel := context.WithCancel(ctx)
		tcpDone := make(chan []TCPRow, 1)
		go func() { tcpDone <- MeasureTCP(tcpCtx, example, tcpOpts) }()
		logf("TCP leg: 4 connections to a dead peer in network namespaces, for up to %s", tcpOpts.Cap)
		defer func() {
			if err != nil {
				cancel()
			}
			rows := <-tcpDone
			cancel()
			if err == nil {
				rep.TCP = rows
				rep.WallSeconds = round(time.Since(start).Seconds())
			}
		}()
	}
	logf("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (logs in %s)", dir)
	cl, err := StartCluster(ctx, bins, opts.Settings, dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := cl.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	r := &run{cl: cl, opts: opts, logf: logf, rep: rep}
	defer func() {
		// The end of each log explains a failure, not an interruption.
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w\n%s", err, cl.Logs(15))
		}
	}()
	for i := 1; i <= opts.Nodes; i++ {
		r.nodes = append(r.nodes, fmt.Sprintf("node-%d", i))
	}
	if err := cl.AddNodes(ctx, r.nodes...); err != nil {
		return nil, err
	}
	logf("cluster up with %d Ready nodes in %.1f s", len(r.nodes), time.Since(start).Seconds())

	namespaces := map[string]map[string]string{
		OptedIn:    {policies.PolicyLabel: "default"},
		RequiredNS: {policies.PolicyLabel: "required"},
	}
	if opts.Baseline {
		namespaces[NotOptedIn] = nil
	}
	if opts.Native {
		namespaces[NativeNS] = map[string]string{policies.PolicyLabel: NativePolicy}
	}
	for ns, lbls := range namespaces {
		if _, err := cl.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: lbls}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	for ns := range namespaces {
		if err := cl.WaitServiceAccount(ctx, ns); err != nil {
			return nil, err
		}
	}
	tolerations := map[string]any{"notReadySeconds": opts.Settings.PolicyNotReadySeconds, "unreachableSeconds": opts.Settings.PolicyUnreachableSeconds}
	policyValues := map[string]any{"required": map[string]any{"antiAffinity": map[string]any{"type": "Required"}}}
	excluded := []any{}
	if opts.Native {
		// The default policy's spec, for native mode; the webhook leaves its namespace out.
		policyValues[NativePolicy] = map[string]any{"tolerations": tolerations}
		excluded = append(excluded, NativeNS)
	}
	values := localwebhook.ProvidedValues(map[string]any{
		"defaultPolicy": map[string]any{"spec": map[string]any{"tolerations": tolerations}},
		"policies":      policyValues,
		"webhook":       map[string]any{"excludeNamespaces": excluded},
	})
	wh, err := StartWebhook(ctx, cl, root, values, OptedIn)
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := wh.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	logf("ha-injector serving as the cluster's webhook")
	if opts.Native {
		if err := r.startNative(ctx, wh.Server.Config); err != nil {
			return nil, err
		}
		logf("ha-injector's native mode applying HAPolicy %s in %s", NativePolicy, NativeNS)
	}

	r.example = example
	if err := r.placement(ctx); err != nil {
		return nil, err
	}
	if err := r.requiredPolicy(ctx); err != nil {
		return nil, err
	}
	if err := r.nodeLoss(ctx); err != nil {
		return nil, err
	}
	if err := cl.Exited(); err != nil {
		return nil, err
	}
	rep.WallSeconds = round(time.Since(start).Seconds())
	return rep, nil
}

// run is the state shared by the scenarios of one Run.
type run struct {
	cl      *Cluster
	opts    Options
	logf    func(string, ...any)
	rep     *Report
	nodes   []string
	example *appsv1.Deployment
	// placements are the web-server pods per node, per namespace, before the node died.
	placements map[string]map[string]int
}

// placement is scenario 1: the seed's web-server in each namespace, and where the real
// scheduler put its replicas.
func (r *run) placement(ctx context.Context) error {
	nss := []string{OptedIn}
	if r.opts.Baseline {
		nss = append(nss, NotOptedIn)
	}
	if r.opts.Native {
		nss = append(nss, NativeNS)
	}
	for _, ns := range nss {
		if err := r.create(ctx, r.webServer(ns, "web-server", 3)); err != nil {
			return err
		}
	}
	r.placements = map[string]map[string]int{}
	for _, ns := range nss {
		pods, err := r.waitRunning(ctx, ns, "web-server", 3, 60*time.Second)
		if err != nil {
			return err
		}
		per := map[string]int{}
		for _, p := range pods {
			per[p.Spec.NodeName]++
		}
		r.placements[ns] = per
		row := Row{
			Scenario: ScenarioPlacement, Title: "placement of the 3 web-server replicas",
			Namespace: ns, OptedIn: ns != NotOptedIn, Side: sideOf(ns), Workload: "Deployment/web-server",
			Placement: per, Passed: true,
			Outcome: fmt.Sprintf("%d distinct nodes: %s", len(per), formatPlacement(per)),
		}
		if ns != NotOptedIn && len(per) != 3 {
			row.Passed = false
			row.Outcome += " (want 3: the anti-affinity did not spread them)"
		}
		r.rep.Rows = append(r.rep.Rows, row)
		r.logf("placement in %s: %s", ns, row.Outcome)
	}
	return nil
}

// requiredPolicy is scenario 3, in RequiredNS (policy "required", Required
// anti-affinity), before any node dies.
func (r *run) requiredPolicy(ctx context.Context) error {
	c := r.cl.Client
	// 3 replicas on 3 nodes: Required, and matchLabelKeys lets the rolling update's
	// surge pod share a node with the old ReplicaSet's pods.
	dep := r.webServer(RequiredNS, "web-server", 3)
	if err := r.create(ctx, dep); err != nil {
		return err
	}
	row := Row{Scenario: ScenarioRequiredRollout, Title: "Required policy: rolling update, 3 replicas on 3 nodes",
		Namespace: RequiredNS, OptedIn: true, Workload: "Deployment/web-server"}
	if _, err := r.waitRunning(ctx, RequiredNS, "web-server", 3, 60*time.Second); err != nil {
		return err
	}
	stored, err := c.AppsV1().Deployments(RequiredNS).Get(ctx, "web-server", metav1.GetOptions{})
	if err != nil {
		return err
	}
	term := requiredTerm(stored)
	switch {
	case term == nil:
		row.Outcome = "no Required anti-affinity term in the stored template"
	case !slices.Contains(term.MatchLabelKeys, "pod-template-hash"):
		row.Outcome = "the Required term has no matchLabelKeys [pod-template-hash]"
	default:
		took, done, err := r.rollout(ctx, RequiredNS, "web-server", 60*time.Second)
		if err != nil {
			return err
		}
		row.Passed = done
		row.Outcome = fmt.Sprintf("rolling update completed in %.1f s (Required term with matchLabelKeys [pod-template-hash])", took)
		if !done {
			row.Outcome = fmt.Sprintf("rolling update did not complete in %.0f s", took)
		}
	}
	r.rep.Rows = append(r.rep.Rows, row)
	r.logf("%s: %s", row.Title, row.Outcome)

	// The control: the same Required term written by hand without matchLabelKeys
	// (ha-injector opted out) deadlocks: the surge pod fits on no node.
	control := r.webServer(RequiredNS, "without-matchlabelkeys", 3)
	control.Annotations = map[string]string{policies.InjectAnnotation: "false"}
	control.Spec.Template.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: control.Spec.Selector.DeepCopy(),
			TopologyKey:   corev1.LabelHostname,
		}},
	}}
	if err := r.create(ctx, control); err != nil {
		return err
	}
	if _, err := r.waitRunning(ctx, RequiredNS, control.Name, 3, 60*time.Second); err != nil {
		return err
	}
	stuck, msg, err := r.rolloutStuck(ctx, RequiredNS, control.Name, 30*time.Second)
	if err != nil {
		return err
	}
	controlRow := Row{Scenario: ScenarioRequiredControl, Title: "control: a Required term without matchLabelKeys (ha-injector opted out)",
		Namespace: RequiredNS, OptedIn: false, Workload: "Deployment/" + control.Name, Passed: stuck}
	if stuck {
		controlRow.Outcome = "rolling update deadlocked: the surge pod is Unschedulable (" + msg + ")"
	} else {
		controlRow.Outcome = "the surge pod was scheduled: the deadlock this control should show did not happen"
	}
	r.rep.Rows = append(r.rep.Rows, controlRow)
	r.logf("%s: %s", controlRow.Title, controlRow.Outcome)

	// 4 replicas on 3 nodes: the webhook downgrades Required to Preferred, so all run.
	four := r.webServer(RequiredNS, "web-server-4", 4)
	if err := r.create(ctx, four); err != nil {
		return err
	}
	fourRow := Row{Scenario: ScenarioRequiredDowngrade, Title: "Required policy: 4 replicas on 3 nodes",
		Namespace: RequiredNS, OptedIn: true, Workload: "Deployment/web-server-4"}
	stored, err = c.AppsV1().Deployments(RequiredNS).Get(ctx, four.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	pods, err := r.waitRunning(ctx, RequiredNS, four.Name, 4, 60*time.Second)
	if err != nil && ctx.Err() != nil {
		return err
	}
	per := map[string]int{}
	for _, p := range pods {
		per[p.Spec.NodeName]++
	}
	fourRow.Placement = per
	switch {
	case requiredTerm(stored) != nil:
		fourRow.Outcome = "the template kept a Required term"
	case !hasPreferredTerm(stored):
		fourRow.Outcome = "the template has no Preferred term either"
	case err != nil:
		fourRow.Outcome = fmt.Sprintf("%d of 4 Running: %v", len(pods), err)
	default:
		fourRow.Passed = true
		fourRow.Outcome = fmt.Sprintf("4 of 4 Running (%s): Required downgraded to Preferred", formatPlacement(per))
	}
	r.rep.Rows = append(r.rep.Rows, fourRow)
	r.logf("%s: %s", fourRow.Title, fourRow.Outcome)

	// Out of the way before a node dies: their evicted pods would only add noise.
	for _, name := range []string{"web-server", control.Name, four.Name} {
		if err := c.AppsV1().Deployments(RequiredNS).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil {
			return err
		}
	}
	return poll(ctx, 60*time.Second, "the pods of "+RequiredNS+" to be gone", func() (bool, error) {
		list, err := c.CoreV1().Pods(RequiredNS).List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == 0, err
	})
}

// nodeLoss is scenario 2 (and 4 with Baseline): one node dies; every web-server and
// the StatefulSet are timed from its last heartbeat.
func (r *run) nodeLoss(ctx context.Context) error {
	c := r.cl.Client
	if r.opts.Baseline {
		if err := r.createStatefulSet(ctx, OptedIn); err != nil {
			return err
		}
		pods, err := r.waitRunning(ctx, OptedIn, "db", 3, 60*time.Second)
		if err != nil {
			return err
		}
		per := map[string]int{}
		for _, p := range pods {
			per[p.Spec.NodeName]++
		}
		r.logf("StatefulSet db in %s: %s", OptedIn, formatPlacement(per))
	}
	dead, err := r.chooseNode(ctx)
	if err != nil {
		return err
	}
	type watched struct {
		t              *target
		ns, app, title string
		replicas       int
		stateful       bool
	}
	var ws []*watched
	ws = append(ws, &watched{ns: OptedIn, app: "web-server", replicas: 3, title: "node loss: Deployment web-server, 3 replicas"})
	if r.opts.Baseline {
		ws = append(ws, &watched{ns: NotOptedIn, app: "web-server", replicas: 3, title: "node loss: Deployment web-server, 3 replicas"})
		ws = append(ws, &watched{ns: OptedIn, app: "db", replicas: 3, stateful: true, title: "node loss: StatefulSet db, 3 replicas"})
	}
	// Last, so that the indices above stay those of the recorder's targets.
	var nativeWatched *watched
	if r.opts.Native {
		nativeWatched = &watched{ns: NativeNS, app: "web-server", replicas: 3, title: "node loss: Deployment web-server, 3 replicas"}
		ws = append(ws, nativeWatched)
	}
	var targets []*target
	tolerations := map[*watched]*int64{}
	for _, w := range ws {
		sel := labels.SelectorFromSet(labels.Set{"app": w.app})
		list, err := c.CoreV1().Pods(w.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return err
		}
		w.t = &target{namespace: w.ns, selector: sel, replicas: w.replicas, victims: map[types.UID]string{}, before: map[types.UID]bool{}}
		for _, p := range list.Items {
			w.t.before[p.UID] = true
			if p.Spec.NodeName == dead {
				w.t.victims[p.UID] = p.Name
				tolerations[w] = tolerationSeconds(&p, corev1.TaintNodeUnreachable)
			}
		}
		if len(w.t.victims) == 0 {
			return fmt.Errorf("no %s pod of %s on %s", w.app, w.ns, dead)
		}
		targets = append(targets, w.t)
	}

	s := r.opts.Settings
	// The not-ready hiccup, on another node, runs in the background from just before
	// the kill. Its NotReady is over before the dead node is marked unreachable, which
	// takes the grace period; the kill waits until the node lifecycle controller may
	// taint again, so that the dead node's taint is not delayed by the hiccup's.
	var hic *hiccup
	if r.opts.NotReadyHiccup > 0 {
		if hic, err = r.startHiccup(ctx, r.hiccupNode(ctx, dead)); err != nil {
			return err
		}
		hic.mu.Lock()
		taintAt := hic.taintAt
		hic.mu.Unlock()
		if wait := time.Until(taintAt.Add(nodeEvictionInterval + time.Second - s.NodeMonitorGracePeriod)); !taintAt.IsZero() && wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
	}

	rec := newRecorder(dead, targets...)
	stop := make(chan struct{})
	defer close(stop)
	rec.start(c, stop)
	r.logf("killing %s: kwok stops renewing its Lease (node-monitor-grace-period %s, policy's unreachable toleration %d s, default %d s)",
		dead, s.NodeMonitorGracePeriod, s.PolicyUnreachableSeconds, s.DefaultTolerationSeconds)
	killed := time.Now()
	if err := r.cl.KillNode(ctx, dead); err != nil {
		return err
	}
	longest := s.PolicyUnreachableSeconds
	if r.opts.Baseline {
		longest = s.DefaultTolerationSeconds
	}
	budget := s.NodeMonitorGracePeriod + s.NodeMonitorPeriod + s.NodeLeaseDuration + time.Duration(longest)*time.Second + 90*time.Second
	progress := time.Now()
	err = poll(ctx, budget, "every workload to recover from the node's death", func() (bool, error) {
		if err := r.cl.Exited(); err != nil {
			return false, err
		}
		_, ts := rec.snapshot()
		done := true
		for i, w := range ws {
			if w.stateful {
				done = done && !ts[i].evicted.IsZero()
			} else {
				done = done && !ts[i].recovered.IsZero()
			}
		}
		if time.Since(progress) > 30*time.Second {
			progress = time.Now()
			r.logf("%.0f s since the kill", time.Since(killed).Seconds())
		}
		return done, nil
	})
	timedOut := err != nil
	if timedOut && ctx.Err() != nil {
		return err
	}
	if timedOut {
		r.logf("%v", err)
	}

	// The last heartbeat is the Lease's last renewal: final once the node is unreachable.
	lease, err := c.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, dead, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if lease.Spec.RenewTime == nil {
		return fmt.Errorf("the Lease of %s was never renewed", dead)
	}
	heartbeat := lease.Spec.RenewTime.Time
	unreachable, ts := rec.snapshot()
	since := func(t time.Time) *float64 {
		if t.IsZero() {
			return nil
		}
		return ptr.To(round(t.Sub(heartbeat).Seconds()))
	}
	rows := map[*watched]*Row{}
	for i, w := range ws {
		t := ts[i]
		row := &Row{
			Scenario: ScenarioNodeLoss, Title: w.title, Namespace: w.ns, OptedIn: w.ns != NotOptedIn, Side: sideOf(w.ns),
			Workload: "Deployment/web-server", Node: dead, Placement: r.placements[w.ns],
			Victims: len(t.victims), TolerationSeconds: tolerations[w],
			LastHeartbeat: ptr.To(heartbeat.UTC()), KilledSeconds: since(killed),
			UnreachableSeconds: since(unreachable), EvictedSeconds: since(t.evicted),
			ReplacementSeconds: since(t.replaced), RecoverySeconds: since(t.recovered),
			ReplacementNode: t.replacementNode,
		}
		if w.stateful {
			row.Scenario, row.Workload, row.Placement = ScenarioStatefulSet, "StatefulSet/db", nil
		}
		rows[w] = row
	}
	for _, w := range ws {
		row := rows[w]
		switch {
		case w.stateful:
			continue
		case row.RecoverySeconds == nil:
			row.Outcome = fmt.Sprintf("not recovered within %.0f s of the kill", budget.Seconds())
		default:
			row.Passed = row.ReplacementNode != dead
			row.Outcome = fmt.Sprintf("replacement Running on %s", row.ReplacementNode)
		}
	}
	if r.opts.Baseline {
		with, without := rows[ws[0]], rows[ws[1]]
		if with.RecoverySeconds != nil && without.RecoverySeconds != nil && *with.RecoverySeconds > 0 {
			without.Ratio = ptr.To(round(*without.RecoverySeconds / *with.RecoverySeconds))
		}
		if err := r.statefulSet(ctx, rows[ws[2]], 2, rec, heartbeat, dead); err != nil {
			return err
		}
	}
	// The webhook's row, then native mode's, then the others.
	order := []*watched{ws[0]}
	if nativeWatched != nil {
		order = append(order, nativeWatched)
	}
	for _, w := range ws[1:] {
		if w != nativeWatched {
			order = append(order, w)
		}
	}
	for _, w := range order {
		r.rep.Rows = append(r.rep.Rows, *rows[w])
		r.logf("%s in %s: %s", w.title, w.ns, rows[w].Outcome)
	}
	if hic != nil {
		for _, row := range hic.rows() {
			r.rep.Rows = append(r.rep.Rows, row)
			r.logf("%s in %s: %s", row.Title, row.Namespace, row.Outcome)
		}
	}
	return nil
}

// hiccupNode picks the node of the not-ready hiccup: not the one that dies, one that
// runs a web-server replica of every namespace.
func (r *run) hiccupNode(ctx context.Context, dead string) string {
	nss := []string{OptedIn}
	if r.opts.Baseline {
		nss = append(nss, NotOptedIn)
	}
	candidates := slices.DeleteFunc(slices.Clone(r.nodes), func(n string) bool { return n == dead })
	for _, n := range candidates {
		all := true
		for _, ns := range nss {
			list, err := r.cl.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web-server", FieldSelector: "spec.nodeName=" + n})
			all = all && err == nil && len(list.Items) > 0
		}
		if all {
			return n
		}
	}
	return candidates[0]
}

// statefulSet finishes scenario 4 once the baseline has recovered: the StatefulSet's
// evicted pod is still Terminating and has no replacement (the StatefulSet controller
// will not run a second pod with its name while the first may still run). Then it does
// what an operator does after making sure the node is really off: the out-of-service
// taint (non-graceful node shutdown), after which the pod garbage collector deletes the
// pod and the StatefulSet replaces it.
func (r *run) statefulSet(ctx context.Context, row *Row, idx int, rec *recorder, heartbeat time.Time, dead string) error {
	c := r.cl.Client
	_, ts := rec.snapshot()
	now := ts[idx]
	if now.evicted.IsZero() {
		row.Outcome = "the StatefulSet's pod on the dead node was not evicted"
		return nil
	}
	var name string
	for _, n := range now.victims {
		name = n
	}
	pod, err := c.CoreV1().Pods(now.namespace).Get(ctx, name, metav1.GetOptions{})
	terminating := err == nil && pod.DeletionTimestamp != nil && pod.Spec.NodeName == dead
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	stuckFor := time.Since(now.evicted).Seconds()
	if !terminating || !now.replaced.IsZero() {
		row.Outcome = fmt.Sprintf("pod %s did not stay Terminating on %s (Kubernetes changed its StatefulSet behaviour?)", name, dead)
		return nil
	}
	r.logf("StatefulSet pod %s still Terminating on %s %.0f s after its eviction; adding the out-of-service taint", name, dead, stuckFor)
	tainted := time.Now()
	node, err := c.CoreV1().Nodes().Get(ctx, dead, metav1.GetOptions{})
	if err != nil {
		return err
	}
	node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: corev1.TaintNodeOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute})
	if _, err := c.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		return err
	}
	// The pod garbage collector looks every 20 s.
	err = poll(ctx, 90*time.Second, "the StatefulSet's replacement after the out-of-service taint", func() (bool, error) {
		_, ts := rec.snapshot()
		now = ts[idx]
		return !now.recovered.IsZero(), nil
	})
	row.TaintedSeconds = ptr.To(round(tainted.Sub(heartbeat).Seconds()))
	if err != nil {
		row.Outcome = fmt.Sprintf("stayed Terminating %.0f s after its eviction with no replacement; still not replaced %s after the out-of-service taint", stuckFor, "90 s")
		return nil
	}
	row.ReplacementSeconds = ptr.To(round(now.replaced.Sub(heartbeat).Seconds()))
	row.RecoverySeconds = ptr.To(round(now.recovered.Sub(heartbeat).Seconds()))
	row.ReplacementNode = now.replacementNode
	row.Passed = true
	row.Outcome = fmt.Sprintf("stayed Terminating with no replacement for %.0f s after its eviction, until the out-of-service taint; Running on %s %.1f s after the taint",
		stuckFor, now.replacementNode, now.recovered.Sub(tainted).Seconds())
	return nil
}

// chooseNode picks the node to kill: one that runs a web-server replica of every
// namespace (and a StatefulSet pod, with Baseline), preferring the one with the most
// replicas of the namespace without ha-injector.
func (r *run) chooseNode(ctx context.Context) (string, error) {
	count := func(ns, app string) (map[string]int, error) {
		list, err := r.cl.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return nil, err
		}
		per := map[string]int{}
		for _, p := range list.Items {
			per[p.Spec.NodeName]++
		}
		return per, nil
	}
	with, err := count(OptedIn, "web-server")
	if err != nil {
		return "", err
	}
	without, db, native := map[string]int{}, map[string]int{}, map[string]int{}
	if r.opts.Native {
		if native, err = count(NativeNS, "web-server"); err != nil {
			return "", err
		}
	}
	if r.opts.Baseline {
		if without, err = count(NotOptedIn, "web-server"); err != nil {
			return "", err
		}
		if db, err = count(OptedIn, "db"); err != nil {
			return "", err
		}
	}
	best, bestScore := "", -1
	for _, n := range r.nodes {
		if with[n] == 0 || (r.opts.Baseline && (without[n] == 0 || db[n] == 0)) || (r.opts.Native && native[n] == 0) {
			continue
		}
		if without[n] > bestScore {
			best, bestScore = n, without[n]
		}
	}
	if best == "" {
		return "", fmt.Errorf("no node runs a replica of every workload (with: %v, native: %v, without: %v, db: %v)", with, native, without, db)
	}
	return best, nil
}

// webServer is the seed's example Deployment under another name and replica count, its
// app label following the name.
func (r *run) webServer(ns, name string, replicas int32) *appsv1.Deployment {
	d := r.example.DeepCopy()
	d.Namespace, d.Name, d.Spec.Replicas = ns, name, ptr.To(replicas)
	for _, m := range []map[string]string{d.Labels, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels} {
		m["app"] = name
	}
	return d
}

func (r *run) create(ctx context.Context, d *appsv1.Deployment) error {
	_, err := r.cl.Client.AppsV1().Deployments(d.Namespace).Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	return nil
}

// createStatefulSet creates a 3-replica StatefulSet db and its headless Service.
func (r *run) createStatefulSet(ctx context.Context, ns string) error {
	lbls := map[string]string{"app": "db"}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: lbls, Ports: []corev1.ServicePort{{Port: 5432}}},
	}
	if _, err := r.cl.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db", Labels: lbls},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To[int32](3),
			ServiceName:         "db",
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "db", Image: "postgres:17",
					Ports: []corev1.ContainerPort{{ContainerPort: 5432}},
				}}},
			},
		},
	}
	_, err := r.cl.Client.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
	return err
}

// waitRunning waits until n pods labelled app=app in ns are Running and not being
// deleted, and returns them (as many as there were at the deadline, on error).
func (r *run) waitRunning(ctx context.Context, ns, app string, n int, timeout time.Duration) ([]corev1.Pod, error) {
	var running []corev1.Pod
	err := poll(ctx, timeout, fmt.Sprintf("%d Running pods app=%s in %s", n, app, ns), func() (bool, error) {
		list, err := r.cl.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err
		}
		running = running[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && podRunning(&p) {
				running = append(running, p)
			}
		}
		return len(running) >= n, nil
	})
	return running, err
}

// rollout changes the Deployment's pod template and waits for the rolling update to
// complete; it returns the seconds it took and whether it completed within timeout.
func (r *run) rollout(ctx context.Context, ns, name string, timeout time.Duration) (float64, bool, error) {
	c := r.cl.Client.AppsV1().Deployments(ns)
	start := time.Now()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"failover.ha-injector.io/restartedAt":%q}}}}}`, start.Format(time.RFC3339Nano))
	d, err := c.Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return 0, false, err
	}
	gen := d.Generation
	err = poll(ctx, timeout, "the rolling update of "+ns+"/"+name, func() (bool, error) {
		d, err := c.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		want := *d.Spec.Replicas
		st := d.Status
		return st.ObservedGeneration >= gen && st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want, nil
	})
	took := round(time.Since(start).Seconds())
	if err != nil && ctx.Err() != nil {
		return took, false, err
	}
	return took, err == nil, nil
}

// rolloutStuck starts a rolling update and waits for a pod of the new ReplicaSet to be
// reported Unschedulable by the scheduler while the old pods all still run. It
// returns the scheduler's message.
func (r *run) rolloutStuck(ctx context.Context, ns, name string, timeout time.Duration) (bool, string, error) {
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"failover.ha-injector.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := r.cl.Client.AppsV1().Deployments(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return false, "", err
	}
	var msg string
	err := poll(ctx, timeout, "an Unschedulable surge pod of "+ns+"/"+name, func() (bool, error) {
		list, err := r.cl.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		for _, p := range list.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
					msg = c.Message
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return false, "", err
		}
		return false, "", nil
	}
	d, err := r.cl.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, "", err
	}
	// Still stuck: not every replica updated.
	return d.Status.UpdatedReplicas < *d.Spec.Replicas, msg, nil
}

// requiredTerm is the Deployment template's required pod anti-affinity term on the
// hostname, if any.
func requiredTerm(d *appsv1.Deployment) *corev1.PodAffinityTerm {
	a := d.Spec.Template.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil {
		return nil
	}
	for i, t := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		if t.TopologyKey == corev1.LabelHostname {
			return &a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[i]
		}
	}
	return nil
}

// hasPreferredTerm says whether the Deployment template has a preferred pod
// anti-affinity term on the hostname.
func hasPreferredTerm(d *appsv1.Deployment) bool {
	a := d.Spec.Template.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil {
		return false
	}
	for _, t := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		if t.PodAffinityTerm.TopologyKey == corev1.LabelHostname {
			return true
		}
	}
	return false
}

func formatPlacement(per map[string]int) string {
	var parts []string
	for n, c := range per {
		parts = append(parts, fmt.Sprintf("%s: %d", n, c))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func round(f float64) float64 {
	return float64(int64(f*10+0.5)) / 10
}

// sideOf is how ha-injector reaches the pods of a namespace of the run.
func sideOf(ns string) string {
	switch ns {
	case NativeNS:
		return SideNative
	case NotOptedIn:
		return SideNone
	}
	return SideWebhook
}
