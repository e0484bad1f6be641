package failover

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/ha-injector/ha-injector/certs"
	"github.com/ha-injector/ha-injector/policies/v1alpha1"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/proc"
)

// Versions of what the cluster runs, as hack/control-plane.sh and hack/cluster.sh build them.
const (
	KubernetesVersion = "v1.37.2"
	KWOKVersion       = "v0.8.0"
)

// ManagedLabel selects the nodes KWOK plays the kubelet of (--manage-nodes-with-label-selector).
// Removing it from a node is how a node dies: KWOK stops renewing its Lease.
const ManagedLabel = "failover.ha-injector.io/kubelet"

// Binaries are the paths of everything the simulated cluster runs.
type Binaries struct {
	Etcd, APIServer, ControllerManager, Scheduler, KWOK string
	// KWOKStages is the config file with the Stages kwokctl gives the kwok controller.
	KWOKStages string
}

// FindBinaries builds (once, cached outside the repository) and returns the binaries:
// kube-apiserver and etcd from hack/control-plane.sh (or KUBEBUILDER_ASSETS), the rest
// from hack/cluster.sh.
func FindBinaries(root string) (Binaries, error) {
	assets, err := controlplane.Assets(root)
	if err != nil {
		return Binaries{}, err
	}
	cmd := exec.Command(filepath.Join(root, "hack", "cluster.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("hack/cluster.sh: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	b := Binaries{
		Etcd:              filepath.Join(assets, "etcd"),
		APIServer:         filepath.Join(assets, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Scheduler:         filepath.Join(dir, "kube-scheduler"),
		KWOK:              filepath.Join(dir, "kwok"),
		KWOKStages:        filepath.Join(dir, "kwok-stages.yaml"),
	}
	for _, p := range []string{b.Etcd, b.APIServer, b.ControllerManager, b.Scheduler, b.KWOK, b.KWOKStages} {
		if _, err := os.Stat(p); err != nil {
			return Binaries{}, err
		}
	}
	return b, nil
}

// Settings are the timings that decide how fast a dead node's pods are replaced.
type Settings struct {
	// NodeMonitorGracePeriod is kube-controller-manager's --node-monitor-grace-period: how
	// long a node may go without a heartbeat before it is marked unreachable.
	NodeMonitorGracePeriod time.Duration
	// NodeMonitorPeriod is --node-monitor-period: how often the node lifecycle
	// controller checks.
	NodeMonitorPeriod time.Duration
	// NodeLeaseDuration is the kubelet's --node-lease-duration-seconds; the kubelet (here
	// KWOK) renews the Lease every quarter of it.
	NodeLeaseDuration time.Duration
	// DefaultTolerationSeconds is what the API server's DefaultTolerationSeconds
	// admission plugin gives every pod (--default-not-ready-toleration-seconds and
	// --default-unreachable-toleration-seconds).
	DefaultTolerationSeconds int64
	// PolicyNotReadySeconds and PolicyUnreachableSeconds are the default HAPolicy's
	// notReadySeconds and unreachableSeconds.
	PolicyNotReadySeconds, PolicyUnreachableSeconds int64
}

// KubernetesDefaults are the timings of an unconfigured cluster: Kubernetes v1.37's
// kube-controller-manager defaults (pkg/controller/nodelifecycle/config/v1alpha1:
// the grace period has been 50 s since v1.32, 40 s before), the kubelet's 40 s Lease,
// 300 s default tolerations, and the default policy's tolerations.
var KubernetesDefaults = Settings{
	NodeMonitorGracePeriod:   50 * time.Second,
	NodeMonitorPeriod:        5 * time.Second,
	NodeLeaseDuration:        40 * time.Second,
	DefaultTolerationSeconds: 300,
	PolicyNotReadySeconds:    v1alpha1.DefaultNotReady,
	PolicyUnreachableSeconds: v1alpha1.DefaultUnreachable,
}

// Cluster is a running simulated cluster.
type Cluster struct {
	// Config reaches the API server as a member of system:masters.
	Config *rest.Config
	// Client is a typed client on Config.
	Client kubernetes.Interface
	// CA signs the API server's serving certificate; the webhook's too.
	CA *certs.CA
	// Kubeconfig is the path of a kubeconfig for kubectl.
	Kubeconfig string
	// Dir holds the components' logs and etcd's data.
	Dir string

	procs []*proc.Process
}

// StartCluster starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
// the kwok controller, each in its own process group, listening on 127.0.0.1 only, with
// their logs and data in dir. On error everything started is stopped again.
//
// The components are run here rather than by `kwokctl create cluster --runtime
// binary`, which does start this very set of binaries (hack/cluster.sh builds kwokctl
// too), because of what kwokctl v0.8.0 does with them: it passes the controller manager
// --node-monitor-grace-period=3m20s and --node-monitor-period=25s, derived from its own
// heartbeat settings, not Kubernetes' defaults, which is exactly what is measured here;
// it binds every component on all interfaces; and it starts each in a session of its
// own (setsid) under ~/.kwok, so a test that dies leaves them running. Run directly,
// every flag the measurement depends on is in this file and in the report, everything
// listens on 127.0.0.1, every component dies with this process (Pdeathsig) or is
// stopped as a group, and the logs land in dir.
func StartCluster(ctx context.Context, bins Binaries, settings Settings, dir string) (_ *Cluster, err error) {
	c := &Cluster{Dir: dir}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := proc.FreePorts(5)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]

	// The API server's serving certificate, the service account signing key and one
	// bearer token for everyone (the components and the tests are all system:masters:
	// this cluster has no other users).
	if c.CA, err = certs.NewCA("ha-injector-failover-ca", 24*time.Hour); err != nil {
		return nil, err
	}
	serving, _, err := c.CA.Issue([]string{"127.0.0.1", "localhost"}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	pki := filepath.Join(dir, "pki")
	if err := serving.WriteFiles(pki, "apiserver.crt", "apiserver.key"); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(pki, "ca.crt"), c.CA.PEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeServiceAccountKey(pki); err != nil {
		return nil, err
	}
	tokenBytes := make([]byte, 16)
	if _, err := rand.Read(tokenBytes); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(tokenBytes)
	if err := os.WriteFile(filepath.Join(pki, "tokens.csv"), []byte(token+`,failover-admin,failover-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, err
	}
	host := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	c.Config = &rest.Config{
		Host:            host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CA.PEM},
		QPS:             100,
		Burst:           200,
		// The webhook's warnings are expected; client-go would log each one.
		WarningHandler: rest.NoWarnings{},
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, host, c.CA.PEM, token); err != nil {
		return nil, err
	}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	if err := c.start("etcd", bins.Etcd, nil,
		"--name=failover",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=failover="+peerURL,
		// Throwaway data: fsync only costs time.
		"--unsafe-no-fsync",
	); err != nil {
		return nil, err
	}
	if err := c.waitUp(ctx, "etcd", etcdURL+"/health", nil, 30*time.Second); err != nil {
		return nil, err
	}

	secs := strconv.FormatInt(settings.DefaultTolerationSeconds, 10)
	// Kubernetes' defaults except what a cluster cannot run without (service account
	// keys, a service range, a serving certificate, a way to authenticate),
	// --allow-privileged, which every kubeadm cluster sets and the injected ha-sysctl
	// init container needs, and no endpoint reconciler: it refuses a loopback address
	// for the `kubernetes` Service, which nothing here uses. All admission plugins are
	// the default ones, so DefaultTolerationSeconds runs before the webhook as on any
	// cluster.
	if err := c.start("kube-apiserver", bins.APIServer, nil,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--secure-port="+strconv.Itoa(apiPort),
		"--cert-dir="+filepath.Join(dir, "apiserver"),
		"--tls-cert-file="+filepath.Join(pki, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(pki, "apiserver.key"),
		"--client-ca-file="+filepath.Join(pki, "ca.crt"),
		"--token-auth-file="+filepath.Join(pki, "tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		"--default-not-ready-toleration-seconds="+secs,
		"--default-unreachable-toleration-seconds="+secs,
	); err != nil {
		return nil, err
	}
	if err := c.waitUp(ctx, "kube-apiserver", host+"/readyz", c.Config, 60*time.Second); err != nil {
		return nil, err
	}

	componentFlags := func(port int, name string) []string {
		return []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--authentication-kubeconfig=" + c.Kubeconfig,
			"--authorization-kubeconfig=" + c.Kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + filepath.Join(dir, name),
		}
	}
	// Every controller at its default settings (--controllers=*), except the node
	// lifecycle timings the short version shortens; they are passed even when they are
	// the defaults, so the report states what ran.
	kcm := append(componentFlags(kcmPort, "kube-controller-manager"),
		"--service-account-private-key-file="+filepath.Join(pki, "sa.key"),
		"--root-ca-file="+filepath.Join(pki, "ca.crt"),
		"--node-monitor-grace-period="+settings.NodeMonitorGracePeriod.String(),
		"--node-monitor-period="+settings.NodeMonitorPeriod.String(),
	)
	if err := c.start("kube-controller-manager", bins.ControllerManager, nil, kcm...); err != nil {
		return nil, err
	}
	if err := c.start("kube-scheduler", bins.Scheduler, nil, componentFlags(schedPort, "kube-scheduler")...); err != nil {
		return nil, err
	}
	// HOME points into dir so that kwok does not pick up a ~/.kwok/kwok.yaml of the
	// machine's user: its configuration is exactly the Stages file.
	kwokHome := filepath.Join(dir, "kwok")
	if err := os.MkdirAll(kwokHome, 0o755); err != nil {
		return nil, err
	}
	if err := c.start("kwok", bins.KWOK, []string{"HOME=" + kwokHome},
		"--kubeconfig="+c.Kubeconfig,
		"--config="+bins.KWOKStages,
		"--manage-nodes-with-label-selector="+ManagedLabel,
		// The not-ready hiccup: KWOK leaves the status of a node so labelled to the
		// test while it keeps renewing its Lease. (Deprecated in favour of Stages; with
		// Stages, holding a node NotReady means changing the node-initialize Stage,
		// which makes any node that is not Ready ready, in the file hack/cluster.sh
		// takes from KWOK's release.)
		"--disregard-status-with-label-selector="+StatusByTestLabel,
		"--node-lease-duration-seconds="+strconv.Itoa(int(settings.NodeLeaseDuration/time.Second)),
		"--cidr=10.244.0.0/16",
		"--node-ip=127.0.0.1",
	); err != nil {
		return nil, err
	}
	for name, port := range map[string]int{"kube-controller-manager": kcmPort, "kube-scheduler": schedPort} {
		if err := c.waitUp(ctx, name, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), nil, 60*time.Second); err != nil {
			return nil, err
		}
	}
	// The controller manager is up once its service account controller has made the
	// default namespace's ServiceAccount, which every pod needs (the ServiceAccount
	// admission plugin is on, as in any cluster).
	if err := c.WaitServiceAccount(ctx, "default"); err != nil {
		return nil, c.withLog("kube-controller-manager", err)
	}
	return c, nil
}

// Stop stops the components in reverse order, each process group with SIGTERM and,
// after a bounded wait, SIGKILL. It returns the first error.
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.procs) - 1; i >= 0; i-- {
		if err := c.procs[i].Stop(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	c.procs = nil
	return errors.Join(errs...)
}

// Logs returns the last lines of every component's log, for a failure message.
func (c *Cluster) Logs(lines int) string {
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "--- %s (%s), last %d lines:\n%s\n", p.Name, p.Log, lines, proc.Tail(p.Log, lines))
	}
	return b.String()
}

func (c *Cluster) withLog(name string, err error) error {
	for _, p := range c.procs {
		if p.Name == name {
			return fmt.Errorf("%s: %w\n%s", name, err, proc.Tail(p.Log, 20))
		}
	}
	return fmt.Errorf("%s: %w", name, err)
}

// AddNodes registers fake nodes for KWOK to run, labelled like a kubelet labels its
// node, and waits until they are Ready.
func (c *Cluster) AddNodes(ctx context.Context, names ...string) error {
	zoneOf := make(map[string]string, len(names))
	for _, n := range names {
		zoneOf[n] = ""
	}
	return c.AddZonedNodes(ctx, zoneOf)
}

// AddZonedNodes is AddNodes for nodes in zones: each node of zoneOf also gets the
// label topology.kubernetes.io/zone, as a cloud provider's node controller sets it (a
// node whose zone is "" gets none).
func (c *Cluster) AddZonedNodes(ctx context.Context, zoneOf map[string]string) error {
	names := slices.Sorted(maps.Keys(zoneOf))
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	for _, name := range names {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name: name,
				Labels: map[string]string{
					corev1.LabelHostname:   name,
					corev1.LabelOSStable:   "linux",
					corev1.LabelArchStable: "amd64",
					ManagedLabel:           "true",
				},
				Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
		}
		if zone := zoneOf[name]; zone != "" {
			node.Labels[corev1.LabelTopologyZone] = zone
		}
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return poll(ctx, 60*time.Second, fmt.Sprintf("nodes %v Ready", names), func() (bool, error) {
		for _, name := range names {
			n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil || !nodeReady(n) {
				return false, nil
			}
		}
		return true, nil
	})
}

// KillNode makes KWOK stop playing the node's kubelet: its Lease is no longer renewed,
// its pods no longer change, exactly what the control plane sees of a node that lost
// power. It returns when the label is gone.
func (c *Cluster) KillNode(ctx context.Context, name string) error {
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, ManagedLabel)
	_, err := c.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// WaitServiceAccount waits for the namespace's default ServiceAccount, which the
// controller manager creates and without which the API server rejects pods.
func (c *Cluster) WaitServiceAccount(ctx context.Context, namespace string) error {
	return poll(ctx, 60*time.Second, "ServiceAccount default in "+namespace, func() (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (c *Cluster) start(name, bin string, env []string, args ...string) error {
	p, err := proc.Start(name, filepath.Join(c.Dir, name+".log"), bin, env, args...)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

// Exited returns an error naming any component that has ended: none should while the
// cluster runs.
func (c *Cluster) Exited() error {
	for _, p := range c.procs {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.Name, err, p.Log, proc.Tail(p.Log, 20))
		}
	}
	return nil
}

// waitUp waits for a component's health endpoint, giving up at once (with the end of
// its log) if any component exits.
func (c *Cluster) waitUp(ctx context.Context, name, url string, cfg *rest.Config, timeout time.Duration) error {
	if err := waitHTTP(ctx, url, cfg, timeout, c.Exited); err != nil {
		return c.withLog(name, err)
	}
	return nil
}

// waitHTTP polls url until it answers 200 (through cfg's TLS and token when given;
// otherwise a local component's self-signed certificate is accepted), or alive, if
// not nil, returns an error.
func waitHTTP(ctx context.Context, url string, cfg *rest.Config, timeout time.Duration, alive func() error) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a local probe of a component started here
	if cfg != nil {
		rt, err := rest.TransportFor(cfg)
		if err != nil {
			return err
		}
		client.Transport = rt
	}
	return proc.WaitHTTP(ctx, client, url, timeout, alive)
}

// poll calls check every 200 ms until it returns true, an error, ctx ends or timeout passes.
func poll(ctx context.Context, timeout time.Duration, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeServiceAccountKey writes the key that signs service account tokens (sa.key)
// and its public half (sa.pub).
func writeServiceAccountKey(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

func writeKubeconfig(path, host string, ca []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["failover"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["failover"] = &clientcmdapi.Context{Cluster: "failover", AuthInfo: "admin"}
	cfg.CurrentContext = "failover"
	return clientcmd.WriteToFile(*cfg, path)
}
