package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	// defaultUser is the user images run as unless their argument says otherwise: istio-proxy,
	// as Istio's own images do.
	defaultUser = "1337:1337"
	// defaultSource is the org.opencontainers.image.source label.
	defaultSource = "https://github.com/skiffmesh/skiff"
)

// options are the settings shared by every image of a run.
type options struct {
	outDir  string    // where IMAGE.tar files go
	repo    string    // REPO of REPO/IMAGE:TAG
	tag     string    // TAG of REPO/IMAGE:TAG
	version string    // org.opencontainers.image.version
	source  string    // org.opencontainers.image.source
	arch    string    // GOARCH of binaries and images
	goTool  string    // the go command
	created time.Time // every timestamp of the images
}

// imageSpec is one image to build, from an IMAGE=PACKAGE[:USER] argument.
type imageSpec struct {
	name     string // image name: the tarball's base name and the repository's last element
	pkg      string // Go main package, as given to go build
	binary   string // file name of the binary in /usr/local/bin
	user     string // config User, "UID" or "UID:GID"
	uid, gid int    // numeric owner of the working directory
}

// result describes one image written.
type result struct {
	path   string // the tarball
	ref    string // its repo:tag
	digest string // the image's manifest digest
}

// parseSpec parses IMAGE=PACKAGE[:USER]. USER is numeric, UID or UID:GID (GID defaults to UID),
// so that Kubernetes can check runAsNonRoot without an /etc/passwd lookup.
func parseSpec(arg string) (imageSpec, error) {
	name, rest, ok := strings.Cut(arg, "=")
	if !ok || name == "" || rest == "" {
		return imageSpec{}, fmt.Errorf("image %q: want IMAGE=PACKAGE[:USER]", arg)
	}
	if strings.ContainsAny(name, "/:@ ") || strings.ToLower(name) != name {
		return imageSpec{}, fmt.Errorf("image %q: name %q must be one lower-case path element", arg, name)
	}
	pkg, user, hasUser := strings.Cut(rest, ":")
	if !hasUser {
		user = defaultUser
	}
	uidText, gidText, hasGID := strings.Cut(user, ":")
	if !hasGID {
		gidText = uidText
	}
	uid, err := strconv.Atoi(uidText)
	if err != nil || uid < 0 {
		return imageSpec{}, fmt.Errorf("image %q: user %q: want a numeric UID or UID:GID", arg, user)
	}
	gid, err := strconv.Atoi(gidText)
	if err != nil || gid < 0 {
		return imageSpec{}, fmt.Errorf("image %q: user %q: want a numeric UID or UID:GID", arg, user)
	}
	binary := path.Base(strings.TrimRight(filepath.ToSlash(pkg), "/"))
	if binary == "." || binary == "/" || binary == ".." {
		return imageSpec{}, fmt.Errorf("image %q: cannot name a binary after package %q", arg, pkg)
	}
	return imageSpec{name: name, pkg: pkg, binary: binary, user: user, uid: uid, gid: gid}, nil
}

// buildAll builds every image in turn and writes its tarball. It goes on after a failure, so
// that one broken program does not hide the state of the others, and returns the images
// written and every error.
func buildAll(ctx context.Context, o options, specs []imageSpec) ([]result, error) {
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	binDir, err := os.MkdirTemp("", "skiff-images-")
	if err != nil {
		return nil, fmt.Errorf("directory for binaries: %w", err)
	}
	defer os.RemoveAll(binDir)

	var results []result
	var errs []error
	for _, s := range specs {
		r, err := buildImage(ctx, o, s, binDir)
		if err != nil {
			errs = append(errs, fmt.Errorf("image %s: %w", s.name, err))
			continue
		}
		results = append(results, r)
	}
	return results, errors.Join(errs...)
}

// buildImage builds the binary of s into binDir and writes its image tarball into o.outDir.
func buildImage(ctx context.Context, o options, s imageSpec, binDir string) (result, error) {
	dir := filepath.Join(binDir, s.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, fmt.Errorf("directory for the binary: %w", err)
	}
	bin := filepath.Join(dir, s.binary)
	if err := buildBinary(ctx, o.goTool, o.arch, s.pkg, bin); err != nil {
		return result{}, err
	}
	if err := checkStatic(bin, o.arch); err != nil {
		return result{}, err
	}
	content, err := os.ReadFile(bin)
	if err != nil {
		return result{}, fmt.Errorf("reading the binary: %w", err)
	}
	img, err := newImage(o, s, content)
	if err != nil {
		return result{}, err
	}
	ref := fmt.Sprintf("%s/%s:%s", o.repo, s.name, o.tag)
	out := filepath.Join(o.outDir, s.name+".tar")
	if err := writeTarball(out, ref, img); err != nil {
		return result{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return result{}, fmt.Errorf("image digest: %w", err)
	}
	return result{path: out, ref: ref, digest: digest.String()}, nil
}

// buildBinary builds the static linux/arch binary of Go main package pkg into out. The build
// runs in the current directory, so pkg is resolved as `go build` would from there.
func buildBinary(ctx context.Context, goTool, arch, pkg, out string) error {
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	var stderr bytes.Buffer
	cmd.Stdout = os.Stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// elfMachines maps the GOARCH values the images support to their ELF machine.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// checkStatic makes sure the file at path is a linux ELF executable for arch that needs no
// dynamic loader: a scratch image has none.
func checkStatic(path, arch string) error {
	want, ok := elfMachines[arch]
	if !ok {
		return fmt.Errorf("architecture %q is not supported (amd64, arm64)", arch)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("binary %s: %w", path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		return fmt.Errorf("binary %s: ELF type %v, want a static executable (%v)", path, f.Type, elf.ET_EXEC)
	}
	if f.Machine != want {
		return fmt.Errorf("binary %s: machine %v, want %v for %s", path, f.Machine, want, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return fmt.Errorf("binary %s: dynamically linked (%v), cannot run FROM scratch", path, p.Type)
		}
	}
	return nil
}
