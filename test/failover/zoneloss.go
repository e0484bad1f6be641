package failover

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies"
	"github.com/ha-injector/ha-injector/test/harness/examples"
	"github.com/ha-injector/ha-injector/test/harness/localwebhook"
)

// The zone loss's namespaces besides OptedIn and NotOptedIn.
const (
	// HardZoneNS is labelled ha-injector.io/policy=zone-hard: a policy whose zone
	// spread is DoNotSchedule.
	HardZoneNS = "zone-do-not-schedule"
	// ZoneControl is the control's Deployment in NotOptedIn: the same hard spread
	// written by hand, without nodeTaintsPolicy (so Kubernetes' default, Ignore).
	ZoneControl = "hard-spread-without-honor"
)

// ZoneLossOptions choose what a zone-loss run does.
type ZoneLossOptions struct {
	// Settings are the cluster's and the policy's timings.
	Settings Settings
	// Zones are the node counts of the zones, in order (zone-a, zone-b, ...); the
	// first has more nodes than the others, as clusters that grew unevenly do.
	Zones []int
	// Baseline also runs the web-server in NotOptedIn, and kills the zone holding most
	// of its replicas; without it, the zone holding most of OptedIn's.
	Baseline bool
	// Log reports progress; nil is silent.
	Log func(format string, args ...any)
}

// ShortZoneLoss is what `make test` runs: shortened timings, no baseline.
func ShortZoneLoss() ZoneLossOptions {
	return ZoneLossOptions{Settings: Short().Settings, Zones: []int{3, 1, 1}}
}

// MeasuredZoneLoss is what `make failover` runs: Kubernetes' default timings and the
// baseline, 3 + 1 + 1 nodes.
func MeasuredZoneLoss() ZoneLossOptions {
	return ZoneLossOptions{Settings: KubernetesDefaults, Zones: []int{3, 1, 1}, Baseline: true}
}

// OtherWorkloads is the namespace of the pods that keep the smaller zones' nodes half
// busy; not opted in.
const OtherWorkloads = "other-workloads"

// ScenarioZoneLoss is the rows of a zone's loss, one per workload.
const ScenarioZoneLoss = "zone-loss"

