package failover

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/ha-injector/ha-injector/policies"
)

// The not-ready hiccup: a node's kubelet is alive (its Lease is renewed) but reports
// Ready=False for a while, as during a container runtime or CNI restart, then Ready
// again. The node lifecycle controller taints the node not-ready:NoExecute at once
// (one node-monitor-period; the grace period is for missing heartbeats, and there are
// none), and removes the taint when the node is Ready again; a pod is evicted only if
// the taint stays longer than its not-ready toleration.

// StatusByTestLabel on a node makes KWOK leave the node's status to the test while it
// keeps renewing the node's Lease (kwok --disregard-status-with-label-selector, given
// to KWOK by StartCluster): the test then posts the Ready condition as the node's
// kubelet would.
const StatusByTestLabel = "failover.ha-injector.io/status-by-test"

// nodeEvictionInterval is how often the node lifecycle controller may taint a node
// NoExecute: 1 / --node-eviction-rate (0.1 by default, burst 1) while the zone is
// healthy. With 3 nodes it stays healthy with 2 not Ready (ComputeZoneState:
// partial disruption needs more than 2).
const nodeEvictionInterval = 10 * time.Second

// hiccupSlack is how long the hiccup is watched past the moment its pods would have
// been evicted had the taint stayed.
const hiccupSlack = 5 * time.Second

// controlApp labels the hiccup's control pod, apart from every workload's selector.
const controlApp = "not-ready-control"

// cniNotReady is the Ready condition a kubelet posts while its CNI plugin is not ready
// (the kubelet's runtime network check).
func cniNotReady(now metav1.Time) corev1.NodeCondition {
	return corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady",
		Message:           "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
		LastHeartbeatTime: now, LastTransitionTime: now,
	}
}

func kubeletReady(now metav1.Time) corev1.NodeCondition {
	return corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
	}
}

// hiccupTarget is a set of pods on the hiccup's node whose evictions are watched.
type hiccupTarget struct {
	row *Row
	// pods are the pods on the node when it went NotReady (UID to name).
	pods map[types.UID]string
	// evicted is when each was first seen marked for deletion, or gone.
	evicted map[types.UID]time.Time
	// wantEvicted: the control, whose toleration is shorter than the hiccup.
	wantEvicted bool
}

// hiccup watches one node through its not-ready hiccup.
type hiccup struct {
	r        *run
	node     string
	duration time.Duration
	targets  []*hiccupTarget

	mu sync.Mutex
	// notReadyAt: Ready=False posted; taintAt, untaintAt: the not-ready NoExecute
	// taint first seen, and gone again; readyAt: Ready=True posted.
	notReadyAt, taintAt, readyAt, untaintAt time.Time
	// unreachable is set if the node was ever tainted unreachable: it must not be,
	// its Lease being renewed.
	unreachable bool
	// renewals are the Lease's renew times seen while the node reported NotReady.
	renewals     map[time.Time]bool
	watchedUntil time.Time
	err          error

	tainted, done chan struct{}
}

// startHiccup puts a control pod on the node, makes the node report NotReady and
// returns once the not-ready taint is on it (or the wait for it gave up: the rows say
// so). The hiccup goes on in the background; rows waits for its end.
func (r *run) startHiccup(ctx context.Context, node string) (*hiccup, error) {
	c := r.cl.Client
	s := r.opts.Settings
	h := &hiccup{r: r, node: node, duration: r.opts.NotReadyHiccup, renewals: map[time.Time]bool{},
		tainted: make(chan struct{}), done: make(chan struct{})}

	// The control: a pod on the node that tolerates not-ready for less than the
	// hiccup lasts. Its eviction shows the taint does evict.
	control := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: OptedIn, Name: controlApp, Labels: map[string]string{"app": controlApp},
			Annotations: map[string]string{policies.InjectAnnotation: "false"}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: r.example.Spec.Template.Spec.Containers,
			Tolerations: []corev1.Toleration{{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists,
				Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(s.PolicyUnreachableSeconds)}},
		},
	}
	if _, err := c.CoreV1().Pods(OptedIn).Create(ctx, control, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating the hiccup's control pod: %w", err)
	}
	if _, err := r.waitRunning(ctx, OptedIn, controlApp, 1, 60*time.Second); err != nil {
		return nil, err
	}

	type watched struct {
		ns, app, title, workload string
		control                  bool
	}
	watch := []watched{{OptedIn, "web-server", "not-ready hiccup: Deployment web-server", "Deployment/web-server", false}}
	if r.opts.Baseline {
		watch = append(watch, watched{NotOptedIn, "web-server", "not-ready hiccup: Deployment web-server", "Deployment/web-server", false})
	}
	watch = append(watch, watched{OptedIn, controlApp, fmt.Sprintf("control: a pod tolerating not-ready for %d s (ha-injector opted out)", s.PolicyUnreachableSeconds),
		"Pod/" + controlApp, true})
	for _, w := range watch {
		list, err := c.CoreV1().Pods(w.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + w.app, FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return nil, err
		}
		t := &hiccupTarget{pods: map[types.UID]string{}, evicted: map[types.UID]time.Time{}, wantEvicted: w.control,
			row: &Row{Scenario: ScenarioNotReadyHiccup, Title: w.title, Namespace: w.ns, OptedIn: w.ns == OptedIn && !w.control,
				Workload: w.workload, Node: node}}
		if w.control {
			t.row.Scenario = ScenarioNotReadyControl
		}
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			t.pods[p.UID] = p.Name
			t.row.NotReadyTolerationSeconds = tolerationSeconds(&p, corev1.TaintNodeNotReady)
		}
		if len(t.pods) == 0 {
			return nil, fmt.Errorf("no %s pod of %s on %s for the hiccup", w.app, w.ns, node)
		}
		t.row.Victims = len(t.pods)
		h.targets = append(h.targets, t)
	}

	r.logf("not-ready hiccup: %s reports Ready=False for %s while KWOK keeps renewing its Lease (policy's not-ready toleration %d s)",
		node, h.duration, s.PolicyNotReadySeconds)
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, StatusByTestLabel)
	if _, err := c.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return nil, err
	}
	if err := h.setReady(ctx, false); err != nil {
		return nil, err
	}
	go h.run(ctx)
	select {
	case <-h.tainted:
		h.mu.Lock()
		r.logf("not-ready hiccup: %s tainted %s:NoExecute %.1f s after it reported NotReady", node, corev1.TaintNodeNotReady, h.taintAt.Sub(h.notReadyAt).Seconds())
		h.mu.Unlock()
	case <-h.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return h, nil
}

