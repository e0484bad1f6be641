//go:build node

package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ha-injector/ha-injector/internal/image"
	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/proc"
	"github.com/ha-injector/ha-injector/webhook"
)

// Image names as the CRI looks them up (a bare name is docker.io/library/NAME).
const (
	ourImage   = "docker.io/library/ha-injector:node-test"
	probeImage = "docker.io/library/ha-probe:node-test"
	pauseImage = "docker.io/library/ha-pause:node-test"
	nodeName   = "ha-node"
	bridgeName = "hanode0"
	podSubnet  = "10.244.77.0/24"
	// apiServerIP is the kubernetes Service's ClusterIP (envtest's service range is
	// 10.0.0.0/24). No kube-proxy can run here (it needs iptables or nft, which this
	// machine kind lacks), so the harness puts that address on the host's loopback and
	// has kube-apiserver listen on it, port 443: pods reach the API server at the address
	// the kubelet gives them (KUBERNETES_SERVICE_HOST), routed to the host by the bridge.
	apiServerIP = "10.0.0.1"
)

// kubeletSysctls are the host sysctls the kubelet sets at start (its kernel tunables);
// the harness puts them back.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// hostPaths are folders the kubelet, containerd or the CNI plugins create outside the
// harness's own folder whatever they are told; the harness removes those that were
// not there before.
var hostPaths = []string{
	"/var/log/containers", "/var/log/pods", "/var/lib/kubelet", "/var/lib/cni", "/run/containerd",
	"/var/run/netns", "/run/netns", "/etc/cni", "/opt/cni", "/var/run/cdi", "/etc/cdi", "/var/lib/containerd",
}

// Node is one real node: kube-apiserver and etcd (envtest), containerd with runc, the CNI
// bridge, and a kubelet, every state folder under Dir.
type Node struct {
	Dir string
	// Kubeconfig is an admin's kubeconfig file for the node's API server.
	Kubeconfig string
	Config     *rest.Config
	Client     client.Client
	IP         string

	env     *envtest.Environment
	bins    string
	runtime string
	procs   []*proc.Process
	sock    string
	before  hostState
	cleanup []func() error
}

type hostState struct {
	sysctls map[string]string
	paths   map[string]bool
	cgroups map[string]bool
	links   map[string]bool
	mounts  map[string]bool
	netns   map[string]bool
}

func readHostState() hostState {
	s := hostState{sysctls: map[string]string{}, paths: map[string]bool{}, cgroups: map[string]bool{}, links: map[string]bool{}, mounts: map[string]bool{}, netns: map[string]bool{}}
	s.mounts = mountPoints()
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			s.netns[e.Name()] = true
		}
	}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			s.sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		s.paths[p] = err == nil
	}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	more, _ := filepath.Glob("/sys/fs/cgroup/kubepods")
	for _, c := range append(hierarchies, more...) {
		s.cgroups[c] = true
	}
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		s.links[i.Name] = true
	}
	return s
}

// diff lists what differs from before in after.
func (before hostState) diff(after hostState) []string {
	var out []string
	for k, v := range before.sysctls {
		if after.sysctls[k] != v {
			out = append(out, fmt.Sprintf("sysctl %s: %s, was %s", k, after.sysctls[k], v))
		}
	}
	for p, was := range before.paths {
		if after.paths[p] != was {
			out = append(out, fmt.Sprintf("%s exists: %t, was %t", p, after.paths[p], was))
		}
	}
	for _, kind := range []struct {
		what          string
		before, after map[string]bool
	}{
		{"cgroup", before.cgroups, after.cgroups},
		{"network interface", before.links, after.links},
		{"mount", before.mounts, after.mounts},
		{"network namespace", before.netns, after.netns},
	} {
		for _, k := range added(kind.before, kind.after) {
			out = append(out, kind.what+" "+k+" left behind")
		}
	}
	sort.Strings(out)
	return out
}

