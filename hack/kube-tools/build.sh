#!/usr/bin/env bash
# Builds the test cluster's binaries (etcd, kube-apiserver, kubectl) from source
# into a cache outside the checkout, $CACHE_DIR/kube-tools/KUBE_VERSION/
# (CACHE_DIR defaults to ~/.cache/skiff, as for Envoy), and links it as
# .cache/kube-tools/KUBE_VERSION at the repository root, where test/kube finds
# them. Outside the checkout, a fresh clone (which is what CI tests) reuses the
# build instead of spending minutes linking it again. Run through `make kube-tools`.
#
# Everything comes from the Go module proxy: k8s.io/kubernetes at the version
# this module requires, with each staging module replaced by its matching
# v0.x release (see go.mod), and etcd at the version Kubernetes itself pins.
#
# A stamp records what the binaries were built from (this module's go.mod,
# go.sum, sources and the Go version); when it matches, nothing is rebuilt, so a
# warm `make test` costs nothing, while a version bump rebuilds. The binaries
# are built into a scratch folder and moved in only once all three exist, so an
# interrupted build never leaves a half-filled cache that looks complete.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

kube_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
cache="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}/kube-tools"
out="$cache/$kube_version"
stamp="$out/.stamp"
link="$root/.cache/kube-tools/$kube_version"

# link points the checkout at the cache (replacing a folder from before the cache moved out).
link() {
	mkdir -p "$(dirname "$link")"
	if [[ -d "$link" && ! -L "$link" ]]; then rm -rf "$link"; fi
	ln -sfn "$out" "$link"
}

want_stamp="$(
	{
		go version
		cat go.mod go.sum build.sh etcd/main.go
	} | sha256sum | cut -d' ' -f1
)"

if [[ -x "$out/etcd" && -x "$out/kube-apiserver" && -x "$out/kubectl" &&
	-f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
	link
	echo "kube-tools $kube_version up to date in $out"
	exit 0
fi

# The version that `kubectl version` and the apiserver's /version report, set
# the way Kubernetes' own hack/lib/version.sh does. The module proxy carries
# no commit hash, so gitCommit stays empty; the build date is the release's
# publication time, which keeps the binaries reproducible.
minor="${kube_version#v*.}"
minor="${minor%%.*}"
major="${kube_version#v}"
major="${major%%.*}"
build_date="$(go list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
build_date="${build_date:-1970-01-01T00:00:00Z}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$kube_version"
	ldflags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean"
	ldflags+=" -X $pkg.buildDate=$build_date"
done

mkdir -p "$cache"
scratch="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

echo "building etcd, kube-apiserver and kubectl $kube_version into $out (about 10 minutes cold on 2 cores)"
start=$SECONDS
# One go build for all three, so the packages they share compile once.
# CGO is off as in Kubernetes' release builds: static binaries, no C toolchain.
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$scratch/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kubectl \
	./etcd

"$scratch/kube-apiserver" --version | grep -qx "Kubernetes $kube_version" || {
	echo "kube-apiserver reports $("$scratch/kube-apiserver" --version), want $kube_version" >&2
	exit 1
}
mkdir -p "$out"
rm -f "$stamp"
mv -f "$scratch/etcd" "$scratch/kube-apiserver" "$scratch/kubectl" "$out/"
echo "$want_stamp" >"$stamp"
link
echo "kube-tools $kube_version built in $((SECONDS - start))s: $(cd "$out" && echo etcd kube-apiserver kubectl)"
