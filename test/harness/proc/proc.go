// Package proc runs the local servers of the benchmarks and the failover measurement
// (kube-apiserver, etcd, the controllers, KWOK, `ha-injector serve`) as child processes
// that cannot outlive the run, and waits for their health endpoints.
package proc

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is a child in its own process group, its output in a log file.
type Process struct {
	Name, Log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

// Start runs bin with args and env (added to this process's environment), output to
// logPath.
func Start(name, logPath, bin string, env []string, args ...string) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	// Setpgid: Stop signals the whole group. Pdeathsig: if this process dies without
	// stopping them (a test timeout's panic, a kill -9), the kernel kills them too.
	// (Pdeathsig follows the OS thread that started the child; the Go runtime does not
	// end threads unless a goroutine locked to one exits, which nothing here does.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how (its exit error).
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Alive is nil while the process runs, and says how it ended once it has.
func (p *Process) Alive() error {
	if done, err := p.Exited(); done {
		return fmt.Errorf("%s exited (%v)", p.Name, err)
	}
	return nil
}

// Stop sends SIGTERM to the group, waits up to timeout, then SIGKILLs the group so
// nothing the process started outlives it. It fails only when the process did not
// stop in time; Exited says how it ended.
func (p *Process) Stop(timeout time.Duration) error {
	pgid := p.cmd.Process.Pid
	if done, _ := p.Exited(); !done {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(timeout):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
			return fmt.Errorf("%s did not stop within %s of SIGTERM", p.Name, timeout)
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// WaitHTTP polls url with client (nil: a plain one with a 2 s timeout) every 100 ms
// until it answers 200; it gives up when alive (if not nil) returns an error, ctx ends
// or timeout passes, naming the last answer.
func WaitHTTP(ctx context.Context, client *http.Client, url string, timeout time.Duration, alive func() error) error {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	last := "none"
	for deadline := time.Now().Add(timeout); ; {
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
		} else {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not OK within %s (last answer: %s)", url, timeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", url, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FreePorts returns n distinct ports on 127.0.0.1 that were free a moment ago (all are
// held until every one is chosen, so they differ).
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Tail returns the last lines of the file at path (a child's log), or the
// error reading it, for a failure message.
func Tail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
