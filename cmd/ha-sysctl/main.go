package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ha-injector/ha-injector/internal/sysctl"
)

// version is stamped by the build (-X main.version=...).
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], config{procSys: "/proc/sys", procSysFS: procSuperMagic, terminationLog: "/dev/termination-log"}, os.Stdout, os.Stderr))
}

// procSuperMagic is the filesystem type of procfs (PROC_SUPER_MAGIC in
// linux/magic.h), which /proc/sys must be.
const procSuperMagic = 0x9fa0

// Exit codes; the table is in the package comment.
const (
	exitOK     = 0
	exitNotSet = 1
	exitUsage  = 2
)

// maxTerminationMessage is what the kubelet keeps of a termination log: its last 4096
// bytes (kubecontainer.MaxContainerTerminationMessageLength, read with tail.ReadAtMost).
const maxTerminationMessage = 4096

const usage = `Usage: ha-sysctl [--strict] NAME=VALUE ...

Sets sysctls the kubelet knows to be namespaced (net.*, fs.mqueue.*, kernel.sem and the
kernel.shm* and kernel.msg* limits) in the container's own namespaces, and prints
NAME=VALUE for each one set, as the kernel reads it back. NAME may use '.' or '/'.

What cannot be set is reported on stderr and in /dev/termination-log, and does not fail
the container unless --strict is given.

Options:
  --strict    exit 1 when a sysctl was not set
  --version   print the version
  --help      print this help

Exit codes: 0 done, 1 not everything set (--strict only), 2 usage error.
`

// config holds the two paths ha-sysctl touches and the filesystem the first must be; main
// fixes them, tests point them at a temporary tree.
type config struct {
	procSys        string // root of the sysctl tree
	procSysFS      int64  // its filesystem's type, as statfs(2) reports it
	terminationLog string // appended to when it exists
}

// setting is one NAME=VALUE argument.
type setting struct{ name, value string }

func run(args []string, cfg config, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("ha-sysctl", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	strict := flags.Bool("strict", false, "")
	showVersion := flags.Bool("version", false, "")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		return usageError(cfg, stderr, err.Error())
	}
	if *showVersion {
		fmt.Fprintln(stdout, "ha-sysctl", version)
		return exitOK
	}
	settings, err := parse(flags.Args())
	if err != nil {
		return usageError(cfg, stderr, err.Error())
	}

	var failures []string
	root, rootErr := openProcSys(cfg)
	if root != nil {
		defer root.Close()
	}
	for _, s := range settings {
		var got string
		var err error
		if rootErr != nil {
			err = fmt.Errorf("%s: %v", sysctl.Normalize(s.name), rootErr)
		} else {
			got, err = apply(root, s)
		}
		if err != nil {
			failures = append(failures, err.Error())
			fmt.Fprintf(stderr, "ha-sysctl: not set: %v\n", err)
			continue
		}
		fmt.Fprintf(stdout, "%s=%s\n", sysctl.Normalize(s.name), got)
	}
	if len(failures) == 0 {
		return exitOK
	}
	summary := fmt.Sprintf("ha-sysctl: %d of %d sysctls not set:\n%s\n", len(failures), len(settings), strings.Join(failures, "\n"))
	appendTerminationLog(cfg.terminationLog, summary, stderr)
	if *strict {
		return exitNotSet
	}
	return exitOK
}

// parse reads every argument before anything is written, so a malformed command line
// changes nothing.
func parse(args []string) ([]setting, error) {
	if len(args) == 0 {
		return nil, errors.New("no NAME=VALUE given")
	}
	settings := make([]setting, 0, len(args))
	for _, a := range args {
		name, value, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not NAME=VALUE", a)
		}
		settings = append(settings, setting{name, value})
	}
	return settings, nil
}

func usageError(cfg config, stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "ha-sysctl: %s\n\n%s", msg, usage)
	appendTerminationLog(cfg.terminationLog, "ha-sysctl: usage error: "+msg+"\n", stderr)
	return exitUsage
}

// openProcSys opens the sysctl tree as a root that no path leaves, after checking that it
// is procfs: anything else mounted there (a bind mount of a host folder) is not the
// container's sysctls.
func openProcSys(cfg config) (*os.Root, error) {
	fsType, err := statfsType(cfg.procSys)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", cfg.procSys, err)
	}
	if fsType != cfg.procSysFS {
		return nil, fmt.Errorf("%s is not procfs (filesystem type %#x, want %#x): not writing to it", cfg.procSys, fsType, cfg.procSysFS)
	}
	return os.OpenRoot(cfg.procSys)
}

// apply writes one sysctl beneath root and returns the value the kernel reads back, its
// fields separated by single spaces. The error names the sysctl and says why it was not
// set. Every path is opened within root: a symlink that leads out of it is refused.
func apply(root *os.Root, s setting) (string, error) {
	if err := sysctl.Check(s.name, s.value); err != nil {
		return "", err
	}
	name := sysctl.Normalize(s.name)
	path := sysctl.Path(s.name)
	// No O_CREATE: only an existing sysctl is written. O_TRUNC is what sysctl(8) uses; the
	// kernel ignores it on /proc/sys.
	f, err := root.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return "", fmt.Errorf("%s: %s", name, openProblem(err, filepath.Join(root.Name(), path)))
	}
	_, werr := f.WriteString(s.value)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		if errors.Is(werr, syscall.EINVAL) {
			return "", fmt.Errorf("%s: the kernel refused the value %q", name, s.value)
		}
		return "", fmt.Errorf("%s: writing %q: %v", name, s.value, werr)
	}
	data, err := readAll(root, path)
	if err != nil {
		return "", fmt.Errorf("%s: written, but reading it back failed: %v", name, err)
	}
	got := strings.Join(strings.Fields(string(data)), " ")
	if want := strings.Join(strings.Fields(s.value), " "); got != want {
		return "", fmt.Errorf("%s: wrote %q but the kernel reads back %q", name, want, got)
	}
	return got, nil
}

// readAll reads a file beneath root.
func readAll(root *os.Root, path string) ([]byte, error) {
	f, err := root.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// openProblem says in words why path could not be opened for writing.
func openProblem(err error, path string) string {
	switch {
	case strings.Contains(err.Error(), "path escapes from parent"):
		// os.Root's error for a symlink (or "..") that leads out of the root.
		return "refused: " + path + " leads out of the sysctl tree"
	case errors.Is(err, fs.ErrNotExist):
		return "unknown sysctl: this kernel has no " + path
	case errors.Is(err, syscall.EISDIR):
		return "not a sysctl: " + path + " is a folder"
	case errors.Is(err, syscall.EROFS):
		return "read-only /proc/sys: the container must be privileged"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied: the container must be privileged and run as root"
	}
	return err.Error()
}

// appendTerminationLog appends msg, cut to what the kubelet keeps, to the termination log
// when that file exists; the container runtime creates it, ha-sysctl never does.
func appendTerminationLog(path, msg string, stderr io.Writer) {
	if len(msg) > maxTerminationMessage {
		const more = "...\n(cut: the container log has all of it)\n"
		msg = msg[:maxTerminationMessage-len(more)] + more
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		_, err = f.WriteString(msg)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "ha-sysctl: termination log: %v\n", err)
	}
}
