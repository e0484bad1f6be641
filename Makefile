# ha-injector — run `make help` for the targets.

GO ?= go
BIN_DIR ?= bin
OUTPUT ?= _output
# The version, from one place: the chart's appVersion. The binaries print it, the image
# is tagged with it (the tag the chart pulls by default), the release's chart and CLI
# archives carry it, and a release is the git tag v$(VERSION) (docs/versioning.md).
VERSION ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$$/\1/p' charts/ha-injector/Chart.yaml)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The platform make build builds for (default: this machine's), and which commands.
GOOS ?= $(shell $(GO) env GOOS)
GOARCH ?= $(shell $(GO) env GOARCH)
CMDS ?= ha-injector ha-sysctl
EXE := $(if $(filter windows,$(GOOS)),.exe,)
# The image: the repository the chart pulls from, and the platforms of its index.
IMAGE ?= ghcr.io/ha-injector/ha-injector
IMAGE_PLATFORMS ?= linux/amd64 linux/arm64
# The platforms of the released ha-injector CLI archives.
RELEASE_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
# The admission mode make demo runs: webhook or native (the chart's admission.mode).
MODE ?= webhook
# Pinned, run from its Go module (go run fetches it through the module proxy).
ACTIONLINT_VERSION ?= v1.7.12

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/ha-injector and bin/ha-sysctl (static, as in the container image; GOOS=, GOARCH= to cross-compile).
	@set -e; for cmd in $(CMDS); do \
		echo "CGO_ENABLED=0 GOOS=$(GOOS) GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN_DIR)/$$cmd$(EXE) ./cmd/$$cmd"; \
		CGO_ENABLED=0 GOOS=$(GOOS) GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN_DIR)/$$cmd$(EXE) ./cmd/$$cmd; \
	done

.PHONY: image-tar
image-tar: ## The container image without Docker, for linux/amd64 and linux/arm64 (make build's binaries): _output/ha-injector-image.tar, an OCI image layout named $(IMAGE):$(VERSION).
	@set -e; for p in $(IMAGE_PLATFORMS); do \
		$(MAKE) --no-print-directory build GOOS=$${p%/*} GOARCH=$${p#*/} BIN_DIR=$(OUTPUT)/bin/$${p%/*}_$${p#*/} VERSION=$(VERSION); \
	done
	$(GO) run ./hack/image -bin $(OUTPUT)/bin -platforms '$(IMAGE_PLATFORMS)' -o $(OUTPUT)/ha-injector-image.tar -tag $(IMAGE):$(VERSION)

.PHONY: image-push
image-push: image-tar ## Push make image-tar's image, byte for byte, to $(IMAGE):$(VERSION) with the credentials of ~/.docker/config.json (no Docker engine needed); prints its digests.
	$(GO) run ./hack/release push-image -image-tar $(OUTPUT)/ha-injector-image.tar $(IMAGE):$(VERSION)

.PHONY: release-dry-run
release-dry-run: image-tar ## Every artifact of a release in _output/release/, pushed nowhere: the image (OCI layout), the chart pinned to its digest, the CLI archives, the krew manifest, checksums.
	$(GO) run ./hack/release build -version $(VERSION) -image-tar $(OUTPUT)/ha-injector-image.tar -bin $(OUTPUT)/bin -platforms '$(RELEASE_PLATFORMS)' -o $(OUTPUT)/release

.PHONY: generate
generate: ## Regenerate deepcopy code, the HAPolicy CRD (controller-gen, pinned), native mode's chart fragments and the reference pages (docs/reference, the chart's values table).
	hack/generate.sh

.PHONY: verify-generate
verify-generate: ## Fail if generated files are stale.
	hack/verify-generate.sh