// RunZoneLoss starts a simulated cluster whose nodes carry zone labels, the nodes of
// the smaller zones half taken by other workloads (as when a cluster grew a zone to make
// room), places the
// seed's 3-replica web-server opted in (the default policy: anti-affinity and a
// ScheduleAnyway zone spread), not opted in (with Baseline), and under a
// DoNotSchedule zone spread, beside the control (the same hard spread without
// nodeTaintsPolicy Honor), then kills every node of one zone at once. Each workload's
// row says where its replicas ran, the fewest Ready at any moment after the loss, how
// long none was, and when all were Running again.
func RunZoneLoss(ctx context.Context, root string, bins Binaries, opts ZoneLossOptions, dir string) (rep *Report, err error) {
	if len(opts.Zones) < 3 {
		return nil, fmt.Errorf("the zone loss needs 3 zones, not %d", len(opts.Zones))
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	rep = &Report{Settings: reportSettings(opts.Settings)}
	start := time.Now()
	example, err := examples.WebServer(root)
	if err != nil {
		return nil, err
	}
	logf("zone loss: starting a cluster of %v nodes in 3 zones (logs in %s)", opts.Zones, dir)
	cl, err := StartCluster(ctx, bins, opts.Settings, dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := cl.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	defer func() {
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w\n%s", err, cl.Logs(15))
		}
	}()
	zoneOf := map[string]string{}
	for i, n := range opts.Zones {
		zone := fmt.Sprintf("zone-%c", 'a'+i)
		for j := 1; j <= n; j++ {
			zoneOf[fmt.Sprintf("%s-%d", zone, j)] = zone
		}
	}
	if err := cl.AddZonedNodes(ctx, zoneOf); err != nil {
		return nil, err
	}
	if err := fillSmallZones(ctx, cl, zoneOf, "zone-a"); err != nil {
		return nil, err
	}
	namespaces := map[string]map[string]string{
		OptedIn:    {policies.PolicyLabel: "default"},
		HardZoneNS: {policies.PolicyLabel: "zone-hard"},
		NotOptedIn: nil,
	}
	for ns, lbls := range namespaces {
		if _, err := cl.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: lbls}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		if err := cl.WaitServiceAccount(ctx, ns); err != nil {
			return nil, err
		}
	}
	values := localwebhook.ProvidedValues(map[string]any{
		"defaultPolicy": map[string]any{"spec": map[string]any{"tolerations": map[string]any{
			"notReadySeconds": opts.Settings.PolicyNotReadySeconds, "unreachableSeconds": opts.Settings.PolicyUnreachableSeconds}}},
		"policies": map[string]any{"zone-hard": map[string]any{
			"tolerations": map[string]any{"notReadySeconds": opts.Settings.PolicyNotReadySeconds, "unreachableSeconds": opts.Settings.PolicyUnreachableSeconds},
			"zoneSpread":  map[string]any{"whenUnsatisfiable": "DoNotSchedule"},
		}},
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

	r := &run{cl: cl, opts: Options{Settings: opts.Settings}, logf: logf, rep: rep, example: example}
	workloads := []zoned{
		{ns: OptedIn, name: "web-server", title: "zone loss: web-server, default policy (anti-affinity, zone spread ScheduleAnyway)", optedIn: true},
		{ns: HardZoneNS, name: "web-server", title: "zone loss: web-server, zone spread DoNotSchedule (nodeTaintsPolicy Honor)", optedIn: true},
		{ns: NotOptedIn, name: ZoneControl, title: "control: the same DoNotSchedule spread without nodeTaintsPolicy (ha-injector not called)"},
	}
	if opts.Baseline {
		workloads = append(workloads, zoned{ns: NotOptedIn, name: "web-server", title: "zone loss: web-server, not opted in"})
	}
	for _, w := range workloads {
		d := r.webServer(w.ns, w.name, 3)
		if w.name == ZoneControl {
			d.Spec.Template.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
				MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.DoNotSchedule,
				LabelSelector: d.Spec.Selector.DeepCopy(), MatchLabelKeys: []string{appsv1.DefaultDeploymentUniqueLabelKey},
			}}
			// As short as the policy's, so the control's replacement is due as soon.
			d.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists,
				Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(opts.Settings.PolicyUnreachableSeconds)}}
		}
		if err := r.create(ctx, d); err != nil {
			return nil, err
		}
	}
	for i := range workloads {
		pods, err := r.waitRunning(ctx, workloads[i].ns, workloads[i].name, 3, 60*time.Second)
		if err != nil {
			return nil, err
		}
		workloads[i].placement = map[string]int{}
		for _, p := range pods {
			workloads[i].placement[p.Spec.NodeName]++
		}
		workloads[i].spread = describeSpread(&pods[0], corev1.LabelTopologyZone)
		workloads[i].zones = zonesOf(workloads[i].placement, zoneOf)
		logf("%s in %s: %s", workloads[i].name, workloads[i].ns, formatPlacement(workloads[i].placement))
	}

	// The zone that held most replicas of the side not opted in: the worst case the
	// default scheduler left (without Baseline: of the opted-in side).
	judged := workloads[0]
	if opts.Baseline {
		judged = workloads[3]
	}
	dead := heaviestZone(judged.placement, zoneOf)
	var deadNodes []string
	for n, z := range zoneOf {
		if z == dead {
			deadNodes = append(deadNodes, n)
		}
	}
	sort.Strings(deadNodes)

	s := newSampler(cl, workloads, zoneOf, dead)
	stop := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() { defer close(samplerDone); s.run(ctx, stop) }()
	defer func() { close(stop); <-samplerDone }()

	logf("zone loss: killing %s (%s) at once", dead, strings.Join(deadNodes, ", "))
	killed := time.Now()
	for _, n := range deadNodes {
		if err := cl.KillNode(ctx, n); err != nil {
			return nil, err
		}
	}
	longest := opts.Settings.PolicyUnreachableSeconds
	if opts.Baseline {
		longest = opts.Settings.DefaultTolerationSeconds
	}
	budget := opts.Settings.NodeMonitorGracePeriod + opts.Settings.NodeMonitorPeriod + opts.Settings.NodeLeaseDuration + time.Duration(longest)*time.Second + 60*time.Second
	// Every workload but the control recovers; the control is watched as long.
	_ = poll(ctx, budget, "every workload but the control to recover from the zone's loss", func() (bool, error) {
		if err := cl.Exited(); err != nil {
			return false, err
		}
		return s.recoveredAll(ZoneControl), nil
	})
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// The control's replacement, if it is Pending, says why.
	reason, err := unschedulable(ctx, cl, NotOptedIn, ZoneControl)
	if err != nil {
		return nil, err
	}

	heartbeat, err := lastHeartbeat(ctx, cl, deadNodes)
	if err != nil {
		return nil, err
	}
	since := func(t time.Time) *float64 {
		if t.IsZero() {
			return nil
		}
		return ptr.To(round(t.Sub(heartbeat).Seconds()))
	}
	for i, w := range workloads {
		st := s.state(i)
		row := Row{
			Scenario: ScenarioZoneLoss, Title: w.title, Namespace: w.ns, OptedIn: w.optedIn, Workload: "Deployment/" + w.name,
			Placement: w.placement, Zones: w.zones, ZoneSpread: w.spread, DeadZone: dead, Node: strings.Join(deadNodes, ","),
			LastHeartbeat: ptr.To(heartbeat.UTC()), KilledSeconds: since(killed),
			Victims: st.victims, MinReady: ptr.To(st.minReady), SecondsWithoutReady: ptr.To(round(st.withoutReady.Seconds())),
			UnreachableSeconds: since(s.zoneUnreachable()), EvictedSeconds: since(st.evicted), ReplacementSeconds: since(st.replaced),
			RecoverySeconds: since(st.recovered), ReplacementNode: st.replacementNode,
		}
		switch {
		case w.name == ZoneControl:
			row.Passed = st.recovered.IsZero() && reason != ""
			row.Outcome = "the replacement stayed Pending: " + reason + " (the lost zone's tainted nodes still count, with 0 pods)"
			if !row.Passed {
				row.Outcome = "the replacement was scheduled: the deadlock this control should show did not happen"
			}
		case st.recovered.IsZero():
			row.Outcome = fmt.Sprintf("not recovered within %.0f s of the kill", budget.Seconds())
		default:
			row.Passed = !w.optedIn || (st.withoutReady == 0 && zoneOf[st.replacementNode] != dead)
			row.Outcome = fmt.Sprintf("ran in %s; %d of 3 on the lost zone; never fewer than %d Ready, none Ready for %.1f s; all Running again at %s",
				strings.Join(w.zones, ", "), st.victims, st.minReady, st.withoutReady.Seconds(), secs(row.RecoverySeconds))
			if w.optedIn && st.withoutReady > 0 {
				row.Outcome += " (want: never none Ready)"
			}
		}
		rep.Rows = append(rep.Rows, row)
		logf("%s: %s", w.title, row.Outcome)
	}
	if err := cl.Exited(); err != nil {
		return nil, err
	}
	rep.WallSeconds = round(time.Since(start).Seconds())
	return rep, nil
}

