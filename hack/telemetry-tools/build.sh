#!/usr/bin/env bash
# Builds the telemetry back ends the tests send to, Prometheus (cmd/prometheus)
# and Jaeger (cmd/jaeger), from the Go module proxy into a cache outside the
# checkout, $CACHE_DIR/telemetry-tools/NAME-VERSION/ (CACHE_DIR defaults to
# ~/.cache/skiff, as for Envoy and kube-tools), and links each folder as
# .cache/telemetry-tools/NAME-VERSION at the repository root, where
# test/framework finds them. Outside the checkout, a fresh clone reuses the
# build instead of compiling it again. Run through `make telemetry-tools`.
#
# Each tool is a module of its own (prometheus/go.mod, jaeger/go.mod) that
# selects exactly the versions its upstream go.mod requires: both depend on the
# OpenTelemetry Collector's modules, which are released in lockstep, and one
# module graph would build Jaeger v1.75.0 (collector v0.139.0) against
# Prometheus' newer pdata (v1.69.0), a mix neither project ships. So there are
# two go build calls, one per module.
#
# A stamp per tool records what it was built from (its go.mod and go.sum, this
# script and the Go version); when it matches, nothing is rebuilt, so a warm
# `make test` costs nothing, while a version bump rebuilds only that tool. Each
# binary is built into a scratch folder and moved in only once it exists and
# reports its version, so an interrupted build never leaves a cache that looks
# complete.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}/telemetry-tools"

# The main module's GOFLAGS (make exports -tags=vtprotobuf) mean nothing to these
# modules; without them, the flags written below are all that decides the
# build, which is what the stamp assumes.
unset GOFLAGS
# CGO is off as in both projects' release builds: static binaries, no C toolchain.
export CGO_ENABLED=0

# build NAME MODULE PACKAGE SHOWN CHECK COLD [go build flags...] builds PACKAGE of
# module MODULE in ./NAME to $cache/NAME-VERSION/NAME, unless its stamp is
# current, and links it into the checkout. CHECK is a command line, run with
# the new binary as $bin, whose output must contain SHOWN (the version the
# binary should report), so a wrong -X flag fails here and not in a test.
# COLD says how long a build with an empty Go build cache takes.
build() {
	local name="$1" module="$2" pkg="$3" shown="$4" check="$5" cold="$6"
	shift 6
	cd "$here/$name"
	local version out stamp link want_stamp
	version="$(go list -m -f '{{.Version}}' "$module")"
	out="$cache/$name-$version"
	stamp="$out/.stamp"
	link="$root/.cache/telemetry-tools/$name-$version"
	want_stamp="$(
		{
			go version
			cat go.mod go.sum "$here/build.sh"
		} | sha256sum | cut -d' ' -f1
	)"
	if ! [[ -x "$out/$name" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
		mkdir -p "$cache"
		scratch="$(mktemp -d "$cache/.build.XXXXXX")"
		echo "building $name $version into $out ($cold)"
		local start=$SECONDS
		go build -trimpath -buildvcs=false "$@" -o "$scratch/$name" "$pkg"
		local reported
		reported="$(bin="$scratch/$name" bash -c "$check" 2>&1)" || true
		if [[ "$reported" != *"$shown"* ]]; then
			echo "$name reports \"$reported\", want it to contain $shown" >&2
			exit 1
		fi
		mkdir -p "$out"
		rm -f "$stamp"
		mv -f "$scratch/$name" "$out/$name"
		rm -rf "$scratch"
		scratch=""
		echo "$want_stamp" >"$stamp"
		echo "$name $version built in $((SECONDS - start))s"
	else
		echo "$name $version up to date in $out"
	fi
	mkdir -p "$(dirname "$link")"
	ln -sfn "$out" "$link"
}

scratch=""
trap '[[ -z "$scratch" ]] || rm -rf "$scratch"' EXIT

# Prometheus: the module version v0.316.0 is release 3.16.0 (the module's VERSION
# file), which is what --version should say; BuildDate is the release's
# publication time, so the binary is reproducible. remove_all_sd leaves out the
# cloud service discoveries (AWS, Azure, Kubernetes, ...: a third of the
# packages) and keeps static, file and HTTP discovery, which is all a test
# scrapes with. The web UI's assets are built by npm and are not in the module,
# so the UI is left out (no builtinassets tag); the HTTP API is all tests use.
cd "$here/prometheus"
# go list -m names the module's folder only once the module is in the module cache: on a
# machine that never built it (a new CI runner), download it first.
go mod download github.com/prometheus/prometheus
prom_dir="$(go list -m -f '{{.Dir}}' github.com/prometheus/prometheus)"
if [[ ! -f "$prom_dir/VERSION" ]]; then
	echo "no VERSION file in the prometheus module (folder: \"$prom_dir\")" >&2
	exit 1
fi
prom_shown="$(tr -d '[:space:]' <"$prom_dir/VERSION")"
prom_date="$(go list -m -f '{{with .Time}}{{.UTC.Format "20060102-15:04:05"}}{{end}}' github.com/prometheus/prometheus)"
pv=github.com/prometheus/common/version
build prometheus github.com/prometheus/prometheus github.com/prometheus/prometheus/cmd/prometheus \
	"$prom_shown" '"$bin" --version' "about 6 minutes cold on 2 busy cores" \
	-tags remove_all_sd \
	-ldflags "-s -w -X $pv.Version=$prom_shown -X $pv.BuildUser=skiff -X $pv.BuildDate=$prom_date"

# Jaeger: cmd/jaeger is Jaeger v2 (an OpenTelemetry Collector distribution);
# its version comes from git tags, which the module proxy does not carry, so it
# reports the module version it was built from.
cd "$here/jaeger"
jaeger_shown="$(go list -m -f '{{.Version}}' github.com/jaegertracing/jaeger)"
jaeger_date="$(go list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' github.com/jaegertracing/jaeger)"
jv=github.com/jaegertracing/jaeger/internal/version
build jaeger github.com/jaegertracing/jaeger github.com/jaegertracing/jaeger/cmd/jaeger \
	"$jaeger_shown" '"$bin" version' "about 10 minutes cold on 2 busy cores" \
	-ldflags "-s -w -X $jv.latestVersion=$jaeger_shown -X $jv.date=$jaeger_date"
