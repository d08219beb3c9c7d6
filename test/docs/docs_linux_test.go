package docs

import (
	"os"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// The fixed ports the documents use (pilot's, the Envoys' admin and listeners, the example
// upstreams'); the test fails at once, naming them, when one is taken.
var (
	readmePorts    = []int{15010, 15012, 15014, 15000, 15001, 15002, 15100, 9080, 80, 8000, 8080, 8001, 8002, 8003, 8011, 8012, 8013, 4317, 4318, 9411, 13133, 16685, 16686}
	noClusterPorts = []int{15010, 15012, 15014, 15000, 15001, 15100, 80, 8011, 8012, 8013, 8080}
	xdsByHandPorts = []int{15010, 15012, 15014}
)

// TestReadmeTour runs the README's five-minute tour, the tutorial's mesh and the tracing example
// after it, as a reader pastes them.
func TestReadmeTour(t *testing.T) {
	root := prepare(t)
	blocks, err := ParseFile(root, "README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err = InSections(blocks, "A five-minute tour", "The tutorial's mesh: gateway, canary, retries, circuit breaker",
		"Tracing and access logs")
	if err != nil {
		t.Fatal(err)
	}
	RequirePortsFree(t, readmePorts...)
	NewSession(t, root).Run(blocks)
}

// TestNoClusterWalkthrough runs docs/no-cluster.md from top to bottom.
func TestNoClusterWalkthrough(t *testing.T) {
	root := prepare(t)
	blocks, err := ParseFile(root, "docs/no-cluster.md")
	if err != nil {
		t.Fatal(err)
	}
	RequirePortsFree(t, noClusterPorts...)
	// The folder the walkthrough's mesh is served from, as the document names it.
	t.Cleanup(func() { _ = os.RemoveAll("/tmp/skiff-mesh") })
	NewSession(t, root).Run(blocks)
}

// TestXDSByHand runs docs/xds-by-hand.md from top to bottom: grpcurl against pilot serving
// examples/ (list, describe, one-shot state of the world and delta requests, an ACK and a NACK
// typed on a stream of its own), checking the lines the page points at.
func TestXDSByHand(t *testing.T) {
	root := prepare(t)
	blocks, err := ParseFile(root, "docs/xds-by-hand.md")
	if err != nil {
		t.Fatal(err)
	}
	RequirePortsFree(t, xdsByHandPorts...)
	// Where the page keeps the responses it reads fields from.
	t.Cleanup(func() { _ = os.RemoveAll("/tmp/xds") })
	NewSession(t, root).Run(blocks)
}

// prepare checks that the docs can run here and warms the Go build cache with what their
// first commands build, so that those fit in the docs' waits (framework.Patience). It returns
// the repository's root.
func prepare(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the docs start Envoys that listen on port 80: run this test as root (as `make test` is run)")
	}
	root := framework.RepoRoot(t)
	Prepare(t, root, "go", "build", "./cmd/...", "./examples/...")
	Prepare(t, root, "go", "tool", "grpcurl", "-version")
	Prepare(t, root, "make", "envoy")
	return root
}
