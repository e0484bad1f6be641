#!/usr/bin/env bash
# Builds a real kube-apiserver and etcd from Go modules (the machine cannot
# download envtest's prebuilt binaries) and prints the folder that holds them,
# for KUBEBUILDER_ASSETS.
#
#   hack/control-plane.sh            # build if needed, print the folder
#
# The binaries are cached outside the repository, under
# ${HA_INJECTOR_CACHE:-$XDG_CACHE_HOME/ha-injector or ~/.cache/ha-injector}/control-plane/<key>,
# where <key> hashes the Go version, GOOS/GOARCH and the wrapper modules'
# go.mod/go.sum, so a change to any of them builds anew. Builds go to a
# temporary folder that is moved into place only when complete, so a
# half-finished build is never taken for a cached one.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/cached-build.sh
source "$root/hack/lib/cached-build.sh"
wrappers="$root/hack/control-plane"

key=$( {
	echo "$KUBE_VERSION"
	cat "$wrappers/kube/go.mod" "$wrappers/kube/go.sum" "$wrappers/etcd/go.mod" "$wrappers/etcd/go.sum"
} | cache_key)

complete() { [ -x "$1/kube-apiserver" ] && [ -x "$1/etcd" ]; }

build() {
	local tmp=$1 dest=$2
	echo "building kube-apiserver $KUBE_VERSION and etcd into $dest (first run only: about 5 minutes)" >&2
	(cd "$wrappers/etcd" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
	(cd "$wrappers/kube" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "$(kube_ldflags)" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
}

cached_build control-plane "$key" complete build
