package failover

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// target is a workload whose recovery from the node's death is timed.
type target struct {
	namespace string
	selector  labels.Selector
	replicas  int
	// victims are its pods on the dead node when it died (UID to name); before are
	// all its pods then, so that any other pod is a replacement.
	victims map[types.UID]string
	before  map[types.UID]bool

	// When each was first seen (zero: not yet): every victim evicted (marked for
	// deletion), the first replacement Running, and all replicas Running again on the
	// surviving nodes.
	evicted, replaced, recovered time.Time
	// replacementNode is where the first replacement runs.
	replacementNode string
}

// recorder watches pods and the dead node through informers and timestamps, on this
// machine's clock (the one KWOK stamps the Lease with), the first moment each
// milestone is visible.
type recorder struct {
	deadNode string

	mu sync.Mutex
	// synced is set once both informers have listed everything: before that a pod
	// missing from the cache proves nothing.
	synced      bool
	unreachable time.Time
	targets     []*target
	pods, nodes cache.Store
}

func newRecorder(deadNode string, targets ...*target) *recorder {
	return &recorder{deadNode: deadNode, targets: targets}
}

// start runs the informers until stop is closed and returns once they have synced.
func (r *recorder) start(client kubernetes.Interface, stop <-chan struct{}) {
	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods().Informer()
	nodes := factory.Core().V1().Nodes().Informer()
	r.pods, r.nodes = pods.GetStore(), nodes.GetStore()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.observe() },
		UpdateFunc: func(any, any) { r.observe() },
		DeleteFunc: func(any) { r.observe() },
	}
	_, _ = pods.AddEventHandler(handler)
	_, _ = nodes.AddEventHandler(handler)
	factory.Start(stop)
	factory.WaitForCacheSync(stop)
	r.mu.Lock()
	r.synced = true
	r.mu.Unlock()
	r.observe()
}

// observe re-evaluates every milestone against the informers' current state.
func (r *recorder) observe() {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.synced {
		return
	}
	if r.unreachable.IsZero() {
		if obj, ok, _ := r.nodes.GetByKey(r.deadNode); ok && !nodeReady(obj.(*corev1.Node)) {
			r.unreachable = now
		}
	}
	pods := r.pods.List()
	for _, t := range r.targets {
		// A victim counts as evicted once marked for deletion, or gone altogether.
		evicted, running := len(t.victims), 0
		for _, obj := range pods {
			pod := obj.(*corev1.Pod)
			if pod.Namespace != t.namespace || !t.selector.Matches(labels.Set(pod.Labels)) {
				continue
			}
			if _, victim := t.victims[pod.UID]; victim {
				if pod.DeletionTimestamp == nil {
					evicted--
				}
				continue
			}
			if pod.DeletionTimestamp != nil || pod.Spec.NodeName == r.deadNode || !podRunning(pod) {
				continue
			}
			running++
			if t.replaced.IsZero() && !t.before[pod.UID] {
				t.replaced, t.replacementNode = now, pod.Spec.NodeName
			}
		}
		if t.evicted.IsZero() && evicted == len(t.victims) {
			t.evicted = now
		}
		if t.recovered.IsZero() && running >= t.replicas && !t.replaced.IsZero() {
			t.recovered = now
		}
	}
}

// snapshot returns a copy of the milestones, under the lock.
func (r *recorder) snapshot() (unreachable time.Time, targets []target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.targets {
		targets = append(targets, *t)
	}
	return r.unreachable, targets
}

func podRunning(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
