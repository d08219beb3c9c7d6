package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestInboundCapturedSidecar: a captured sidecar whose node ID names a WorkloadEntry gets
// virtualInbound (15006) next to virtualOutbound (15001), with an `inbound|PORT||` cluster per
// port its services send to it (HTTP 9080, and TCP 3306 whose targetPort is 3307) and
// InboundPassthroughCluster; Envoy accepts all of it. Without iptables the original
// destination of a connection to 127.0.0.1:15006 is 15006 itself, which the blackhole chain
// closes. Both listeners bind wildcard ports, so no other captured Envoy may run meanwhile (no
// t.Parallel).
func TestInboundCapturedSidecar(t *testing.T) {
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "workload.yaml", `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts:
  - reviews.default.svc.cluster.local
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  - number: 3306
    name: tcp
    protocol: TCP
    targetPort: 3307
  resolution: STATIC
  workloadSelector:
    labels:
      app: reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1
  namespace: default
spec:
  address: 127.0.9.1
  labels:
    app: reviews
`)
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{
		NodeID:       "sidecar~127.0.9.1~reviews-v1.default~default.svc.cluster.local",
		Interception: "redirect",
	})

	framework.Eventually(t, func() error {
		dump := string(envoy.ConfigDump(t))
		for _, want := range []string{`"name": "virtualInbound"`, `"name": "virtualOutbound"`,
			`"name": "inbound|9080||"`, `"name": "inbound|3307||"`, `"name": "InboundPassthroughCluster"`} {
			if !strings.Contains(dump, want) {
				return fmt.Errorf("config_dump lacks %s", want)
			}
		}
		return nil
	})
	envoy.AssertNoRejections(t)

	connectionToItselfDropped(t, envoy, "virtualInbound", 15006)
}
