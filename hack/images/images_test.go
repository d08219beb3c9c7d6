package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// testOptions are the options of a test build into a fresh directory.
func testOptions(t *testing.T) options {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("no go command in PATH:", err)
	}
	return options{
		outDir:  t.TempDir(),
		repo:    "skiff",
		tag:     "test",
		version: "v0.0.0-test",
		source:  defaultSource,
		arch:    "amd64",
		goTool:  goTool,
		created: time.Unix(0, 0).UTC(),
	}
}

// build builds the image of one IMAGE=PACKAGE[:USER] argument and returns what was written.
func build(t *testing.T, o options, arg string) result {
	t.Helper()
	s, err := parseSpec(arg)
	if err != nil {
		t.Fatal(err)
	}
	// No deadline of our own: a cold build on a busy 2-core machine takes minutes, and
	// go test's -timeout already bounds a build that hangs.
	results, err := buildAll(t.Context(), o, []imageSpec{s})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 {
		t.Fatalf("got %d results, want 1", len(results))
	}
	return results[0]
}

// layerFile is one entry of an image layer.
type layerFile struct {
	header *tar.Header
	body   []byte
}

// readImage loads the tarball at path, checks it holds exactly the image tagged ref and
// returns the image and the files of its only layer.
func readImage(t *testing.T, path, ref string) (v1.Image, map[string]layerFile) {
	t.Helper()
	manifest, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		t.Fatalf("manifest.json of %s: %v", path, err)
	}
	if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{ref}) {
		t.Fatalf("manifest.json of %s: %+v, want one image tagged %s", path, manifest, ref)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	// Digests, sizes, diff IDs and the config's rootfs must agree with the blobs.
	if err := validate.Image(img); err != nil {
		t.Fatalf("%s is not a valid image: %v", path, err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatalf("image manifest: %v", err)
	}
	if m.MediaType != types.DockerManifestSchema2 || len(m.Layers) != 1 {
		t.Fatalf("image manifest: media type %s with %d layers, want %s with 1", m.MediaType, len(m.Layers), types.DockerManifestSchema2)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatalf("layers: %v", err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatalf("layer: %v", err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("layer: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("layer %s: %v", h.Name, err)
		}
		files[h.Name] = layerFile{header: h, body: body}
	}
	return img, files
}

// checkFile fails t unless the layer holds name with the given type, mode and owner.
func checkFile(t *testing.T, files map[string]layerFile, name string, typ byte, mode int64, uid, gid int) {
	t.Helper()
	f, ok := files[name]
	if !ok {
		t.Errorf("layer has no %s", name)
		return
	}
	h := f.header
	if h.Typeflag != typ || h.Mode != mode || h.Uid != uid || h.Gid != gid {
		t.Errorf("%s: type %q mode %#o owner %d:%d, want type %q mode %#o owner %d:%d",
			name, h.Typeflag, h.Mode, h.Uid, h.Gid, typ, mode, uid, gid)
	}
}

func TestPilotImage(t *testing.T) {
	o := testOptions(t)
	r := build(t, o, "pilot=github.com/skiffmesh/skiff/cmd/pilot")
	if want := filepath.Join(o.outDir, "pilot.tar"); r.path != want {
		t.Errorf("tarball at %s, want %s", r.path, want)
	}
	img, files := readImage(t, r.path, "skiff/pilot:test")

	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if digest.String() != r.digest {
		t.Errorf("digest read back %s, reported %s", digest, r.digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	c := cf.Config
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if !cf.Created.Equal(time.Unix(0, 0)) {
		t.Errorf("created %v, want the Unix epoch", cf.Created)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/pilot"}) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [/usr/local/bin/pilot] and no cmd", c.Entrypoint, c.Cmd)
	}
	if c.User != "1337:1337" || c.WorkingDir != "/var/lib/skiff" {
		t.Errorf("user %q workdir %q, want 1337:1337 in /var/lib/skiff", c.User, c.WorkingDir)
	}
	if !slices.Contains(c.Env, pathEnv) {
		t.Errorf("env %q has no %s", c.Env, pathEnv)
	}
	wantLabels := map[string]string{labelSource: defaultSource, labelVersion: "v0.0.0-test", labelTitle: "pilot"}
	for k, v := range wantLabels {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}

	checkFile(t, files, "usr/local/bin/pilot", tar.TypeReg, 0o755, 0, 0)
	checkFile(t, files, "etc/passwd", tar.TypeReg, 0o644, 0, 0)
	checkFile(t, files, "etc/group", tar.TypeReg, 0o644, 0, 0)
	checkFile(t, files, "tmp/", tar.TypeDir, 0o1777, 0, 0)
	checkFile(t, files, "var/lib/skiff/", tar.TypeDir, 0o755, 1337, 1337)
	if p := string(files["etc/passwd"].body); !strings.Contains(p, "\nistio-proxy:x:1337:1337:") || !strings.HasPrefix(p, "root:x:0:0:") {
		t.Errorf("/etc/passwd lacks root or istio-proxy (1337):\n%s", p)
	}
	if g := string(files["etc/group"].body); !strings.Contains(g, "\nistio-proxy:x:1337:") {
		t.Errorf("/etc/group lacks istio-proxy (1337):\n%s", g)
	}
	for n, f := range files {
		if !f.header.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s dated %v, want the Unix epoch", n, f.header.ModTime)
		}
	}

	// The binary must be a static linux/amd64 executable, and run.
	bin := filepath.Join(t.TempDir(), "pilot")
	if err := os.WriteFile(bin, files["usr/local/bin/pilot"].body, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkStatic(bin, "amd64"); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Fatalf("cannot run a linux/amd64 binary on %s/%s: the image test needs a linux/amd64 machine", runtime.GOOS, runtime.GOARCH)
	}
	out, err := exec.CommandContext(t.Context(), bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("pilot --help: %v\n%s", err, out)
	}
	for _, want := range []string{"Usage:", "pilot [flags]", "--config-dir"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("pilot --help lacks %q:\n%s", want, out)
		}
	}
}

// The other two images, as the Makefile lists them: the injector runs as 1337 like pilot, the
// capture init as root (it needs NET_ADMIN); both binaries are present and run.
func TestInjectorAndCaptureImages(t *testing.T) {
	o := testOptions(t)
	for _, c := range []struct{ arg, image, binary, user, usage string }{
		{"sidecar-injector=github.com/skiffmesh/skiff/cmd/sidecar-injector", "sidecar-injector", "sidecar-injector", "1337:1337", "--default-revision"},
		{"capture=github.com/skiffmesh/skiff/cmd/skiff-capture:0:0", "capture", "skiff-capture", "0:0", "-exclude-inbound-ports"},
	} {
		r := build(t, o, c.arg)
		img, files := readImage(t, r.path, "skiff/"+c.image+":test")
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatalf("%s config: %v", c.image, err)
		}
		if want := []string{"/usr/local/bin/" + c.binary}; !slices.Equal(cf.Config.Entrypoint, want) || cf.Config.User != c.user {
			t.Errorf("%s: entrypoint %q user %q, want %q as %s", c.image, cf.Config.Entrypoint, cf.Config.User, want, c.user)
		}
		checkFile(t, files, "usr/local/bin/"+c.binary, tar.TypeReg, 0o755, 0, 0)
		bin := filepath.Join(t.TempDir(), c.binary)
		if err := os.WriteFile(bin, files["usr/local/bin/"+c.binary].body, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := checkStatic(bin, "amd64"); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(t.Context(), bin, "--help").CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte(c.usage)) {
			t.Errorf("%s --help: %v, want usage mentioning %s:\n%s", c.binary, err, c.usage, out)
		}
	}
}

// TestReproducible builds the same image twice, from go build on, and expects the same bytes;
// a different SOURCE_DATE_EPOCH must change the image. It packages a tiny program, running as
// root as the capture image does.
func TestReproducible(t *testing.T) {
	const arg = "hello=./testdata/hello:0:0"
	o1, o2 := testOptions(t), testOptions(t)
	r1, r2 := build(t, o1, arg), build(t, o2, arg)
	if r1.digest != r2.digest {
		t.Errorf("two builds gave digests %s and %s", r1.digest, r2.digest)
	}
	if h1, h2 := fileHash(t, r1.path), fileHash(t, r2.path); h1 != h2 {
		t.Errorf("two builds gave tarballs %x and %x", h1, h2)
	}

	img, files := readImage(t, r1.path, "skiff/hello:test")
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "0:0" || !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/hello"}) {
		t.Errorf("user %q entrypoint %q, want 0:0 and [/usr/local/bin/hello]", cf.Config.User, cf.Config.Entrypoint)
	}
	checkFile(t, files, "usr/local/bin/hello", tar.TypeReg, 0o755, 0, 0)
	checkFile(t, files, "var/lib/skiff/", tar.TypeDir, 0o755, 0, 0)

	o3 := testOptions(t)
	o3.created = time.Unix(1_700_000_000, 0).UTC()
	r3 := build(t, o3, arg)
	if r3.digest == r1.digest {
		t.Errorf("another epoch gave the same digest %s", r3.digest)
	}
	img3, _ := readImage(t, r3.path, "skiff/hello:test")
	cf3, err := img3.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf3.Created.Equal(o3.created) {
		t.Errorf("created %v, want %v", cf3.Created, o3.created)
	}
}

