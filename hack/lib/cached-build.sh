# Sourced by hack/control-plane.sh and hack/cluster.sh: what they share to build
# Kubernetes binaries from Go modules once and cache them outside the repository.

# The Kubernetes release both scripts build; k8s.io/* in go.mod match it.
KUBE_VERSION=v1.37.2
cache_root=${HA_INJECTOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ha-injector}

# kube_ldflags stamps the version, so that clients do not fail to parse
# "v0.0.0-master"; with -trimpath the builds share one Go build cache.
kube_ldflags() {
	local minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	echo "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
}

# cache_key hashes the Go toolchain and its standard input into a short key.
cache_key() {
	{
		go env GOVERSION GOOS GOARCH
		cat
	} | sha256sum | cut -c1-16
}

# cached_build KIND KEY COMPLETE BUILD prints $cache_root/KIND/KEY, after running
# `BUILD DIR` into a temporary DIR unless `COMPLETE FOLDER` says the folder is
# already there. Callers that ask at the same time wait on a lock: one builds.
# The temporary folder is moved into place only when the build succeeded, so a
# half-finished build is never taken for a cached one.
cached_build() {
	local kind=$1 key=$2 complete=$3 build=$4
	local dest="$cache_root/$kind/$key"
	if "$complete" "$dest"; then
		echo "$dest"
		return 0
	fi
	mkdir -p "$cache_root/$kind"
	exec 9>"$cache_root/$kind/.lock"
	flock 9
	if "$complete" "$dest"; then
		echo "$dest"
		return 0
	fi
	tmp=$(mktemp -d "$cache_root/$kind/.build-XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	"$build" "$tmp" "$dest"
	rm -rf "$dest"
	mv "$tmp" "$dest"
	trap - EXIT
	echo "$dest"
}

# executables_in DIR NAME... succeeds when each NAME is an executable file in DIR.
executables_in() {
	local dir=$1 b
	shift
	for b in "$@"; do
		[ -x "$dir/$b" ] || return 1
	done
}

# module_dir DIR MODULE@VERSION prints the module's folder in the Go module cache,
# downloading it, run from DIR outside any module with GOFLAGS cleared.
module_dir() {
	(cd "$1" && GOFLAGS= go mod download -json "$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}
