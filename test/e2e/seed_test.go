package e2e

import (
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestSeedMesh serves the tutorial's traffic YAML exactly as examples/temple-stack holds it
// (the Gateway, the temple-ui VirtualService, the canary and retry VirtualServices, the
// circuit-breaker DestinationRule) with the objects it refers to, and checks on real Envoys
// that the mesh works: the gateway routes to temple-ui, the canary header always reaches v2,
// the rest splits 90/10, and the circuit breaker's limits are in Envoy. Only port numbers are
// swapped for free ones so the test does not need port 80.
func TestSeedMesh(t *testing.T) {
	dir := filepath.Join(framework.RepoRoot(t), "examples", "temple-stack")
	seed, err := os.ReadFile(filepath.Join(dir, "seed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	services, err := os.ReadFile(filepath.Join(dir, "services.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ui := framework.StartUpstream(t, "127.0.0.1", "temple-ui")
	v1 := framework.StartUpstream(t, "127.0.0.1", "temple-api-v1")
	v2 := framework.StartUpstream(t, "127.0.0.1", "temple-api-v2")
	gatewayPort := framework.FreePort(t, "127.0.0.1")
	servicePort := framework.FreePort(t, "127.0.0.1")

	// The Gateway's server port comes first in seed.yaml; every other port 80 is a service port.
	seedYAML := strings.Replace(string(seed), "number: 80", fmt.Sprintf("number: %d", gatewayPort), 1)
	seedYAML = strings.ReplaceAll(seedYAML, "number: 80", fmt.Sprintf("number: %d", servicePort))
	servicesYAML := strings.ReplaceAll(string(services), "number: 80", fmt.Sprintf("number: %d", servicePort))
	for old, up := range map[string]*framework.Upstream{"8011": ui, "8012": v1, "8013": v2} {
		servicesYAML = strings.ReplaceAll(servicesYAML, ": "+old+"\n", fmt.Sprintf(": %d\n", up.Port))
	}

	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "services.yaml", servicesYAML)
	p.WriteConfig(t, "seed.yaml", seedYAML)
	framework.Eventually(t, func() error {
		_, body := p.Get(t, "/debug/config_errors")
		if !strings.Contains(string(body), `"errors": []`) {
			return fmt.Errorf("the tutorial's YAML is rejected: %s", body)
		}
		// Its canary and retry VirtualServices both claim temple-api-service for sidecars:
		// only one applies, and pilot says so as istioctl analyze would (IST0109).
		if !strings.Contains(string(body), `"code": "IST0109"`) || !strings.Contains(string(body), "temple-api-retry") {
			return fmt.Errorf("no IST0109 warning for the conflicting VirtualServices: %s", body)
		}
		return nil
	})

	// The ingress gateway: any Host, any path, to temple-ui.
	framework.StartEnvoy(t, p, framework.EnvoyOptions{
		NodeID:        "router~127.0.0.1~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
		BootstrapArgs: []string{"--labels", "istio=ingressgateway"},
	})
	for _, target := range []struct{ host, path string }{{"temple-ui.local", "/"}, {"anything.example.com", "/some/page"}} {
		framework.Eventually(t, func() error {
			resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", gatewayPort, target.path), target.host, nil)
			if err != nil {
				return err
			}
			if resp.Body != "temple-ui" {
				return fmt.Errorf("gateway %s%s answered %d %q", target.host, target.path, resp.Status, resp.Body)
			}
			return nil
		})
	}

	// A sidecar in the canary's namespace.
	client := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("temple-client-1")})
	url := fmt.Sprintf("http://127.0.0.1:%d/", servicePort)
	framework.Eventually(t, func() error {
		_, err := get(servicePort, "temple-api-service")
		return err
	})
	for range 100 {
		resp, err := framework.Send(http.MethodGet, url, "temple-api-service", map[string]string{"canary": "true"})
		if err != nil || resp.Body != "temple-api-v2" {
			t.Fatalf("canary: true must always reach v2: %v, %v", resp, err)
		}
	}
	const n = 2000
	got, err := count(servicePort, "temple-api-service", n)
	if err != nil {
		t.Fatal(err)
	}
	// 90% of 2,000 has a standard deviation of 0.67 points; ±3 is four and a half of them.
	if share := 100 * float64(got["temple-api-v1"]) / n; math.Abs(share-90) > 3 {
		t.Errorf("v1 got %.1f%% of %d requests (%v), want 90±3", share, n, got)
	}

	dump := string(client.ConfigDump(t))
	for _, want := range []string{`"max_connections": 100`, `"max_pending_requests": 50`, `"max_requests_per_connection": 2`, `"consecutive_5xx": 5`, `"max_ejection_percent": 50`} {
		if !strings.Contains(dump, want) {
			t.Errorf("the circuit breaker's %s is not in Envoy's config", want)
		}
	}
}
