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

KUBE_VERSION=v1.37.2
root=$(cd "$(dirname "$0")/.." && pwd)
wrappers="$root/hack/control-plane"
cache_root=${HA_INJECTOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ha-injector}

key=$( {
	go env GOVERSION GOOS GOARCH
	echo "$KUBE_VERSION"
	cat "$wrappers/kube/go.mod" "$wrappers/kube/go.sum" "$wrappers/etcd/go.mod" "$wrappers/etcd/go.sum"
} | sha256sum | cut -c1-16)
dest="$cache_root/control-plane/$key"

if [ -x "$dest/kube-apiserver" ] && [ -x "$dest/etcd" ]; then
	echo "$dest"
	exit 0
fi

mkdir -p "$cache_root/control-plane"
# Test packages may ask for the binaries at the same time: one builds, the others wait.
exec 9>"$cache_root/control-plane/.lock"
flock 9
if [ -x "$dest/kube-apiserver" ] && [ -x "$dest/etcd" ]; then
	echo "$dest"
	exit 0
fi
tmp=$(mktemp -d "$cache_root/control-plane/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"

echo "building kube-apiserver $KUBE_VERSION and etcd into $dest (first run only: about 5 minutes)" >&2
(cd "$wrappers/etcd" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
(cd "$wrappers/kube" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)

mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest"
