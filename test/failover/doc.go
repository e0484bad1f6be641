// Package failover measures what ha-injector is for: how long a workload takes to run
// all its replicas again after a node dies, with and without ha-injector, in one
// simulated cluster.
//
// The cluster is the real control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, all built from Go modules by hack/control-plane.sh and
// hack/cluster.sh) plus KWOK's controller, which plays the kubelets of fake nodes: it
// renews each node's Lease, and runs pods to Running and through deletion. A node dies
// when the test removes the label by which KWOK selects the nodes it manages: its Lease
// stops being renewed, and from there everything is Kubernetes' own doing, as on a real
// cluster: the node lifecycle controller marks it unreachable and taints it, the taint
// eviction controller evicts its pods by their tolerationSeconds, the ReplicaSet
// controller creates replacements and the scheduler places them.
//
// ha-injector runs in this process as the API server's webhook, installed from the
// chart's rendered MutatingWebhookConfiguration, as in test/e2e. Beside it, in a
// namespace of its own that the webhook leaves out, native mode (native.go): the API
// server applies the same policy itself, and the node loss times its web-server too.
//
// Just before the node dies, another node has a not-ready hiccup (hiccup.go): its
// kubelet, alive, reports NotReady for a while (KWOK keeps renewing its Lease while the
// test posts the node's Ready condition), as during a container runtime or CNI
// restart. The node lifecycle controller taints it not-ready:NoExecute; the opted-in
// pods, tolerating that taint longer than the hiccup lasts, are not evicted, and a
// control pod that tolerates it for less is.
//
// The TCP leg (tcp.go, netns.go) measures with real kernel sockets how long a client's
// connection to a dead peer stays open: idle with keepalive, and with unacknowledged
// data, with the kernel's defaults and with the sysctls the engine injects, applied by
// running the injected ha-sysctl command in the client's network namespace. It needs
// root; TestTCPDeadPeerShort is its short version, with small values.
//
// The short version (TestShortFailover, part of `make test`) shortens the node monitor
// grace period, the Lease and the policy's toleration, and asserts that recovery
// happened. `make failover` (cmd/failover) runs the measured version with Kubernetes'
// default timings, side by side with a namespace without ha-injector, and prints the
// table docs/failover.md quotes.
package failover