// fillSmallZones gives every node outside the zone big one pod of OtherWorkloads,
// bound to it, that requests half its CPU and memory: the scheduler's resource scores
// then favour big's empty nodes, as they would on a cluster that grew a zone for room.
func fillSmallZones(ctx context.Context, cl *Cluster, zoneOf map[string]string, big string) error {
	if _, err := cl.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: OtherWorkloads}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := cl.WaitServiceAccount(ctx, OtherWorkloads); err != nil {
		return err
	}
	half := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("128Gi")}
	for _, node := range slices.Sorted(maps.Keys(zoneOf)) {
		if zoneOf[node] == big {
			continue
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: OtherWorkloads, Name: "busy-" + node, Labels: map[string]string{"app": "busy"}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
				Name: "app", Image: "registry.k8s.io/pause:3.10", Resources: corev1.ResourceRequirements{Requests: half, Limits: half},
			}}},
		}
		if _, err := cl.Client.CoreV1().Pods(OtherWorkloads).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// zoned is a workload of the zone loss.
type zoned struct {
	ns, name, title string
	optedIn         bool
	placement       map[string]int
	zones           []string
	spread          string
}

// describeSpread is the pod's topology spread constraint on key, in a few words.
func describeSpread(p *corev1.Pod, key string) string {
	for _, c := range p.Spec.TopologySpreadConstraints {
		if c.TopologyKey != key {
			continue
		}
		s := fmt.Sprintf("maxSkew %d, %s", c.MaxSkew, c.WhenUnsatisfiable)
		if c.NodeTaintsPolicy != nil {
			s += ", nodeTaintsPolicy " + string(*c.NodeTaintsPolicy)
		}
		return s
	}
	return ""
}

// zonesOf lists, in order, the zones of the nodes in placement.
func zonesOf(placement map[string]int, zoneOf map[string]string) []string {
	set := map[string]bool{}
	for n := range placement {
		set[zoneOf[n]] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// heaviestZone is the zone with the most pods in placement (the first in name order
// on a tie).
func heaviestZone(placement map[string]int, zoneOf map[string]string) string {
	per := map[string]int{}
	for n, c := range placement {
		per[zoneOf[n]] += c
	}
	best, bestN := "", -1
	for _, z := range slices.Sorted(maps.Keys(per)) {
		if per[z] > bestN {
			best, bestN = z, per[z]
		}
	}
	return best
}

// lastHeartbeat is the latest last renewal of the nodes' Leases: once every node of
// the zone is gone, the moment the zone last spoke.
func lastHeartbeat(ctx context.Context, cl *Cluster, nodes []string) (time.Time, error) {
	var last time.Time
	for _, n := range nodes {
		lease, err := cl.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return last, err
		}
		if lease.Spec.RenewTime == nil {
			return last, fmt.Errorf("the Lease of %s was never renewed", n)
		}
		if t := lease.Spec.RenewTime.Time; t.After(last) {
			last = t
		}
	}
	return last, nil
}

// unschedulable returns the scheduler's message for a Pending pod of the workload,
// "" when none is Unschedulable.
func unschedulable(ctx context.Context, cl *Cluster, ns, app string) (string, error) {
	list, err := cl.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return "", err
	}
	for _, p := range list.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return c.Message, nil
			}
		}
	}
	return "", nil
}

