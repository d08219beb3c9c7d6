package framework

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// RepoRoot returns the directory holding go.mod, found by walking up from the
// working directory (go test runs each package in its own directory).
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	root, err := FindRepoRoot()
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	return root
}

// FindRepoRoot is RepoRoot for code that has no test to fail, such as a TestMain.
func FindRepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod in %s or any parent directory", wd)
		}
	}
}

// EnvoyBinary returns the Envoy to test against: $ENVOY, else the repository's
// .bin/envoy. A missing Envoy fails the test rather than skipping it: a skipped
// end-to-end suite looks green while testing nothing.
func EnvoyBinary(tb testing.TB) string {
	tb.Helper()
	path, from := os.Getenv("ENVOY"), "$ENVOY"
	if path == "" {
		path, from = filepath.Join(RepoRoot(tb), ".bin", "envoy"), "the default path ($ENVOY is unset)"
	}
	if err := checkExecutable(path); err != nil {
		tb.Fatalf("framework: no Envoy at %s, %s: %v; run `make envoy` to install it", path, from, err)
	}
	return path
}

// PilotBinary returns the pilot to test: $PILOT, else ./cmd/pilot built once
// per test process.
func PilotBinary(tb testing.TB) string {
	tb.Helper()
	if path := os.Getenv("PILOT"); path != "" {
		if err := checkExecutable(path); err != nil {
			tb.Fatalf("framework: $PILOT=%s: %v", path, err)
		}
		return path
	}
	pilotBuild.once.Do(func() {
		pilotBuild.path, pilotBuild.err = buildPilot()
	})
	if pilotBuild.err != nil {
		tb.Fatalf("framework: %v", pilotBuild.err)
	}
	return pilotBuild.path
}

var pilotBuild struct {
	once sync.Once
	path string
	err  error
}

// buildPilot builds ./cmd/pilot to RepoRoot/bin/pilot-test (bin/ is ignored by
// git). Every test package is its own process, and `go test ./...` runs
// several at once, so each builds into a private directory and renames the
// result into place: a rename never disturbs a process already running the
// previous file (writing over it would fail with "text file busy"), and every
// build is of the same source, so whichever lands last is as good as any.
func buildPilot() (string, error) {
	root, err := FindRepoRoot()
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(root, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("building the pilot: %w", err)
	}
	tmp, err := os.MkdirTemp(binDir, ".pilot-build-")
	if err != nil {
		return "", fmt.Errorf("building the pilot: %w", err)
	}
	defer os.RemoveAll(tmp)
	built := filepath.Join(tmp, "pilot")
	if err := goBuild(root, built, "./cmd/pilot"); err != nil {
		return "", err
	}
	final := filepath.Join(binDir, "pilot-test")
	if err := os.Rename(built, final); err != nil {
		return "", fmt.Errorf("building the pilot: %w", err)
	}
	return final, nil
}

// goBuild runs `go build -o out pkg` in dir. It has no deadline of its own: a
// cold build on a busy 2-core machine takes minutes, and go test's -timeout
// bounds one that hangs.
func goBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("`go build -o %s %s` in %s failed: %v\n%s", out, pkg, dir, err, output)
	}
	return nil
}

func checkExecutable(path string) error {
	info, err := os.Stat(path) // follows the .bin/envoy symlink
	if err != nil {
		return err
	}
	if info.IsDir() {
		return fmt.Errorf("is a directory")
	}
	if info.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("is not executable")
	}
	return nil
}
