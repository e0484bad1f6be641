#!/usr/bin/env bash
# Builds what a simulated cluster needs on top of the tests' kube-apiserver and
# etcd (hack/control-plane.sh): kube-controller-manager and kube-scheduler from
# k8s.io/kubernetes, and KWOK's `kwok` (fake nodes and kubelets) and `kwokctl`.
# Prints the folder that holds the four binaries and kwok-stages.yaml, the
# Stages (node heartbeat through its Lease, pod lifecycle) that `kwokctl create
# cluster` gives the kwok controller, taken from the same KWOK release.
#
#   hack/cluster.sh            # build if needed, print the folder
#
# kube-apiserver and etcd are not copied here: hack/control-plane.sh owns them
# and its cache key, so building these never invalidates the envtest binaries.
#
# The binaries are cached outside the repository, under
# ${HA_INJECTOR_CACHE:-$XDG_CACHE_HOME/ha-injector or ~/.cache/ha-injector}/cluster/<key>,
# where <key> hashes the Go version, GOOS/GOARCH, the Kubernetes and KWOK
# versions and the wrapper module's go.mod/go.sum. Builds go to a temporary
# folder that is moved into place only when complete. First run on 2 cores: about 3
# minutes after hack/control-plane.sh has built kube-apiserver (they share most of
# the Go build cache), about 6 minutes on a cold one.
set -euo pipefail

KWOK_VERSION=v0.8.0
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/cached-build.sh
source "$root/hack/lib/cached-build.sh"
wrapper="$root/hack/control-plane/cluster"
binaries=(kube-controller-manager kube-scheduler kwok kwokctl)
stages=(node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete)

key=$( {
	echo "$KUBE_VERSION $KWOK_VERSION"
	cat "$wrapper/go.mod" "$wrapper/go.sum"
} | cache_key)

complete() {
	executables_in "$1" "${binaries[@]}" && [ -s "$1/kwok-stages.yaml" ]
}

# The same flags as hack/control-plane.sh (kube_ldflags, -trimpath): the builds share
# one Go build cache.
build() {
	local tmp=$1 dest=$2 cmd s kwok_dir start
	echo "building kube-controller-manager, kube-scheduler $KUBE_VERSION and kwok, kwokctl $KWOK_VERSION into $dest (first run only: about 3 minutes after hack/control-plane.sh, 6 on a cold Go build cache)" >&2
	start=$(date +%s)
	for cmd in kube-controller-manager kube-scheduler; do
		(cd "$wrapper" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$(kube_ldflags)" -o "$tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
	done
	# KWOK's own go.mod has no replace directives, so `go install pkg@version` builds
	# it as released. Run outside any module, with GOFLAGS cleared, so neither the
	# caller's module nor its flags leak in.
	(cd "$tmp" && GOFLAGS= GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
		"sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION")
	# The Stages kwokctl embeds (kustomize/stage/...), as one config file for `kwok --config`.
	kwok_dir=$(module_dir "$tmp" "sigs.k8s.io/kwok@$KWOK_VERSION")
	for s in "${stages[@]}"; do
		echo "---"
		cat "$kwok_dir/kustomize/stage/$s.yaml"
	done >"$tmp/kwok-stages.yaml"
	echo "built in $(($(date +%s) - start)) s" >&2
}

cached_build cluster "$key" complete build