// Start builds (or takes from the cache) every binary and image, starts the node and
// waits until it is Ready. Everything it started or changed is undone by Stop, which
// t.Cleanup calls.
func Start(t *testing.T) *Node {
	t.Helper()
	require.Equal(t, 0, os.Geteuid(), "the real node needs root: containerd, runc and the kubelet mount, create cgroups and network namespaces")
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	n := &Node{before: readHostState()}
	n.Dir, err = os.MkdirTemp("", "ha-injector-node-")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"kubelet", "containerd", "kube-scheduler", "kube-controller-manager"} {
				t.Logf("the end of the %s log:\n%s", name, proc.Tail(filepath.Join(n.Dir, name+".log"), 40))
			}
		}
		if err := n.Stop(); err != nil {
			t.Errorf("stopping the node: %v", err)
		}
		if left := n.before.diff(readHostState()); len(left) > 0 {
			t.Errorf("the host is not as it was:\n%s", strings.Join(left, "\n"))
		}
	})
	n.IP, err = hostIP()
	require.NoError(t, err)

	nodeSh := exec.Command(filepath.Join(root, "hack", "node.sh"))
	nodeSh.Stderr = os.Stderr // what it builds, and why it failed
	out, err := nodeSh.Output()
	require.NoError(t, err, "hack/node.sh")
	n.bins = strings.TrimSpace(string(out))
	// ha-injector's image exactly as a release builds it: make image-tar's OCI layout of
	// the linux/amd64 and linux/arm64 index, named as the chart is told to pull it.
	repo, tag, _ := strings.Cut(ourImage, ":")
	imageDir := filepath.Join(n.Dir, "image")
	build := exec.Command("make", "-C", root, "image-tar", "OUTPUT="+imageDir, "IMAGE="+repo, "VERSION="+tag)
	b, err := build.CombinedOutput()
	require.NoError(t, err, "make image-tar: %s", b)
	// The probe and the sandbox (pause) images, for this machine's platform only.
	bin := filepath.Join(n.Dir, "bin")
	for _, cmd := range []string{"probe", "runc-noseccomp"} {
		build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(bin, cmd), "./test/node/"+cmd)
		build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		b, err = build.CombinedOutput()
		require.NoError(t, err, "go build %s: %s", cmd, b)
	}
	n.runtime = filepath.Join(bin, "runc-noseccomp")

	n.startContainerd(t)
	archives := map[string]string{ourImage: filepath.Join(imageDir, "ha-injector-image.tar")}
	here := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	for ref, layout := range map[string]image.Layout{
		probeImage: {Files: []image.File{{Source: "probe", Path: "/probe"}}, Entrypoint: []string{"/probe"}},
		pauseImage: {Files: []image.File{{Source: "probe", Path: "/probe"}}, Entrypoint: []string{"/probe"}, Cmd: []string{"pause"}},
	} {
		img, err := image.Build(bin, layout, here)
		require.NoError(t, err)
		idx, err := image.Index(img)
		require.NoError(t, err)
		archives[ref] = filepath.Join(n.Dir, "images", strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		require.NoError(t, image.WriteLayout(archives[ref], ref, idx))
	}
	ctr := func(args ...string) ([]byte, error) {
		return exec.Command(filepath.Join(n.bins, "ctr"), append([]string{"-a", n.sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	}
	for ref, archive := range archives {
		// An OCI layout: the name comes from index.json's io.containerd.image.name; only
		// this machine's platform is unpacked (ctr's default).
		out, err := ctr("images", "import", archive)
		require.NoError(t, err, "ctr images import %s: %s", ref, out)
	}
	out, err = ctr("images", "ls", "-q")
	require.NoError(t, err, "ctr images ls: %s", out)
	for ref := range archives {
		require.Contains(t, strings.Fields(string(out)), ref, "ctr images import named the image from index.json")
	}

	n.env, err = controlplane.New(root)
	require.NoError(t, err)
	out, err = exec.Command("ip", "addr", "add", apiServerIP+"/32", "dev", "lo").CombinedOutput()
	require.NoError(t, err, "ip addr add %s/32 dev lo: %s", apiServerIP, out)
	n.cleanup = append(n.cleanup, func() error {
		if out, err := exec.Command("ip", "addr", "del", apiServerIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
			return fmt.Errorf("ip addr del %s/32 dev lo: %v: %s", apiServerIP, err, out)
		}
		return nil
	})
	api := n.env.ControlPlane.GetAPIServer()
	api.SecureServing.ListenAddr.Address, api.SecureServing.ListenAddr.Port = apiServerIP, "443"
	// Pods get ServiceAccount tokens (envtest turns that plugin off), the API server
	// calls webhook Services at their endpoints (no kube-proxy), and reaches the kubelet
	// at the node's InternalIP.
	api.Configure().Set("disable-admission-plugins", "")
	api.Configure().Set("enable-aggregator-routing", "true")
	api.Configure().Set("kubelet-preferred-address-types", "InternalIP")
	n.Config, err = n.env.Start()
	require.NoError(t, err)
	n.cleanup = append(n.cleanup, n.env.Stop)
	n.Client, err = client.New(n.Config, client.Options{Scheme: webhook.Scheme})
	require.NoError(t, err)

	n.startControllers(t, root)
	n.startKubelet(t)
	admin, err := n.env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	require.NoError(t, err)
	kc, err := admin.KubeConfig()
	require.NoError(t, err)
	n.Kubeconfig = filepath.Join(n.Dir, "kubeconfig")
	require.NoError(t, os.WriteFile(n.Kubeconfig, kc, 0o600))
	t.Logf("node %s Ready; while the test runs: export KUBECONFIG=%s", nodeName, n.Kubeconfig)
	return n
}

// startControllers starts kube-scheduler and kube-controller-manager (built by
// hack/cluster.sh) with the controllers the tests need: Deployments, ReplicaSets and
// Jobs; ServiceAccounts and the kube-root-ca.crt ConfigMap that every pod's token volume
// reads; the node lifecycle, which lifts the not-ready taint a kubelet registers its node
// with; and the Services' endpoints, where the API server calls webhooks.
func (n *Node) startControllers(t *testing.T, root string) {
	t.Helper()
	clusterSh := exec.Command(filepath.Join(root, "hack", "cluster.sh"))
	clusterSh.Stderr = os.Stderr
	out, err := clusterSh.Output()
	require.NoError(t, err, "hack/cluster.sh")
	cluster := strings.TrimSpace(string(out))
	user, err := n.env.AddUser(envtest.User{Name: "kube-controllers", Groups: []string{"system:masters"}}, nil)
	require.NoError(t, err)
	kc, err := user.KubeConfig()
	require.NoError(t, err)
	kubeconfig := filepath.Join(n.Dir, "controllers.kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, kc, 0o600))
	caFile := filepath.Join(n.Dir, "api-ca.crt")
	require.NoError(t, os.WriteFile(caFile, n.Config.CAData, 0o644))
	ports, err := proc.FreePorts(2)
	require.NoError(t, err)
	common := func(port int, name string) []string {
		return []string{"--kubeconfig=" + kubeconfig, "--authentication-kubeconfig=" + kubeconfig, "--authorization-kubeconfig=" + kubeconfig,
			"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port), "--leader-elect=false",
			"--cert-dir=" + filepath.Join(n.Dir, name)}
	}
	_, err = n.start("kube-controller-manager", filepath.Join(cluster, "kube-controller-manager"), append(common(ports[0], "kube-controller-manager"),
		"--controllers=deployment-controller,replicaset-controller,job-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller,endpoints-controller,endpointslice-controller",
		"--root-ca-file="+caFile)...)
	require.NoError(t, err)
	_, err = n.start("kube-scheduler", filepath.Join(cluster, "kube-scheduler"), common(ports[1], "kube-scheduler")...)
	require.NoError(t, err)
}

func hostIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "", errors.New("no IPv4 address but loopback: the kubelet refuses to run on loopback")
}

func (n *Node) startContainerd(t *testing.T) {
	t.Helper()
	def, err := exec.Command(filepath.Join(n.bins, "containerd"), "config", "default").Output()
	require.NoError(t, err)
	cd := filepath.Join(n.Dir, "containerd")
	n.sock = filepath.Join(cd, "containerd.sock")
	cni := filepath.Join(n.Dir, "cni")
	require.NoError(t, os.MkdirAll(filepath.Join(cni, "net.d"), 0o755))
	config := strings.NewReplacer(
		"root = '/var/lib/containerd'", "root = '"+filepath.Join(cd, "root")+"'",
		"state = '/run/containerd'", "state = '"+filepath.Join(cd, "state")+"'",
		"imports = ['/etc/containerd/conf.d/*.toml']", "imports = []",
		"address = '/run/containerd/containerd.sock'", "address = '"+n.sock+"'",
		"address = '/run/containerd/containerd.sock.ttrpc'", "address = '"+n.sock+".ttrpc'",
		"sandbox = 'registry.k8s.io/pause:3.10.2'", "sandbox = '"+pauseImage+"'",
		// This VM lacks CAP_SYS_RESOURCE: without it every sandbox fails (docs/real-node.md).
		"restrict_oom_score_adj = false", "restrict_oom_score_adj = true",
		"BinaryName = ''", "BinaryName = '"+n.runtime+"'", // runc, without seccomp filters
		"bin_dirs = ['/opt/cni/bin']", "bin_dirs = ['"+filepath.Join(n.bins, "cni")+"']",
		"conf_dir = '/etc/cni/net.d'", "conf_dir = '"+filepath.Join(cni, "net.d")+"'",
		"path = '/opt/containerd'", "path = '"+filepath.Join(cd, "opt")+"'",
	).Replace(string(def))
	// NRI off: nothing here uses it, and its socket would live in /var/run.
	config = strings.Replace(config, "[plugins.'io.containerd.nri.v1.nri']\n    disable = false", "[plugins.'io.containerd.nri.v1.nri']\n    disable = true", 1)
	require.NoError(t, os.MkdirAll(cd, 0o755))
	path := filepath.Join(cd, "config.toml")
	require.NoError(t, os.WriteFile(path, []byte(config), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(cni, "net.d", "10-hanode.conflist"), []byte(`{
  "cniVersion": "1.0.0",
  "name": "hanode",
  "plugins": [
    {"type": "bridge", "bridge": "`+bridgeName+`", "isGateway": true, "isDefaultGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "dataDir": "`+filepath.Join(cni, "ipam")+`", "ranges": [[{"subnet": "`+podSubnet+`"}]]}},
    {"type": "loopback"}
  ]
}
`), 0o644))

	_, err = n.start("containerd", filepath.Join(n.bins, "containerd"), "--config", path)
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(n.sock); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "containerd's socket within 30 s; its log: %s", filepath.Join(n.Dir, "containerd.log"))
		time.Sleep(100 * time.Millisecond)
	}
}

// containerLog is the file the kubelet writes a container's first log to
// (podLogsDir/NAMESPACE_NAME_UID/CONTAINER/0.log).
func (n *Node) containerLog(pod *corev1.Pod, container string) string {
	return filepath.Join(n.podLogsDir(), fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID), container, "0.log")
}

