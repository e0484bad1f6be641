package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ha-injector/ha-injector/test/failover"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
)

// What kill-node watches for before it stops (-until).
const (
	untilMoved   = "moved"
	untilTainted = "tainted"
)

// killOptions are kill-node's flags.
type killOptions struct {
	node, kubeconfig, until string
	timeout                 time.Duration
}

// killNodeMain is `demo kill-node NODE`: it returns the exit status.
func killNodeMain(args []string) int {
	fs := flag.NewFlagSet("kill-node", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./hack/demo kill-node NODE [flags]\n\n"+
			"Kills NODE, one of make demo's KWOK nodes, as make failover does: KWOK stops renewing its Lease, so the node\n"+
			"lifecycle controller marks it unreachable and taints it, and its pods are evicted after their toleration.\n"+
			"Then it prints the node and the web-server pods of demo and demo-plain whenever they change.\n\n")
		fs.PrintDefaults()
	}
	var o killOptions
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "the demo's kubeconfig (default: the one make demo writes, "+workDir+"/kubeconfig)")
	fs.StringVar(&o.until, "until", untilMoved, "watch until: moved (the pods of both namespaces run off the node again) or tainted (the node is tainted unreachable)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "stop watching after this long (exit status 1)")
	// NODE may come before or after the flags.
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		o.node = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if o.node == "" || fs.NArg() > 0 || (o.until != untilMoved && o.until != untilTainted) {
		fs.Usage()
		return 2
	}
	if o.kubeconfig == "" {
		root, err := controlplane.RepoRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "kill-node:", err)
			return 1
		}
		o.kubeconfig = filepath.Join(root, workDir, "kubeconfig")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := killNode(ctx, os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, "kill-node:", err)
		return 1
	}
	return 0
}

// killNode kills o.node and watches until o.until happens, o.timeout passes (an error)
// or ctx ends (Ctrl-C: no error).
func killNode(ctx context.Context, out io.Writer, o killOptions) error {
	if _, err := os.Stat(o.kubeconfig); err != nil {
		return fmt.Errorf("no demo cluster (start one with make demo): %w", err)
	}
	cs, err := clientFor(o.kubeconfig)
	if err != nil {
		return err
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, o.node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	// Only the demo's fake nodes: on any other cluster this would do nothing anyway.
	if node.Annotations["kwok.x-k8s.io/node"] != "fake" {
		return fmt.Errorf("node %s is not one of the demo's KWOK nodes", o.node)
	}
	if _, managed := node.Labels[failover.ManagedLabel]; !managed {
		fmt.Fprintf(out, "%s is dead already (KWOK does not manage it)\n", o.node)
	} else if err := (&failover.Cluster{Client: cs}).KillNode(ctx, o.node); err != nil {
		return err
	}
	fmt.Fprintf(out, "Killed %s: KWOK no longer renews its Lease, as if it had lost power. The node lifecycle controller marks it unreachable"+
		" after kube-controller-manager's node-monitor-grace-period and taints it; each pod there is evicted when its toleration runs out,"+
		" and its ReplicaSet's replacement scheduled elsewhere. Watching (Ctrl-C stops watching; the demo keeps running):\n", o.node)
	start := time.Now()
	namespaces := []string{optedIn, notOptedIn}
	moved := map[string]bool{}
	var last []byte
	for deadline := start.Add(o.timeout); ; {
		n, err := cs.CoreV1().Nodes().Get(ctx, o.node, metav1.GetOptions{})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		var now bytes.Buffer
		fmt.Fprintf(&now, "node %s: Ready %s, taints %s\n", o.node, readyStatus(n), taints(n))
		if err := printPods(ctx, &now, cs, namespaces); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		elapsed := time.Since(start).Seconds()
		if !bytes.Equal(now.Bytes(), last) {
			fmt.Fprintf(out, "\n[%3.0f s]\n", elapsed)
			if _, err := out.Write(now.Bytes()); err != nil {
				return err
			}
			last = now.Bytes()
		}
		for _, ns := range namespaces {
			if moved[ns] {
				continue
			}
			ok, err := movedOff(ctx, cs, ns, o.node)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if ok {
				moved[ns] = true
				fmt.Fprintf(out, "[%3.0f s] %s: 3 web-server pods Running off %s\n", elapsed, ns, o.node)
			}
		}
		switch {
		case o.until == untilTainted && hasTaint(n, corev1.TaintNodeUnreachable):
			fmt.Fprintf(out, "%s is tainted %s after %.0f s\n", o.node, corev1.TaintNodeUnreachable, elapsed)
			return nil
		case o.until == untilMoved && len(moved) == len(namespaces):
			fmt.Fprintf(out, "The pods of %s run off %s again after %.0f s\n", strings.Join(namespaces, " and "), o.node, elapsed)
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("not %s within %s", o.until, o.timeout)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// movedOff says whether namespace has 3 web-server pods Running, none on node.
func movedOff(ctx context.Context, cs kubernetes.Interface, namespace, node string) (bool, error) {
	list, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=web-server"})
	if err != nil {
		return false, err
	}
	running := slices.DeleteFunc(list.Items, func(p corev1.Pod) bool {
		return p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || p.Spec.NodeName == node
	})
	return len(running) >= 3, nil
}

func readyStatus(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

func taints(n *corev1.Node) string {
	if len(n.Spec.Taints) == 0 {
		return "<none>"
	}
	var s []string
	for _, t := range n.Spec.Taints {
		s = append(s, t.Key+":"+string(t.Effect))
	}
	return strings.Join(s, ", ")
}

func hasTaint(n *corev1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key && t.Effect == corev1.TaintEffectNoExecute })
}
