// Command runc-noseccomp is the real-node tests' OCI runtime: it removes the seccomp
// filter from a container's OCI spec (linux.seccomp in the bundle's config.json) on
// `create` and `run`, then runs runc (found in PATH) with the same arguments.
//
// hack/node.sh builds runc from its Go module without libseccomp, a C library the module
// proxy does not serve, and such a runc refuses any spec that asks for a filter; the
// kubelet asks for the runtime's default filter for every pod sandbox that is not
// privileged, and Pod Security restricted asks for one in every container. Seccomp plays
// no part in what the node tests verify (sysctls in a pod's network namespace), so the
// test node runs its containers without filters instead.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
)

func main() {
	args := os.Args[1:]
	if bundle, ok := bundleOf(args); ok {
		if err := dropSeccomp(filepath.Join(bundle, "config.json")); err != nil {
			fmt.Fprintln(os.Stderr, "runc-noseccomp:", err)
			os.Exit(1)
		}
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		fmt.Fprintln(os.Stderr, "runc-noseccomp:", err)
		os.Exit(1)
	}
	err = syscall.Exec(runc, append([]string{runc}, args...), os.Environ())
	fmt.Fprintln(os.Stderr, "runc-noseccomp:", err)
	os.Exit(1)
}

// bundleOf returns the --bundle (-b) folder of a create or run command.
func bundleOf(args []string) (string, bool) {
	cmd := slices.IndexFunc(args, func(a string) bool { return a == "create" || a == "run" })
	if cmd < 0 {
		return "", false
	}
	for i := cmd + 1; i < len(args); i++ {
		switch a := args[i]; {
		case (a == "--bundle" || a == "-b") && i+1 < len(args):
			return args[i+1], true
		case len(a) > len("--bundle=") && a[:len("--bundle=")] == "--bundle=":
			return a[len("--bundle="):], true
		}
	}
	return ".", true // runc's default: the working directory
}

func dropSeccomp(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	linux, ok := spec["linux"].(map[string]any)
	if !ok || linux["seccomp"] == nil {
		return nil
	}
	delete(linux, "seccomp")
	out, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}