// podLogsDir is the kubelet's podLogsDir.
func (n *Node) podLogsDir() string { return filepath.Join(n.Dir, "kubelet", "pod-logs") }

// start runs a binary with its output in Dir/NAME.log and PATH holding the node's binaries.
func (n *Node) start(name, path string, args ...string) (*proc.Process, error) {
	p, err := proc.Start(name, filepath.Join(n.Dir, name+".log"), path, []string{"PATH=" + n.bins + ":" + os.Getenv("PATH")}, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	n.procs = append(n.procs, p)
	return p, nil
}

func (n *Node) startKubelet(t *testing.T) {
	t.Helper()
	user, err := n.env.AddUser(envtest.User{Name: "system:node:" + nodeName, Groups: []string{"system:masters", "system:nodes"}}, nil)
	require.NoError(t, err)
	kc, err := user.KubeConfig()
	require.NoError(t, err)
	kd := filepath.Join(n.Dir, "kubelet")
	require.NoError(t, os.MkdirAll(kd, 0o755))
	kubeconfig := filepath.Join(kd, "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, kc, 0o600))
	ports, err := proc.FreePorts(2)
	require.NoError(t, err)
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%s
podLogsDir: %s
failSwapOn: false
serializeImagePulls: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 5s
fileCheckFrequency: 5s
`, n.IP, ports[0], ports[1], n.sock, n.podLogsDir())
	configPath := filepath.Join(kd, "config.yaml")
	require.NoError(t, os.WriteFile(configPath, []byte(config), 0o644))
	_, err = n.start("kubelet", filepath.Join(n.bins, "kubelet"),
		"--config", configPath, "--kubeconfig", kubeconfig, "--root-dir", filepath.Join(kd, "root"),
		"--node-ip", n.IP, "--hostname-override", nodeName, "--v", "2")
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		node := &corev1.Node{}
		if err := n.Client.Get(ctx, client.ObjectKey{Name: nodeName}, node); err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %s not Ready within 90 s; the kubelet's log: %s", nodeName, filepath.Join(n.Dir, "kubelet.log"))
		case <-time.After(time.Second):
		}
	}
}

// Stop stops every process the node started (the kubelet first, then containerd and
// the shims and containers it left), unmounts what they mounted under Dir, and undoes
// what they changed on the host: the kubelet's sysctls, its cgroups, the CNI bridge,
// the folders they created outside Dir.
func (n *Node) Stop() error {
	var errs []error
	for i := len(n.procs) - 1; i >= 0; i-- {
		if err := n.procs[i].Stop(20 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	// The shims outlive containerd, and the containers (the pods' sandboxes too) outlive
	// the shims: kill the shims by their command line, the containers by their cgroups.
	killUnder(n.Dir)
	// Nothing that creates more runs now: what is new since Start is all there is.
	now := readHostState()
	created := added(n.before.cgroups, now.cgroups)
	for _, c := range created {
		killCgroup(c)
	}
	for i := len(n.cleanup) - 1; i >= 0; i-- {
		if err := n.cleanup[i](); err != nil {
			errs = append(errs, err)
		}
	}
	// What they mounted: the pods' network namespaces, the kubelet's and containerd's
	// folders, the containers' root file systems.
	errs = append(errs, unmountNew(n.before)...)
	for _, ns := range added(n.before.netns, now.netns) {
		_ = os.Remove(filepath.Join("/run/netns", ns))
	}
	for _, c := range created {
		removeCgroup(c)
	}
	for k, v := range n.before.sysctls {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	// The bridge; a pod's veth may be gone with its network namespace already.
	for _, l := range added(n.before.links, now.links) {
		_ = exec.Command("ip", "link", "del", l).Run()
	}
	for p, was := range n.before.paths {
		if !was {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if n.Dir != "" {
		if err := os.RemoveAll(n.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killUnder kills every process whose executable or command line names dir: the runc
// shims and the containers' processes.
func killUnder(dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(500 * time.Millisecond)
}

// mountPoints lists the mount points of this process's mount namespace.
func mountPoints() map[string]bool {
	points := map[string]bool{}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return points
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			points[f[4]] = true
		}
	}
	return points
}

// unmountNew unmounts every mount point that was not there before, deepest first
// (a folder can be mounted over more than once: each pass takes one layer).
func unmountNew(before hostState) []error {
	var errs []error
	for range 5 {
		points := added(before.mounts, mountPoints())
		if len(points) == 0 {
			return nil
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		errs = nil
		for _, p := range points {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			}
		}
	}
	return errs
}

// added lists, sorted, the keys of after that are not in before.
func added(before, after map[string]bool) []string {
	var out []string
	for k := range after {
		if !before[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// killCgroup kills every process in a cgroup and the ones below it, until none is left
// (bounded: 10 s).
func killCgroup(dir string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		alive := false
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(data)) {
				var pid int
				if _, err := fmt.Sscanf(f, "%d", &pid); err == nil && pid > 0 {
					alive = true
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
		if !alive {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// removeCgroup removes a cgroup folder and the ones below it, deepest first.
func removeCgroup(dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		_ = syscall.Rmdir(d)
	}
}
