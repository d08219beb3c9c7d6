// Package skiffctl tests the skiffctl command against a real pilot and real Envoys: each test
// runs the built binary as a user would and checks what it prints and its exit code against
// what Envoy holds (its admin /config_dump). The Kubernetes port-forward path is tested in
// test/kubemesh, against a real API server.
package skiffctl

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// binary is the skiffctl under test: $SKIFFCTL, or ./cmd/skiffctl built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	binary = os.Getenv("SKIFFCTL")
	if binary == "" {
		dir, err := os.MkdirTemp("", "skiffctl-test-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		root, err := framework.FindRepoRoot()
		if err != nil {
			return 0, err
		}
		binary = filepath.Join(dir, "skiffctl")
		build := exec.Command("go", "build", "-o", binary, "./cmd/skiffctl")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("building skiffctl: %v\n%s", err, out)
		}
	}
	code := m.Run()
	checked, rejecting := framework.SuiteRejections()
	fmt.Printf("zero-NACK check: %d Envoys checked, %d rejected an xDS update\n", checked, rejecting)
	if rejecting > 0 && code == 0 {
		code = 1
	}
	return code, nil
}

// result is one skiffctl run.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// skiffctl runs the binary with args and returns what it printed and its exit code.
func skiffctl(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running skiffctl %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustSkiffctl runs skiffctl and requires exit code 0.
func mustSkiffctl(t *testing.T, args ...string) string {
	t.Helper()
	r := skiffctl(t, args...)
	if r.code != 0 {
		t.Fatalf("skiffctl %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}