func fileHash(t *testing.T, path string) [sha256.Size]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want imageSpec
		err  bool
	}{
		{arg: "pilot=./cmd/pilot", want: imageSpec{name: "pilot", pkg: "./cmd/pilot", binary: "pilot", user: "1337:1337", uid: 1337, gid: 1337}},
		{arg: "capture=./cmd/skiff-capture:0:0", want: imageSpec{name: "capture", pkg: "./cmd/skiff-capture", binary: "skiff-capture", user: "0:0"}},
		{arg: "x=github.com/a/b/cmd/x/:65532", want: imageSpec{name: "x", pkg: "github.com/a/b/cmd/x/", binary: "x", user: "65532", uid: 65532, gid: 65532}},
		{arg: "pilot", err: true},
		{arg: "=./cmd/pilot", err: true},
		{arg: "pilot=", err: true},
		{arg: "a/b=./cmd/pilot", err: true},
		{arg: "Pilot=./cmd/pilot", err: true},
		{arg: "pilot=./cmd/pilot:istio-proxy", err: true},
		{arg: "pilot=./cmd/pilot:1337:x", err: true},
		{arg: "pilot=.:0", err: true},
	} {
		got, err := parseSpec(tc.arg)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseSpec(%q) = %+v, %v; want %+v, error %v", tc.arg, got, err, tc.want, tc.err)
		}
	}
}

