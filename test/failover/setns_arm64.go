package failover

// sysSetns is setns(2)'s number (include/uapi/asm-generic/unistd.h), which package
// syscall does not name.
const sysSetns = 268
