// Command images builds container images of Skiff's programs without a docker daemon.
//
// For each program it builds a static binary (CGO_ENABLED=0, -trimpath, -ldflags '-s -w')
// and wraps it, with github.com/google/go-containerregistry, in an image FROM scratch: one layer
// holding the binary at /usr/local/bin/NAME, a minimal /etc/passwd and /etc/group (root, and
// istio-proxy with uid and gid 1337 as in Istio's images), /tmp and a working directory owned by
// the image's user. Every timestamp is SOURCE_DATE_EPOCH (or the Unix epoch), so the same
// sources give the same image digest. Each image is written as a docker-archive tarball with a
// repo:tag, which `docker load` and `kind load image-archive` accept:
//
//	go run ./hack/images -out out/images -repo skiff -tag dev \
//	    pilot=./cmd/pilot sidecar-injector=./cmd/sidecar-injector capture=./cmd/skiff-capture:0:0
//
// writes out/images/pilot.tar (skiff/pilot:dev), out/images/sidecar-injector.tar and
// out/images/capture.tar. An argument is IMAGE=PACKAGE[:USER]: the image's name (the tarball's
// file name and the last element of its repository), the Go main package to build (the binary
// is named after the package's last path element) and the numeric user the image runs as
// (default 1337:1337, istio-proxy).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := run(ctx, os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the usage is printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

// run parses the command line and builds every image it names.
func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: images [flags] IMAGE=PACKAGE[:USER]...\n\n"+
			"Builds a static binary of each Go main PACKAGE and writes the image OUT/IMAGE.tar,\n"+
			"tagged REPO/IMAGE:TAG, running as USER (numeric, default %s).\n\nflags:\n", defaultUser)
		fs.PrintDefaults()
	}
	var o options
	fs.StringVar(&o.outDir, "out", "out/images", "directory the image tarballs are written to")
	fs.StringVar(&o.repo, "repo", "skiff", "repository prefix of the image names (REPO/IMAGE:TAG)")
	fs.StringVar(&o.tag, "tag", "dev", "tag of the images")
	fs.StringVar(&o.version, "version", "", "org.opencontainers.image.version label (default: the tag)")
	fs.StringVar(&o.source, "source", defaultSource, "org.opencontainers.image.source label")
	fs.StringVar(&o.arch, "arch", "amd64", "GOARCH of the binaries and the images (linux only): amd64 or arm64")
	fs.StringVar(&o.goTool, "go", "go", "go command used to build the binaries")
	epoch := fs.Int64("epoch", sourceDateEpoch(), "timestamp of the image, its history and its files, in seconds since the Unix epoch (default: $SOURCE_DATE_EPOCH, else 0)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("no image to build")
	}
	if _, ok := elfMachines[o.arch]; !ok {
		return fmt.Errorf("-arch %q: want amd64 or arm64", o.arch)
	}
	if _, err := name.NewTag(o.repo + "/image:" + o.tag); err != nil {
		return fmt.Errorf("-repo %q -tag %q: %w", o.repo, o.tag, err)
	}
	if o.version == "" {
		o.version = o.tag
	}
	o.created = time.Unix(*epoch, 0).UTC()
	specs := make([]imageSpec, 0, fs.NArg())
	for _, a := range fs.Args() {
		s, err := parseSpec(a)
		if err != nil {
			return err
		}
		specs = append(specs, s)
	}
	results, err := buildAll(ctx, o, specs)
	for _, r := range results {
		fmt.Printf("%s\t%s\t%s\n", r.path, r.ref, r.digest)
	}
	return err
}

// sourceDateEpoch is $SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/),
// or 0 when it is unset or not a number.
func sourceDateEpoch() int64 {
	v, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
	if err != nil {
		return 0
	}
	return v
}