// TestDockerfiles keeps deploy/docker/Dockerfile.IMAGE consistent with the images `make images`
// builds: same package, binary path, user and working directory.
func TestDockerfiles(t *testing.T) {
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	args := regexp.MustCompile(`(?m)[a-z0-9-]+=\./cmd/[a-z0-9-]+(?::[0-9:]+)?`).FindAllString(string(makefile), -1)
	if len(args) != 3 {
		t.Fatalf("found %d IMAGE=PACKAGE arguments in the Makefile (%q), want 3", len(args), args)
	}
	for _, arg := range args {
		s, err := parseSpec(arg)
		if err != nil {
			t.Fatal(err)
		}
		path := "../../deploy/docker/Dockerfile." + s.name
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("image %s: %v", s.name, err)
			continue
		}
		dockerfile := string(b)
		for _, want := range []string{
			"FROM scratch",
			"-o /out/" + s.binary + " " + s.pkg + "\n",
			"/out/" + s.binary + " /usr/local/bin/" + s.binary + "\n",
			"\nUSER " + s.user + "\n",
			"\nWORKDIR " + workDir + "\n",
			"\nENV " + pathEnv + "\n",
			`ENTRYPOINT ["/usr/local/bin/` + s.binary + `"]`,
			labelTitle + "=" + s.name,
		} {
			if !strings.Contains(dockerfile, want) {
				t.Errorf("%s lacks %q", path, want)
			}
		}
	}
}
