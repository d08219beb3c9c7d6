package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	// binDir is where the program's binary lives in the image.
	binDir = "/usr/local/bin"
	// workDir is the image's working directory, owned by the image's user so that a program
	// can keep state relative to it (pilot's default --ca-dir is .skiff-ca).
	workDir = "/var/lib/skiff"
	// pathEnv is the PATH of the images.
	pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

	// passwd and group know root and istio-proxy (1337), the user Istio's images run as and
	// the one its traffic capture exempts; programs and tools that look names up find them.
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"istio-proxy:x:1337:1337:istio-proxy:/home/istio-proxy:/sbin/nologin\n"
	group = "root:x:0:\n" +
		"istio-proxy:x:1337:\n"
)

// OCI annotation keys used as image labels
// (https://github.com/opencontainers/image-spec/blob/main/annotations.md).
const (
	labelSource  = "org.opencontainers.image.source"
	labelVersion = "org.opencontainers.image.version"
	labelTitle   = "org.opencontainers.image.title"
)

// newImage builds s's image FROM scratch around binary: one layer with the binary and the
// minimal filesystem layerTar describes, and a config that runs the binary as s.user.
func newImage(o options, s imageSpec, binary []byte) (v1.Image, error) {
	content, err := layerTar(s, binary, o.created)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(content)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	entrypoint := binDir + "/" + s.binary
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: o.created},
			CreatedBy: fmt.Sprintf("hack/images: %s (%s) at %s, /etc/passwd, /etc/group, /tmp, %s", s.binary, s.pkg, entrypoint, workDir),
			Comment:   "built without a docker daemon by hack/images",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("appending the layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = o.arch
	cfg.OS = "linux"
	cfg.Created = v1.Time{Time: o.created}
	cfg.Config.Entrypoint = []string{entrypoint}
	cfg.Config.Cmd = nil
	cfg.Config.User = s.user
	cfg.Config.WorkingDir = workDir
	cfg.Config.Env = []string{pathEnv}
	cfg.Config.Labels = map[string]string{
		labelSource:  o.source,
		labelVersion: o.version,
		labelTitle:   s.name,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("setting the config: %w", err)
	}
	return img, nil
}

// layerTar returns the uncompressed tar of the image's only layer: the binary at
// /usr/local/bin, /etc/passwd and /etc/group, /tmp (sticky, world-writable), the home
// directories of root and istio-proxy and the working directory, owned by s's user. Every entry
// is dated mtime and the order is fixed, so the layer's digest depends only on its contents.
func layerTar(s imageSpec, binary []byte, mtime time.Time) ([]byte, error) {
	type entry struct {
		name     string
		mode     int64
		uid, gid int
		body     []byte // nil for a directory
	}
	entries := []entry{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "home/", mode: 0o755},
		{name: "home/istio-proxy/", mode: 0o755, uid: 1337, gid: 1337},
		{name: "root/", mode: 0o700},
		{name: "tmp/", mode: 0o1777},
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: "usr/local/bin/" + s.binary, mode: 0o755, body: binary},
		{name: "var/", mode: 0o755},
		{name: "var/lib/", mode: 0o755},
		{name: "var/lib/skiff/", mode: 0o755, uid: s.uid, gid: s.gid},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: mtime,
		}
		if e.body == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing the tar: %w", err)
	}
	return buf.Bytes(), nil
}

// writeTarball writes img to path as a docker-archive tarball (manifest.json, config and
// layers) tagged ref, the format `docker load` and `kind load image-archive` read. It writes a
// temporary file next to path and renames it, so path is never left half written.
func writeTarball(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing left to remove
	if err := tarball.Write(tag, img, f); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
