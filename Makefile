# The two commands a newcomer needs: `make demo` and `make test`. Everything they need is built or
# installed on first use and cached outside the repository, in $(CACHE).
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ecs-defender-operator
export CARGO_TARGET_DIR ?= $(CACHE)/target
CRD := crds/ecsdefenderdeployments.ecsdefender.io.yaml
CHART_CRD := charts/ecs-defender-operator/files/crds/ecsdefenderdeployments.ecsdefender.io.yaml

.PHONY: test soak demo tools build release crd lint fmt sandbox image chart bench
TOOL = $(shell bash hack/install-test-tools.sh --print-env | sed -n 's/^$(1)=//p')

## test: install what tests need (once), then run every test: the test binaries two at a time
## (hack/test.sh; TEST_LANES=1 for one at a time). One binary: cargo test --workspace --locked --test NAME
test: tools
	bash hack/test.sh

## soak: the long reliability runs `make test` shortens: every crash point (about 90, ~40 min) and
## a five-minute AWS outage; CRASH_SEED picks another draw of failovers
soak: tools
	CRASH_POINTS=all OUTAGE_SECONDS=300 cargo test --workspace --locked --test crash_consistency --test faults -- --nocapture --test-threads=1

## demo: start the local test world, run the operator and bring the sample to Ready
demo: tools
	bash hack/demo.sh

## bench: the operator's release binary measured against the sandbox (~30 min): one table (markdown,
## for the README) on stdout, the same as JSON in $(CACHE)/bench/latest.json, operator logs next to it.
## Quicker, unrepresentative runs: BENCH_STEADY_SECONDS=60 BENCH_WAIT_SECONDS=60 BENCH_ADOPT=100 make bench,
## or pass BENCH_ARGS="--cases single,waiting"
bench: tools
	cargo build --release --locked --bin ecs-defender-operator
	cargo build --workspace --locked --bins
	$(CARGO_TARGET_DIR)/debug/sandbox bench --operator $(CARGO_TARGET_DIR)/release/ecs-defender-operator \
		--json $(CACHE)/bench/latest.json $(BENCH_ARGS)

## tools: build/install the test world's binaries (kube-apiserver, etcd, kubectl, helm, moto)
tools:
	bash hack/install-test-tools.sh

build:
	cargo build --workspace --locked

## release: the operator's release binary, exactly as the Dockerfile builds it; then an image of it
## assembled by buildah without a base image, run with --help (hack/image-buildah.sh)
release: tools
	cargo build --release --locked --bin ecs-defender-operator
	bash hack/image-buildah.sh $(CARGO_TARGET_DIR)/release/ecs-defender-operator

## crd: regenerate the committed CRD (and the chart's copy) from the Rust types
# (built with the workspace's feature set, so it shares the build `make test` makes)
crd:
	cargo build --workspace --locked --quiet --bin crdgen
	$(CARGO_TARGET_DIR)/debug/crdgen > $(CRD)
	mkdir -p $(dir $(CHART_CRD)) && cp $(CRD) $(CHART_CRD)

## lint: rustfmt, clippy, hadolint on the Dockerfile, and the release build assembled into an image
## that runs (make release)
lint: tools
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	$(call TOOL,HADOLINT) Dockerfile
	$(MAKE) release

fmt:
	cargo fmt --all

## sandbox: start the local test world and keep it running (Ctrl-C stops it)
sandbox: tools
	mkdir -p .sandbox
	cargo run --locked --quiet -p ecs-defender-sandbox --bin sandbox -- up --env-file .sandbox/env

## chart: lint and render the Helm chart, and check its RBAC on a real apiserver
chart: tools
	cargo test --locked -p ecs-defender-operator --test chart

IMAGE ?= ecs-defender-operator:dev
## image: build the operator's container image (needs a Docker engine)
image:
	docker build -t $(IMAGE) .
