#!/usr/bin/env bash
# Builds what a real node needs, from Go modules (no apt, no registry), and prints
# the folder that holds the binaries:
#   kubelet                      k8s.io/kubernetes/cmd/kubelet $KUBE_VERSION (wrapper module ./control-plane/node)
#   containerd, containerd-shim-runc-v2, ctr   github.com/containerd/containerd/v2 $CONTAINERD_VERSION
#   runc                         github.com/opencontainers/runc $RUNC_VERSION (cgo: its nsenter is C; without seccomp)
#   cni/bridge, cni/host-local, cni/loopback   github.com/containernetworking/plugins $CNI_VERSION
#     (not portmap: like kube-proxy it drives iptables or nft, and this machine kind has neither)
#
#   hack/node.sh            # build if needed, print the folder
#
# kube-apiserver and etcd come from hack/control-plane.sh, kube-controller-manager and
# kube-scheduler from hack/cluster.sh; this script builds only what a node adds.
# Cached like them, under
# ${HA_INJECTOR_CACHE:-$XDG_CACHE_HOME/ha-injector or ~/.cache/ha-injector}/node/<key>,
# where <key> hashes the Go version, GOOS/GOARCH, the versions above and the wrapper
# module's go.mod/go.sum. First run on 2 cores: about 2 minutes after hack/cluster.sh
# (the kubelet shares most of its Go build cache), longer on a cold one.
set -euo pipefail

CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
CNI_VERSION=v1.10.0
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/cached-build.sh
source "$root/hack/lib/cached-build.sh"
wrapper="$root/hack/control-plane/node"
binaries=(kubelet containerd containerd-shim-runc-v2 ctr runc cni/bridge cni/host-local cni/loopback)

key=$( {
	echo "$KUBE_VERSION $CONTAINERD_VERSION $RUNC_VERSION $CNI_VERSION"
	cat "$wrapper/go.mod" "$wrapper/go.sum"
} | cache_key)

complete() {
	executables_in "$1" "${binaries[@]}"
}

build() {
	local tmp=$1 dest=$2 start dir p
	echo "building kubelet $KUBE_VERSION, containerd $CONTAINERD_VERSION, runc $RUNC_VERSION and the CNI plugins $CNI_VERSION into $dest (first run only: a few minutes)" >&2
	start=$(date +%s)
	(cd "$wrapper" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$(kube_ldflags)" -o "$tmp/kubelet" k8s.io/kubernetes/cmd/kubelet)
	# containerd's go.mod has no replace directives: `go install pkg@version` builds it
	# as released, outside any module and with GOFLAGS cleared.
	(cd "$tmp" && GOFLAGS= GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION")
	mkdir -p "$tmp/cni"
	for p in main/bridge ipam/host-local main/loopback; do
		(cd "$tmp" && GOFLAGS= GOBIN="$tmp/cni" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
			"github.com/containernetworking/plugins/plugins/$p@$CNI_VERSION")
	done
	# runc's go.mod has replace directives, so `go install` refuses it: build it in its
	# own module folder, as its Makefile does, with cgo for libcontainer's nsenter.
	dir=$(module_dir "$tmp" "github.com/opencontainers/runc@$RUNC_VERSION")
	(cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o "$tmp/runc" .)
	echo "built in $(( $(date +%s) - start )) s" >&2
}

cached_build node "$key" complete build
