package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestSidecarEgressScopeShrinksCDS: a Sidecar that imports one host leaves the proxy only that
// host's clusters (and the fixed ones), while a proxy it does not select keeps all of them.
func TestSidecarEgressScopeShrinksCDS(t *testing.T) {
	reviews := framework.StartUpstream(t, "127.0.4.1", "reviews")
	ratings := framework.StartUpstream(t, "127.0.4.2", "ratings")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", serviceEntry("reviews", port, endpoint{upstream: reviews})+"---\n"+
		serviceEntry("ratings", port, endpoint{upstream: ratings}))
	p.WriteConfig(t, "sidecar.yaml", `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: productpage
  namespace: default
spec:
  workloadSelector:
    labels:
      app: productpage
  egress:
  - hosts:
    - "./reviews.default.svc.cluster.local"
`)
	scoped := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("productpage-1"), BootstrapArgs: []string{"--labels", "app=productpage"}})
	other := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: "sidecar~127.0.4.9~details-1.default~default.svc.cluster.local",
		BootstrapArgs: []string{"--labels", "app=details"}, Interception: "redirect"})

	// reviews, PassthroughCluster, BlackHoleCluster for the scoped proxy; ratings too for the
	// other, and InboundPassthroughCluster, since it is captured (virtualInbound).
	scoped.WaitStat(t, "cluster_manager.active_clusters", func(v uint64) bool { return v == 3+1 }) // +1: xds-grpc
	other.WaitStat(t, "cluster_manager.active_clusters", func(v uint64) bool { return v == 5+1 })
	if dump := string(scoped.ConfigDump(t)); strings.Contains(dump, "ratings.default.svc.cluster.local") {
		t.Errorf("the scoped proxy still has ratings' configuration")
	}
	eventuallyAnswers(t, port, "reviews", "reviews")
}

// TestSidecarIngressAndRegistryOnly: without capture, a Sidecar ingress listener on the
// proxy's IP forwards to the application's defaultEndpoint through inbound|PORT||, and under
// REGISTRY_ONLY a request for a host the mesh does not know gets 502 instead of passing through.
func TestSidecarIngressAndRegistryOnly(t *testing.T) {
	app := framework.StartUpstream(t, "127.0.4.3", "app")
	reviews := framework.StartUpstream(t, "127.0.4.4", "reviews")
	inPort := framework.FreePort(t, "127.0.4.5")
	outPort := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", serviceEntry("reviews", outPort, endpoint{upstream: reviews}))
	p.WriteConfig(t, "sidecar.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: default
spec:
  ingress:
  - port:
      number: %d
      protocol: HTTP
      name: http
    defaultEndpoint: %s
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
`, inPort, app.Address()))
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: "sidecar~127.0.4.5~app-1.default~default.svc.cluster.local"})

	framework.Eventually(t, func() error {
		resp, err := framework.Send("GET", fmt.Sprintf("http://127.0.4.5:%d/", inPort), "app.default", nil)
		if err != nil {
			return err
		}
		if resp.Body != "app" {
			return fmt.Errorf("inbound answered %d %q", resp.Status, resp.Body)
		}
		return nil
	})
	envoy.WaitStat(t, fmt.Sprintf("cluster.inbound|%d||.upstream_rq_total", inPort), atLeast(1))

	eventuallyAnswers(t, outPort, "reviews", "reviews")
	resp, err := framework.Send("GET", fmt.Sprintf("http://127.0.0.1:%d/", outPort), "unknown.example.com", nil)
	if err != nil || resp.Status != 502 {
		t.Errorf("REGISTRY_ONLY: unknown host answered %v, %v; want 502", resp, err)
	}
}