// setReady posts the node's Ready condition as its kubelet would, and (on the way back
// to Ready) hands its status back to KWOK.
func (h *hiccup) setReady(ctx context.Context, ready bool) error {
	nodes := h.r.cl.Client.CoreV1().Nodes()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(ctx, h.node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		cond := cniNotReady(now)
		if ready {
			cond = kubeletReady(now)
		}
		conds := n.Status.Conditions[:0:0]
		for _, c := range n.Status.Conditions {
			if c.Type != corev1.NodeReady {
				conds = append(conds, c)
			}
		}
		n.Status.Conditions = append(conds, cond)
		_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("posting Ready=%v for %s: %w", ready, h.node, err)
	}
	h.mu.Lock()
	if ready {
		h.readyAt = time.Now()
	} else {
		h.notReadyAt = time.Now()
	}
	h.mu.Unlock()
	if !ready {
		return nil
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, StatusByTestLabel)
	_, err = nodes.Patch(ctx, h.node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// run watches the node and its pods every 200 ms: until the taint appears (bounded),
// through the hiccup, back to Ready, and on until the pods would have been evicted had
// the taint stayed.
func (h *hiccup) run(ctx context.Context) {
	defer close(h.done)
	s := h.r.opts.Settings
	tainted := false
	fail := func(err error) {
		h.mu.Lock()
		h.err = err
		h.mu.Unlock()
	}
	// However the hiccup ends, the node is Ready again and KWOK's.
	defer func() {
		h.mu.Lock()
		back := !h.readyAt.IsZero()
		h.mu.Unlock()
		if !back && ctx.Err() == nil {
			if err := h.setReady(ctx, true); err != nil {
				fail(err)
			}
		}
	}()
	taintBy := time.Now().Add(s.NodeMonitorPeriod + nodeEvictionInterval + 10*time.Second)
	readyBy := time.Now().Add(h.duration)
	giveUp := readyBy.Add(time.Duration(s.PolicyNotReadySeconds)*time.Second + s.NodeMonitorPeriod + time.Minute)
	for {
		if err := h.observe(ctx); err != nil {
			if ctx.Err() == nil {
				fail(err)
			}
			return
		}
		now := time.Now()
		h.mu.Lock()
		taintAt, readyAt, untaintAt := h.taintAt, h.readyAt, h.untaintAt
		h.mu.Unlock()
		if !tainted && !taintAt.IsZero() {
			tainted = true
			close(h.tainted)
		}
		if (taintAt.IsZero() && now.After(taintBy)) || now.After(giveUp) {
			return // the rows say what did not happen
		}
		if readyAt.IsZero() && now.After(readyBy) {
			if err := h.setReady(ctx, true); err != nil {
				fail(err)
				return
			}
			h.r.logf("not-ready hiccup: %s reports Ready again after %s", h.node, h.duration)
			continue
		}
		// Watched until the pods would have been evicted had the taint stayed.
		until := taintAt.Add(time.Duration(s.PolicyNotReadySeconds)*time.Second + hiccupSlack)
		if !readyAt.IsZero() && !untaintAt.IsZero() && now.After(until) {
			h.mu.Lock()
			h.watchedUntil = now
			h.mu.Unlock()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// observe records what is visible now: the node's taints, its Lease, the pods.
func (h *hiccup) observe(ctx context.Context) error {
	c := h.r.cl.Client
	now := time.Now()
	node, err := c.CoreV1().Nodes().Get(ctx, h.node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	lease, err := c.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, h.node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	present := map[*hiccupTarget]map[types.UID]bool{}
	for _, t := range h.targets {
		list, err := c.CoreV1().Pods(t.row.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + h.node})
		if err != nil {
			return err
		}
		present[t] = map[types.UID]bool{}
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				present[t][p.UID] = true
			}
		}
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	notReadyTaint := false
	for _, taint := range node.Spec.Taints {
		switch {
		case taint.Key == corev1.TaintNodeNotReady && taint.Effect == corev1.TaintEffectNoExecute:
			notReadyTaint = true
		case taint.Key == corev1.TaintNodeUnreachable:
			h.unreachable = true
		}
	}
	if notReadyTaint && h.taintAt.IsZero() {
		h.taintAt = now
	}
	if !notReadyTaint && !h.taintAt.IsZero() && h.untaintAt.IsZero() {
		h.untaintAt = now
	}
	if h.readyAt.IsZero() && lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(h.notReadyAt) {
		h.renewals[lease.Spec.RenewTime.Time] = true
	}
	for _, t := range h.targets {
		for uid := range t.pods {
			if _, seen := t.evicted[uid]; !seen && !present[t][uid] {
				t.evicted[uid] = now
			}
		}
	}
	return nil
}

// rows waits for the hiccup's end and returns its rows: times count from the moment the
// node reported NotReady.
func (h *hiccup) rows() []Row {
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	since := func(t time.Time) *float64 {
		if t.IsZero() {
			return nil
		}
		return ptr.To(round(t.Sub(h.notReadyAt).Seconds()))
	}
	var out []Row
	for _, t := range h.targets {
		row := *t.row
		row.NotReadyForSeconds = since(h.readyAt)
		row.NotReadyTaintSeconds = since(h.taintAt)
		row.NotReadyTaintRemovedSeconds = since(h.untaintAt)
		row.WatchedSeconds = since(h.watchedUntil)
		row.LeaseRenewals = ptr.To(len(h.renewals))
		row.Evicted = ptr.To(len(t.evicted))
		var last time.Time
		for _, at := range t.evicted {
			if at.After(last) {
				last = at
			}
		}
		row.EvictedSeconds = since(last)
		tol := "none"
		if row.NotReadyTolerationSeconds != nil {
			tol = fmt.Sprintf("%d s", *row.NotReadyTolerationSeconds)
		}
		switch {
		case h.err != nil:
			row.Outcome = "the hiccup did not run through: " + h.err.Error()
		case h.taintAt.IsZero():
			row.Outcome = fmt.Sprintf("the %s taint never appeared: the hiccup proves nothing", corev1.TaintNodeNotReady)
		case h.unreachable:
			row.Outcome = "the node was tainted unreachable although its Lease was renewed"
		case len(h.renewals) == 0:
			row.Outcome = "the node's Lease was not renewed while it reported NotReady"
		case h.untaintAt.IsZero() || h.watchedUntil.IsZero():
			row.Outcome = "the not-ready taint was not removed after the node reported Ready again"
		default:
			taint := fmt.Sprintf("the %s:NoExecute taint was on %s from %.1f s to %.1f s after it reported NotReady (for %.0f s; Lease renewed %d times meanwhile)",
				corev1.TaintNodeNotReady, h.node, h.taintAt.Sub(h.notReadyAt).Seconds(), h.untaintAt.Sub(h.notReadyAt).Seconds(),
				h.readyAt.Sub(h.notReadyAt).Seconds(), len(h.renewals))
			evicted := len(t.evicted)
			if t.wantEvicted {
				row.Passed = evicted == len(t.pods)
				row.Outcome = fmt.Sprintf("evicted %.1f s after the node reported NotReady (not-ready toleration %s): %s", last.Sub(h.notReadyAt).Seconds(), tol, taint)
				if !row.Passed {
					row.Outcome = fmt.Sprintf("not evicted with a not-ready toleration of %s: %s", tol, taint)
				}
				break
			}
			row.Passed = evicted == 0
			row.Outcome = fmt.Sprintf("%d of %d pods on the node evicted (not-ready toleration %s; watched until %.0f s): %s",
				evicted, len(t.pods), tol, h.watchedUntil.Sub(h.notReadyAt).Seconds(), taint)
		}
		out = append(out, row)
	}
	return out
}

// tolerationSeconds is the tolerationSeconds the taint eviction controller uses for the
// pod and the NoExecute taint key: its first toleration that matches.
func tolerationSeconds(p *corev1.Pod, key string) *int64 {
	for _, t := range p.Spec.Tolerations {
		keyMatches := t.Key == key || (t.Key == "" && t.Operator == corev1.TolerationOpExists)
		if keyMatches && (t.Effect == "" || t.Effect == corev1.TaintEffectNoExecute) {
			return t.TolerationSeconds
		}
	}
	return nil
}
