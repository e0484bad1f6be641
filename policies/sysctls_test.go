package policies

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSafeSysctlSince(t *testing.T) {
	for _, tc := range []struct {
		name  string
		minor int
		safe  bool
	}{
		{"net.ipv4.tcp_keepalive_time", 29, true},
		{"net/ipv4/tcp_keepalive_intvl", 29, true}, // the slash form names the same sysctl
		{"net.ipv4.tcp_syncookies", 0, true},
		{"net.ipv4.tcp_retries2", 0, false},
	} {
		minor, safe := SafeSysctlSince(tc.name)
		assert.Equal(t, tc.safe, safe, tc.name)
		assert.Equal(t, tc.minor, minor, tc.name)
	}
}
