package failover

// sysSetns is setns(2)'s number (arch/x86/entry/syscalls/syscall_64.tbl), which
// package syscall does not name.
const sysSetns = 308
