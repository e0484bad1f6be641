package sysctl

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"keeps a dotted name", "net.ipv4.tcp_retries2", "net.ipv4.tcp_retries2"},
		{"turns a slash name into a dotted one", "net/ipv4/tcp_retries2", "net.ipv4.tcp_retries2"},
		{"swaps a dot inside a segment of a slash name to a slash", "net/ipv4/conf/eth0.100/forwarding", "net.ipv4.conf.eth0/100.forwarding"},
		{"keeps a slash inside a segment of a dotted name", "net.ipv4.conf.eth0/100.forwarding", "net.ipv4.conf.eth0/100.forwarding"},
		{"keeps a name without separators", "kernel", "kernel"},
		{"keeps the empty name", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Normalize(tt.in))
		})
	}
}

func TestIsNamespaced(t *testing.T) {
	tests := []struct {
		name, sysctl string
		want         bool
	}{
		{"a network sysctl is namespaced", "net.ipv4.tcp_retries2", true},
		{"a network sysctl in slash form is namespaced", "net/ipv4/tcp_keepalive_time", true},
		{"a per-interface network sysctl with a VLAN name is namespaced", "net/ipv4/conf/eth0.100/forwarding", true},
		{"a core network sysctl is namespaced", "net.core.somaxconn", true},
		{"kernel.sem is namespaced", "kernel.sem", true},
		{"kernel.shmmax is namespaced", "kernel.shmmax", true},
		{"kernel.shm_rmid_forced is namespaced", "kernel.shm_rmid_forced", true},
		{"kernel.msgmnb is namespaced", "kernel.msgmnb", true},
		{"a POSIX message queue sysctl is namespaced", "fs.mqueue.msg_max", true},
		{"kernel.core_pattern changes the node", "kernel.core_pattern", false},
		{"vm.swappiness changes the node", "vm.swappiness", false},
		{"fs.file-max changes the node", "fs.file-max", false},
		{"a kernel.shm name the kubelet does not list is not namespaced", "kernel.shm_next_id", false},
		{"kernel.semx is not kernel.sem", "kernel.semx", false},
		{"the bare kernel.shm pattern prefix is not a sysctl", "kernel.shm", false},
		{"net alone is not a sysctl", "net", false},
		{"a name that only starts with net is not namespaced", "netfilter.x", false},
		{"fs.mqueue without a leaf is not namespaced", "fs.mqueue", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, IsNamespaced(tt.sysctl))
		})
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name, sysctl, value string
		wantErr             string // empty: accepted
	}{
		{"accepts a TCP sysctl", "net.ipv4.tcp_retries2", "9", ""},
		{"accepts a slash name", "net/ipv4/tcp_keepalive_time", "30", ""},
		{"accepts a list of numbers", "net.ipv4.tcp_rmem", "4096 87380 6291456", ""},
		{"accepts a port range", "net.ipv4.ip_local_port_range", "1024 65000", ""},
		{"accepts a value of the maximum length", "net.ipv4.tcp_congestion_control", strings.Repeat("a", MaxValueLength), ""},
		{"refuses kernel.core_pattern because it would change the node", "kernel.core_pattern", "x", "would change the node"},
		{"refuses vm.swappiness because it would change the node", "vm.swappiness", "1", "would change the node"},
		{"refuses an upper-case name", "net.ipv4.TCP_retries2", "9", "invalid sysctl name"},
		{"refuses an empty segment", "net..ipv4", "9", "invalid sysctl name"},
		{"refuses a parent-folder segment", "net/../../etc/passwd", "9", "invalid sysctl name"},
		{"refuses a glob", "net.ipv4.*", "9", "invalid sysctl name"},
		{"refuses the empty name", "", "9", "invalid sysctl name"},
		{"refuses a command separator in the value", "net.ipv4.tcp_retries2", "9;reboot", "invalid value"},
		{"refuses a command substitution in the value", "net.ipv4.tcp_retries2", "$(reboot)", "invalid value"},
		{"refuses a newline in the value", "net.ipv4.tcp_retries2", "9\n10", "invalid value"},
		{"refuses an empty value", "net.ipv4.tcp_retries2", "", "invalid value"},
		{"refuses a value one byte too long", "net.ipv4.tcp_congestion_control", strings.Repeat("a", MaxValueLength+1), "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.sysctl, tt.value)
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestPath(t *testing.T) {
	tests := []struct {
		name, sysctl, want string
	}{
		{"turns dots into folders", "net.ipv4.tcp_retries2", "net/ipv4/tcp_retries2"},
		{"keeps a slash name", "net/ipv4/tcp_retries2", "net/ipv4/tcp_retries2"},
		{"keeps a VLAN interface's dot from a slash name", "net/ipv4/conf/eth0.100/forwarding", "net/ipv4/conf/eth0.100/forwarding"},
		{"restores a VLAN interface's dot from a dotted name", "net.ipv4.conf.eth0/100.forwarding", "net/ipv4/conf/eth0.100/forwarding"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Path(tt.sysctl))
		})
	}
}

// TestPatternsMatchTheCRD keeps the exported expressions equal to the ones the HAPolicy
// CRD and its Go validation were written with.
func TestPatternsMatchTheCRD(t *testing.T) {
	assert.Equal(t, `^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$`, NamePattern)
	assert.Equal(t, `^[A-Za-z0-9 ._:,/+-]+$`, ValuePattern)
	assert.Equal(t, 256, MaxValueLength)
	for _, p := range []string{NamePattern, ValuePattern} {
		_, err := regexp.Compile(p)
		assert.NoError(t, err)
	}
}
