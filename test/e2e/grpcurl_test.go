package e2e

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// grpcurl runs `go tool grpcurl` (pinned in go.mod) against pilot's plaintext port.
func grpcurl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"tool", "grpcurl", "-plaintext", "-max-time", "20"}, args...)...)
	cmd.Dir = framework.RepoRoot(t)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestGrpcurl: reflection lists the ADS service, and the README's one-shot call, which
// half-closes the stream right after its request, prints the clusters every time.
func TestGrpcurl(t *testing.T) {
	up := framework.StartUpstream(t, "127.0.0.10", "reviews")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", serviceEntry("reviews", framework.FreePort(t, "127.0.0.1"), endpoint{upstream: up}))

	out, err := grpcurl(t, p.XDSAddress, "list")
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, out)
	}
	for _, svc := range []string{"envoy.service.discovery.v3.AggregatedDiscoveryService", "grpc.health.v1.Health"} {
		if !strings.Contains(out, svc) {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, out)
		}
	}

	request := `{"node":{"id":"` + sidecarNode("productpage-1") + `"},"type_url":"type.googleapis.com/envoy.config.cluster.v3.Cluster"}`
	const method = "envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	for try := 1; try <= 5; try++ {
		out, err := grpcurl(t, "-d", request, p.XDSAddress, method)
		if err != nil {
			t.Fatalf("try %d: one-shot call failed: %v\n%s", try, err, out)
		}
		// Reflection resolves the Any payloads, so the clusters print as JSON with Istio's names.
		if !strings.Contains(out, `"name": "outbound|`) || !strings.Contains(out, "reviews.default.svc.cluster.local") {
			t.Fatalf("try %d: one-shot call printed no clusters:\n%s", try, out)
		}
	}

	// A malformed node ID is a clear error, not a hang or an empty answer.
	bad := `{"node":{"id":"sidecar~not-an-ip~x.default~default.svc.cluster.local"},"type_url":"type.googleapis.com/envoy.config.cluster.v3.Cluster"}`
	out, err = grpcurl(t, "-d", bad, p.XDSAddress, method)
	if err == nil || !strings.Contains(out, "InvalidArgument") || !strings.Contains(out, "not-an-ip") {
		t.Errorf("malformed node ID: want InvalidArgument naming the bad IP, got %v:\n%s", err, out)
	}
}
