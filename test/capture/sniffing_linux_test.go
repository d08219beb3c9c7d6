package capture

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// sniffedMesh declares the pod's app behind a port named `web` with no protocol: pilot sniffs
// it, inbound too. The workload names no service account, so its chains are plaintext.
var sniffedMesh = fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: app
  namespace: default
spec:
  hosts:
  - app.default.svc.cluster.local
  ports:
  - number: %[1]d
    name: web
  resolution: STATIC
  workloadSelector:
    labels:
      app: app
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: app-1
  namespace: default
spec:
  address: %[2]s
  labels:
    app: app
`, appPort, podAddr.Addr())

// TestCaptureSniffedInbound: the node calls the pod's sniffed port. Captured into
// virtualInbound, an HTTP request takes the port's HTTP chain (http_inspector found HTTP/1.1)
// and a raw TCP client the port's TCP chain, both reaching the app on that one port.
func TestCaptureSniffedInbound(t *testing.T) {
	node := framework.NewNetNS(t, "skf-snode")
	pod := framework.NewNetNS(t, "skf-spod")
	framework.ConnectVeth(t, node, "veth-pod", nodeAddr, pod, "eth0", podAddr)
	pod.IP(t, "route", "add", "default", "via", nodeAddr.Addr().String())

	configDir := t.TempDir()
	framework.WriteFile(t, configDir, "mesh.yaml", sniffedMesh)
	pilot := framework.StartPilot(t, framework.PilotOptions{ConfigDir: configDir})
	xdsOnNode := forwardFromNode(t, node, 15010, pilot.XDSAddress)
	framework.ServeSniffable(t, pod.Listen(t, fmt.Sprintf("0.0.0.0:%d", appPort)), "app")

	capture := framework.BuildBinary(t, "./cmd/skiff-capture")
	mustExec(t, pod, capture)
	envoy := framework.StartEnvoyInNetNS(t, pilot, pod, framework.NetNSEnvoyOptions{
		NodeID:       fmt.Sprintf("sidecar~%s~app-1.default~default.svc.cluster.local", podAddr.Addr()),
		XDSAddress:   xdsOnNode,
		Interception: "redirect",
		UID:          proxyID,
		GID:          proxyID,
	})
	framework.Eventually(t, func() error {
		if dump := string(envoy.ConfigDump(t)); !strings.Contains(dump, `"name": "`+appCluster+`-raw_buffer-http"`) {
			return fmt.Errorf("virtualInbound has no sniffed HTTP chain for %s yet", appCluster)
		}
		return nil
	})

	target := net.JoinHostPort(podAddr.Addr().String(), fmt.Sprint(appPort))
	framework.Eventually(t, func() error {
		resp, err := node.HTTPClient().Get("http://" + target + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("x-upstream") != "app" {
			return fmt.Errorf("HTTP to the sniffed port: %d from %q", resp.StatusCode, resp.Header.Get("x-upstream"))
		}
		return nil
	})
	envoy.WaitStat(t, "http.inbound_"+appCluster+".downstream_rq_total", atLeast(1))

	framework.Eventually(t, func() error {
		c, err := node.DialContext(context.Background(), "tcp", target)
		if err != nil {
			return err
		}
		got, err := framework.SayHelo(c)
		if err != nil {
			return err
		}
		if got != "app-tcp" {
			return fmt.Errorf("raw TCP to the sniffed port answered %q, want app-tcp", got)
		}
		return nil
	})
	envoy.WaitStat(t, "tcp."+appCluster+".downstream_cx_total", atLeast(1))
	envoy.AssertNoRejections(t)
}
