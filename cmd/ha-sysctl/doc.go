// Command ha-sysctl sets namespaced sysctls in its own network and IPC namespaces: it is
// the whole of the ha-sysctl init container that ha-injector adds to pods.
//
//	ha-sysctl [--strict] NAME=VALUE ...
//
// For each NAME=VALUE (NAME with '.' or '/' separators, as the kubelet accepts) it checks
// the pair with internal/sysctl.Check (only sysctls the kubelet knows to be namespaced, and
// plain values), writes VALUE to /proc/sys/<path>, reads it back and prints
// "NAME=VALUE" to stdout, NAME with '.' separators and VALUE as the kernel reads it back
// with runs of whitespace (the tabs of tcp_rmem) turned into one space.
//
// It writes nothing unless /proc/sys is procfs (statfs(2) reports PROC_SUPER_MAGIC), and
// opens every path beneath it with os.Root, so that a symlink leading out of the tree is
// refused rather than followed.
//
// What it could not set (a refused name or value, a sysctl this kernel does not have, a
// read-only /proc/sys, a /proc/sys that is not procfs, a path that leads out of it, a value
// the kernel refused or changed) is reported on stderr, and a
// summary is appended to /dev/termination-log when that file exists, so that it shows in
// the pod's status. It still exits 0: a sysctl that could not be set never keeps a pod
// from starting.
//
// Exit codes:
//
//	0  every sysctl was set, or some were not and --strict was not given
//	1  --strict was given and at least one sysctl was not set
//	2  usage error: no NAME=VALUE, an argument without '=', an unknown flag
//
// --help prints the usage and --version the version, both on stdout with exit code 0.
//
// The paths /proc/sys and /dev/termination-log are fixed in main, with no flag or
// environment variable to change them: an admission policy that allows the image and the
// command would not see one, and the binary must not write anywhere else. Tests call run
// with a temporary tree instead, and run the built binary only against the real
// /proc/sys, inside a new network namespace.
package main