// sampler counts each workload's Ready replicas, as the API server reports them
// (Services route to those), every 200 ms from the zone's loss on.
type sampler struct {
	cl        *Cluster
	workloads []zoned
	zoneOf    map[string]string
	dead      string

	mu     sync.Mutex
	states []zoneState
	// unreachable is when every node of the lost zone was first seen not Ready.
	unreachable time.Time
}

// zoneState is what the sampler saw of one workload.
type zoneState struct {
	// victims are its pods in the lost zone when it died.
	victims int
	// minReady is the fewest Ready replicas seen; withoutReady how long none was.
	minReady     int
	withoutReady time.Duration
	// recovered is when all replicas were first Running and Ready off the lost zone.
	recovered       time.Time
	replacementNode string
	// evicted is when every pod it had in the lost zone was first seen marked for
	// deletion (or gone); replaced when its first replacement was Running and Ready
	// off the lost zone.
	evicted, replaced time.Time
	before            map[string]bool
	// inDead are the names of its pods in the lost zone when it died.
	inDead map[string]bool
}

func newSampler(cl *Cluster, workloads []zoned, zoneOf map[string]string, dead string) *sampler {
	s := &sampler{cl: cl, workloads: workloads, zoneOf: zoneOf, dead: dead, states: make([]zoneState, len(workloads))}
	for i, w := range workloads {
		s.states[i].minReady = 3
		for n, c := range w.placement {
			if zoneOf[n] == dead {
				s.states[i].victims += c
			}
		}
	}
	return s
}

// samplePeriod is how often the sampler counts.
const samplePeriod = 200 * time.Millisecond

func (s *sampler) run(ctx context.Context, stop <-chan struct{}) {
	for i, w := range s.workloads {
		list, err := s.cl.Client.CoreV1().Pods(w.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + w.name})
		if err == nil {
			s.mu.Lock()
			s.states[i].before, s.states[i].inDead = map[string]bool{}, map[string]bool{}
			for _, p := range list.Items {
				s.states[i].before[p.Name] = true
				if s.zoneOf[p.Spec.NodeName] == s.dead {
					s.states[i].inDead[p.Name] = true
				}
			}
			s.mu.Unlock()
		}
	}
	tick := time.NewTicker(samplePeriod)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case now := <-tick.C:
			elapsed := now.Sub(last)
			last = now
			s.observeNodes(ctx, now)
			for i, w := range s.workloads {
				list, err := s.cl.Client.CoreV1().Pods(w.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + w.name})
				if err != nil {
					continue
				}
				ready, offDead, replacement, stillInDead := 0, 0, "", 0
				for _, p := range list.Items {
					if s.states[i].inDead[p.Name] && p.DeletionTimestamp == nil {
						stillInDead++
					}
					if p.DeletionTimestamp != nil || !podRunning(&p) {
						continue
					}
					ready++
					if s.zoneOf[p.Spec.NodeName] != s.dead {
						offDead++
						if !s.states[i].before[p.Name] {
							replacement = p.Spec.NodeName
						}
					}
				}
				s.mu.Lock()
				st := &s.states[i]
				st.minReady = min(st.minReady, ready)
				if ready == 0 {
					st.withoutReady += elapsed
				}
				if st.replacementNode == "" && replacement != "" {
					st.replacementNode, st.replaced = replacement, now
				}
				if st.evicted.IsZero() && len(st.inDead) > 0 && stillInDead == 0 {
					st.evicted = now
				}
				if st.recovered.IsZero() && offDead >= 3 {
					st.recovered = now
				}
				s.mu.Unlock()
			}
		}
	}
}

// observeNodes records when every node of the lost zone is first seen not Ready.
func (s *sampler) observeNodes(ctx context.Context, now time.Time) {
	s.mu.Lock()
	seen := !s.unreachable.IsZero()
	s.mu.Unlock()
	if seen {
		return
	}
	list, err := s.cl.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: corev1.LabelTopologyZone + "=" + s.dead})
	if err != nil || len(list.Items) == 0 {
		return
	}
	for i := range list.Items {
		if nodeReady(&list.Items[i]) {
			return
		}
	}
	s.mu.Lock()
	s.unreachable = now
	s.mu.Unlock()
}

// recoveredAll says every workload but the one named except has recovered.
func (s *sampler) recoveredAll(except string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range s.workloads {
		if w.name != except && s.states[i].recovered.IsZero() {
			return false
		}
	}
	return true
}

func (s *sampler) zoneUnreachable() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unreachable
}

func (s *sampler) state(i int) zoneState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.states[i]
}
