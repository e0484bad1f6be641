#!/usr/bin/env bash
# Fails when the committed generated files (deepcopy, CRD, native mode's policy
# fragments, the reference pages) differ from what hack/generate.sh produces from
# the current code.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

"$root/hack/generate.sh" "$scratch"

status=0
for f in policies/v1alpha1/zz_generated.deepcopy.go charts/ha-injector/crds/ha-injector.io_hapolicies.yaml charts/ha-injector/files/native/mutating.yaml charts/ha-injector/files/native/validating.yaml \
	docs/reference/hapolicy.md docs/reference/cli.md docs/reference/metrics.md charts/ha-injector/README.md; do
	if ! diff -u "$root/$f" "$scratch/$f"; then
		echo "error: $f is stale; run 'make generate' and commit the result" >&2
		status=1
	fi
done
extra=$(cd "$scratch/charts/ha-injector/crds" && ls | grep -vx ha-injector.io_hapolicies.yaml || true)
if [ -n "$extra" ]; then
	echo "error: controller-gen produced CRDs that are not committed: $extra" >&2
	status=1
fi
exit $status
