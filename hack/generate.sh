#!/usr/bin/env bash
# Generates the deepcopy functions and the HAPolicy CRD with controller-gen,
# fetched through the Go module proxy at a pinned version, native mode's admission
# policy fragments of the chart (hack/native-chart), and the reference pages:
# docs/reference/{hapolicy,cli,metrics}.md and the values table of
# charts/ha-injector/README.md.
#
#   hack/generate.sh [OUT_ROOT]
#
# OUT_ROOT (default: the repository) is where the generated files are written,
# so hack/verify-generate.sh can generate into a scratch copy and compare.
set -euo pipefail

CONTROLLER_GEN_VERSION=${CONTROLLER_GEN_VERSION:-v0.23.0}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}

cd "$root"
gen=(go run "sigs.k8s.io/controller-tools/cmd/controller-gen@${CONTROLLER_GEN_VERSION}")

mkdir -p "$out/policies/v1alpha1" "$out/charts/ha-injector/crds"
"${gen[@]}" object:headerFile=hack/boilerplate.go.txt \
	paths=./policies/v1alpha1/... \
	output:object:dir="$out/policies/v1alpha1"
"${gen[@]}" crd \
	paths=./policies/v1alpha1/... \
	output:crd:dir="$out/charts/ha-injector/crds"
# Native mode's admission policies, as the chart renders them.
go run ./hack/native-chart "$out"
# The reference pages. Each is written by the test that otherwise holds it to the code
# beside it (test/harness/refdocs): the cobra tree is built in package main and the
# metrics are the webhook package's own, which only their packages' tests can reach.
# The HAPolicy page is written from the CRD generated above.
HA_INJECTOR_GENERATE_ROOT="$out" go test -count=1 -run '^TestReference' \
	./cmd/ha-injector ./webhook ./test/chart
