#!/usr/bin/env bash
# Builds Kyverno's admission controller from its Go module (no image, no registry) for
# the peers benchmark (make bench-peers), and prints the folder that holds:
#   kyverno   github.com/kyverno/kyverno/cmd/kyverno $KYVERNO_VERSION (the admission controller)
#   crds/     the CRDs it needs to admit, from the same module (config/crds: kyverno.io,
#             policies.kyverno.io, reports.kyverno.io, wgpolicyk8s.io)
#   chart/    its Helm chart (charts/kyverno), whose defaults the benchmark runs it with
#
#   hack/kyverno.sh            # build if needed, print the folder
#   hack/kyverno.sh --cached   # print the folder if it is built, else fail (no build)
#
# Cached like hack/control-plane.sh's binaries, under
# ${HA_INJECTOR_CACHE:-$XDG_CACHE_HOME/ha-injector or ~/.cache/ha-injector}/kyverno/<key>,
# where <key> hashes the Go version, GOOS/GOARCH and the Kyverno version. The build goes
# to a temporary folder that is moved into place only when complete. A cold build
# (measured with empty module and build caches) downloads 2.2 GB of modules, fills 2.6 GB
# of Go build cache and took 25 minutes on 2 cores other jobs were using; it runs at the
# lowest CPU priority (nice 19) so the tests beside it keep their share of the machine.
set -euo pipefail

KYVERNO_VERSION=v1.19.1
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/cached-build.sh
source "$root/hack/lib/cached-build.sh"

key=$(echo "kyverno $KYVERNO_VERSION" | cache_key)

complete() {
	executables_in "$1" kyverno && [ -s "$1/chart/Chart.yaml" ] &&
		[ -n "$(find "$1/crds" -name '*.yaml' -print -quit 2>/dev/null)" ]
}

if [ "${1:-}" = --cached ]; then
	dest="$cache_root/kyverno/$key"
	complete "$dest" || {
		echo "not in the cache $dest: hack/kyverno.sh or make bench-peers builds it once (several GB, many minutes)" >&2
		exit 1
	}
	echo "$dest"
	exit 0
fi

build() {
	local tmp=$1 dest=$2 dir start
	echo "building Kyverno $KYVERNO_VERSION into $dest (first run only: 2.2 GB of modules, 2.6 GB of build cache, about 25 minutes on 2 cores)" >&2
	start=$(date +%s)
	dir=$(module_dir "$tmp" "github.com/kyverno/kyverno@$KYVERNO_VERSION")
	# Kyverno's go.mod has a replace directive, so `go install pkg@version` refuses it:
	# build in its own module folder, as its Makefile does (CGO off, -s -w, the version
	# stamped where `kyverno version` and its start-up log read it).
	(cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n 19 go build -trimpath \
		-ldflags "-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$KYVERNO_VERSION" \
		-o "$tmp/kyverno" ./cmd/kyverno)
	mkdir -p "$tmp/crds"
	cp -R "$dir/config/crds/." "$tmp/crds/"
	cp -R "$dir/charts/kyverno" "$tmp/chart"
	# Files in the module cache are read-only; the copies need not be.
	chmod -R u+w "$tmp/crds" "$tmp/chart"
	echo "built in $(($(date +%s) - start)) s" >&2
}

cached_build kyverno "$key" complete build
