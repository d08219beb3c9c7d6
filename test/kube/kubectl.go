package kube

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// Kubectl runs the built kubectl with the admin kubeconfig, from the
// repository root (so "-f deploy/..." and "-k deploy/crds" work as in a
// terminal there), and returns its stdout. A non-zero exit is returned as an
// error that carries kubectl's stderr, for the test to check or report; it
// does not fail the test by itself.
func (c *Cluster) Kubectl(tb testing.TB, args ...string) (stdout string, err error) {
	tb.Helper()
	return c.KubectlWithInput(tb, "", args...)
}

// KubectlWithInput is Kubectl with stdin, for "-f -".
func (c *Cluster) KubectlWithInput(tb testing.TB, stdin string, args ...string) (stdout string, err error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), framework.Patience) // a hung kubectl fails the test
	defer cancel()
	// The discovery cache goes in the cluster's folder, not ~/.kube, and
	// KUBECONFIG is ignored in favour of the flag.
	full := append([]string{"--kubeconfig=" + c.adminKube, "--cache-dir=" + filepath.Join(c.dir, "kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), full...)
	cmd.Dir = c.root
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}