.PHONY: lint
lint: ## gofmt, go vet, and actionlint on .github/workflows.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags node ./test/node/...
	@# shellcheck and pyflakes off: actionlint runs them when they are installed, and the
	@# result must not depend on the machine.
	GOFLAGS= $(GO) run github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION) -shellcheck= -pyflakes= .github/workflows/*.yml

.PHONY: control-plane
control-plane: ## Build (once, cached outside the repo) kube-apiserver, etcd, kube-controller-manager, kube-scheduler and KWOK.
	hack/control-plane.sh
	hack/cluster.sh

.PHONY: unit
unit: ## Run every Go test (unit, golden, CLI, fuzz seeds, real API server suites, the short failover).
	@# Built (or found in the cache) before the tests, outside go test's time limit.
	hack/cluster.sh >/dev/null
	@hack/kyverno.sh --cached >/dev/null 2>&1 || echo "note: Kyverno is not built, so the peers check (TestShortPeers) skips Kyverno and checks the minimal mutating webhook only; hack/kyverno.sh (or make bench-peers) builds it once: several GB, many minutes"
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" $(GO) test -count=1 ./...

.PHONY: test
test: lint verify-generate build unit ## Everything CI runs: lint, generated files, build, tests.

.PHONY: test-node
test-node: ## As root: a real node (kubelet, containerd, runc from hack/node.sh), the chart installed on it, pods and a TCP leg through its webhook, then pods in native mode (about 8 minutes); changes the host for its run and puts it back. Not part of make test.
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" $(GO) test -tags node ./test/node -count=1 -v -timeout 20m

.PHONY: bench
bench: ## Handler benchmarks, then load over TLS and through kube-apiserver next to a no-op webhook, native mode, native mode's floor and no admission; table on stdout, rows in _output/bench.json, their ratios drawn in _output/bench-ratios.svg, kube-apiserver's CPU profiles in _output/bench-profiles.
	$(GO) test ./webhook -run '^$$' -bench Admission -benchmem
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" $(GO) run ./test/bench/cmd/bench -out _output/bench.json -apiserver-cpuprofile-dir _output/bench-profiles

.PHONY: bench-peers
bench-peers: ## ha-injector next to a minimal controller-runtime mutating webhook and Kyverno (built once from its Go module by hack/kyverno.sh, cached), over TLS and through kube-apiserver; table on stdout, rows in _output/bench-peers.json, CPU profiles in _output/bench-peers-profiles.
	hack/kyverno.sh >/dev/null
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" $(GO) run ./test/bench/cmd/bench-peers -out _output/bench-peers.json -cpuprofile-dir _output/bench-peers-profiles

.PHONY: fuzz
fuzz: ## Fuzz the HTTP handler and the engine for FUZZTIME each (default 2m).
	$(GO) test ./webhook -run '^$$' -fuzz FuzzReviewHandler -fuzztime $(or $(FUZZTIME),2m)
	$(GO) test ./policies -run '^$$' -fuzz FuzzMutateDocument -fuzztime $(or $(FUZZTIME),2m)

.PHONY: golden
golden: ## Refresh the golden files after an intended change of output.
	$(GO) test ./policies ./webhook ./test/chart -run 'Golden|Schema' -update

.PHONY: demo
demo: ## Run ha-injector in a simulated cluster (make failover's: 6 KWOK nodes in 3 zones), show what it injects and where the pods run (MODE=native: the API server injects, from the chart's MutatingAdmissionPolicy); Ctrl-C stops it.
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh)" $(GO) run ./hack/demo -mode=$(MODE)

.PHONY: demo-kill-node
demo-kill-node: ## Beside a running make demo: kill its node NODE= (KWOK stops the node's heartbeats) and watch the pods of demo and demo-plain move.
	@test -n "$(NODE)" || { echo "make demo-kill-node NODE=zone-b-1 (make demo prints which node to kill)"; exit 2; }
	$(GO) run ./hack/demo kill-node $(NODE)

.PHONY: preview
preview: ## Preview the example Deployment with all three injections (no cluster).
	$(GO) run ./cmd/ha-injector preview -f examples/web-server.yaml

.PHONY: failover
failover: ## Kill a node, then a zone, of a simulated cluster (real control plane + KWOK) and time recovery with and without ha-injector (~12 min); tables on stdout, rows in _output/failover.json, a timeline per scenario in _output/failover-*.svg and docs/images.
	$(GO) run ./test/failover/cmd/failover -json _output/failover.json -pictures-dir docs/images

.PHONY: failover-pictures
failover-pictures: ## Redraw the failover timelines (_output/failover-*.svg and docs/images) from the _output/failover.json of an earlier make failover, running nothing.
	$(GO) run ./test/failover/cmd/failover -from _output/failover.json -pictures-dir docs/images
