package capture

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// vmMesh declares the pod's application the way a VM or any hand-started workload is often
// declared: as an inline endpoint of a ServiceEntry, at the pod's address, with no WorkloadEntry
// (or Pod) that a node ID could name.
var vmMesh = fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy
  namespace: default
spec:
  hosts:
  - legacy.default.svc.cluster.local
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: %s
    ports:
      http: %d
`, podAddr.Addr(), appPort)

// TestCaptureInboundByAddress: a captured Envoy whose node ID names no workload, at an address
// a ServiceEntry lists as an endpoint, serves that endpoint's port as istiod would (it finds a
// proxy's services by its IP): virtualInbound gets a chain for the app's port and an
// `inbound|PORT||` cluster, and a call from the node to the pod's address on that port reaches
// the app through them, from Envoy on localhost.
func TestCaptureInboundByAddress(t *testing.T) {
	node := framework.NewNetNS(t, "skf-node")
	pod := framework.NewNetNS(t, "skf-pod")
	framework.ConnectVeth(t, node, "veth-pod", nodeAddr, pod, "eth0", podAddr)
	pod.IP(t, "route", "add", "default", "via", nodeAddr.Addr().String())

	configDir := t.TempDir()
	framework.WriteFile(t, configDir, "mesh.yaml", vmMesh)
	pilot := framework.StartPilot(t, framework.PilotOptions{ConfigDir: configDir})
	xdsOnNode := forwardFromNode(t, node, 15010, pilot.XDSAddress)
	app := startApp(t, pod)

	capture := framework.BuildBinary(t, "./cmd/skiff-capture")
	mustExec(t, pod, capture)
	envoy := framework.StartEnvoyInNetNS(t, pilot, pod, framework.NetNSEnvoyOptions{
		NodeID:       fmt.Sprintf("sidecar~%s~vm-1.default~default.svc.cluster.local", podAddr.Addr()),
		XDSAddress:   xdsOnNode,
		Interception: "redirect",
		UID:          proxyID,
		GID:          proxyID,
	})
	framework.Eventually(t, func() error {
		dump := string(envoy.ConfigDump(t))
		for _, want := range []string{inboundListener, appCluster} {
			if !strings.Contains(dump, `"name": "`+want+`"`) {
				return fmt.Errorf("Envoy's config_dump lacks %s", want)
			}
		}
		return nil
	})

	inbound := fmt.Sprintf("http://%s/hello", net.JoinHostPort(podAddr.Addr().String(), fmt.Sprint(appPort)))
	if got := mustGet(t, node.HTTPClient(), inbound); got != "app" {
		t.Errorf("app answered %q", got)
	}
	if from := app.lastFrom(); from != "127.0.0.1" {
		t.Errorf("the app saw the node's call come from %s, want 127.0.0.1 (Envoy's inbound cluster)", from)
	}
	envoy.WaitStat(t, "listener."+listenerStat(t, envoy, inboundListener, "0.0.0.0_15006")+".downstream_cx_total", atLeast(1))
	envoy.WaitStat(t, "cluster."+appCluster+".upstream_rq_total", atLeast(1))
	if n := envoy.Stat(t, "cluster.InboundPassthroughCluster.upstream_cx_total"); n != 0 {
		t.Errorf("%d connections passed through instead of going to %s", n, appCluster)
	}
}
