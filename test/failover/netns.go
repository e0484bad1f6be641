package failover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// The addresses of a netnsPair. They are link-local (169.254.0.0/16, never routed) and
// exist only inside the pair's two namespaces, which have no other interface than
// their loopback: no packet can leave them, and pairs of concurrent runs cannot collide.
const (
	clientAddr = "169.254.77.1"
	serverAddr = "169.254.77.2"
	pairPrefix = "/30"
	// The veth ends, named inside their own namespaces, and fixed MACs for the
	// permanent neighbour entries.
	clientIf, serverIf   = "veth-client", "veth-server"
	clientMAC, serverMAC = "02:68:61:00:00:01", "02:68:61:00:00:02"
)

// commandTimeout bounds every ip and nsenter command.
const commandTimeout = 20 * time.Second

// netnsPair is two named network namespaces, a client and a server, joined by a veth
// pair: the client is a pod, the server its peer on another node.
type netnsPair struct {
	client, server string // names under /run/netns
}

// newNetnsPair creates the pair, named after tag and a random suffix so that runs
// side by side (make failover and make test) never share one. On error nothing it
// created is left.
func newNetnsPair(ctx context.Context, tag string) (_ *netnsPair, err error) {
	suffix := make([]byte, 3)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	base := fmt.Sprintf("ha-failover-%d-%s-%s", os.Getpid(), hex.EncodeToString(suffix), tag)
	p := &netnsPair{}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close())
		}
	}()
	if err := ipCommand(ctx, "netns", "add", base+"-c"); err != nil {
		return nil, err
	}
	p.client = base + "-c"
	if err := ipCommand(ctx, "netns", "add", base+"-s"); err != nil {
		return nil, err
	}
	p.server = base + "-s"
	// Created directly inside the two namespaces: the names never exist in the host's.
	if err := ipCommand(ctx, "link", "add", clientIf, "netns", p.client, "address", clientMAC,
		"type", "veth", "peer", "name", serverIf, "netns", p.server, "address", serverMAC); err != nil {
		return nil, err
	}
	for _, side := range []struct{ ns, dev, addr, peer, peerMAC string }{
		{p.client, clientIf, clientAddr, serverAddr, serverMAC},
		{p.server, serverIf, serverAddr, clientAddr, clientMAC},
	} {
		for _, args := range [][]string{
			{"-n", side.ns, "link", "set", "lo", "up"},
			{"-n", side.ns, "addr", "add", side.addr + pairPrefix, "dev", side.dev},
			{"-n", side.ns, "link", "set", side.dev, "up"},
			// Permanent: the kernel never probes or expires it, so ARP plays no part
			// in how the client notices the dead peer (as for a pod, whose next hop is
			// its own node, which stays up).
			{"-n", side.ns, "neigh", "replace", side.peer, "lladdr", side.peerMAC, "dev", side.dev, "nud", "permanent"},
		} {
			if err := ipCommand(ctx, args...); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// killPeer makes the server a dead peer as the client sees it: every packet the server
// would send to the client is discarded by a blackhole route in the server's
// namespace. The client's own interface, route and neighbour entry are untouched, so
// each retransmission and keepalive probe really leaves it and is never answered, and
// the kernel's timers run exactly as towards a node that lost power. (Taking a link
// down would make the client's transmissions fail locally instead: the retransmission
// timer then retries every TCP_RESOURCE_PROBE_INTERVAL without backing off, and a
// failed neighbour lookup raises a local ICMP host unreachable, which ends the
// connection with EHOSTUNREACH rather than ETIMEDOUT. A blackhole route sends no ICMP.)
func (p *netnsPair) killPeer(ctx context.Context) error {
	return ipCommand(ctx, "-n", p.server, "route", "add", "blackhole", clientAddr+"/32")
}

// Close deletes both namespaces, and with them the veth pair. Sockets still open in
// them keep them alive (unnamed) until closed, so callers close theirs first.
func (p *netnsPair) Close() error {
	// Not the caller's context: cleanup must run when a cancelled run unwinds.
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var errs []error
	for _, ns := range []string{p.client, p.server} {
		if ns == "" {
			continue
		}
		if err := ipCommand(ctx, "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	p.client, p.server = "", ""
	return errors.Join(errs...)
}

// path is where the namespace's file is mounted.
func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

// runIn runs the command inside the network namespace (nsenter --net) and returns its
// standard output.
func runIn(ctx context.Context, ns string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netnsPath(ns), "--", name}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// readSysctls reads the sysctls (dotted names) as the namespace sees them.
func readSysctls(ctx context.Context, ns string, names []string) (map[string]string, error) {
	paths := make([]string, len(names))
	for i, n := range names {
		paths[i] = filepath.Join("/proc/sys", strings.ReplaceAll(n, ".", "/"))
	}
	out, err := runIn(ctx, ns, "cat", paths...)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(names) {
		return nil, fmt.Errorf("reading %v in %s: %d lines", names, ns, len(lines))
	}
	values := map[string]string{}
	for i, n := range names {
		values[n] = strings.Join(strings.Fields(lines[i]), " ")
	}
	return values, nil
}

func ipCommand(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns runs fn on an OS thread that has entered the named network namespace. A
// socket belongs to the namespace it was created in for its whole life, whichever
// thread uses it later, so fn creates sockets there and returns them. The thread
// goes back to its own namespace afterwards; if that fails it stays locked, and the
// Go runtime ends it with the goroutine instead of reusing it. (The runtime starts new
// threads from a clean template thread, never from a locked one, so no other
// goroutine ever runs in the namespace.)
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer own.Close()
		target, err := os.Open(netnsPath(ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := setns(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", ns, err)
			return
		}
		fnErr := fn()
		if err := setns(own); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("leaving %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

func setns(f *os.File) error {
	if _, _, errno := syscall.RawSyscall(sysSetns, f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
		return errno
	}
	return nil
}

// canUseNetns says why network namespaces cannot be made here, or nil if they can.
func canUseNetns() error {
	if os.Geteuid() != 0 {
		return errors.New("creating network namespaces and veth pairs needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s (iproute2, util-linux) not found: %w", tool, err)
		}
	}
	return nil
}
