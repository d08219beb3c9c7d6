package skiffctl

import (
	"fmt"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// The test mesh lives on 127.0.77.0/24: namespace shop, a workload api-1 (WorkloadEntry at
// 127.0.77.1 with service account api, so its sidecar is granted a certificate) whose sidecar
// the tests run, and a reviews service with two versions.
const (
	apiIP   = "127.0.77.1"
	apiNode = "sidecar~" + apiIP + "~api-1.shop~shop.svc.cluster.local"
	apiPod  = "api-1.shop"
	// reviewsPort is where the sidecar's outbound listener for reviews binds (apiIP:9080).
	reviewsPort = 9080
)

// reviews is the reviews service: a ServiceEntry with one endpoint per upstream (v1 first),
// labelled by version and declaring a sidecar (security.istio.io/tlsMode: istio is left out,
// so the upstreams are called in plaintext).
func reviews(v1, v2 *framework.Upstream) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: %d, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: %s, ports: {http: %d}, labels: {version: v1}}
  - {address: %s, ports: {http: %d}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`, reviewsPort, v1.IP, v1.Port, v2.IP, v2.Port)
}

// reviewsRoute is a VirtualService sending every reviews request to subset.
func reviewsRoute(subset string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews.shop.svc.cluster.local, subset: %s}
`, subset)
}

// workloads are api-1's WorkloadEntry, the Sidecar that scopes shop (an ingress listener on
// apiIP:8080, whose mTLS makes the sidecar ask for its certificate; an egress listener on
// apiIP:9080 for the namespace's services), and an ingress gateway
// workload in istio-system (never connected: describe computes what would apply to it).
const workloads = `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: api-1, namespace: shop}
spec: {address: ` + apiIP + `, serviceAccount: api, labels: {app: api}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  ingress:
  - port: {number: 8080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:18080
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: ` + apiIP + `
    hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress-1, namespace: istio-system}
spec: {address: 127.0.77.9, serviceAccount: ingress, labels: {istio: ingressgateway}}
`

// policies are what describe must find for api-1: PeerAuthentications at namespace and
// workload level (STRICT wins for api), an ALLOW and a DENY AuthorizationPolicy selecting it
// and one that does not, and a Gateway with a VirtualService bound to it.
const policies = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: shop-wide, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: api-strict, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-allow-get, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-deny-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-workload, namespace: shop}
spec:
  selector: {matchLabels: {app: other}}
  rules: [{}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["shop/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop-front, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  gateways: [istio-system/shop-gateway]
  http:
  - route:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v2}
`

// shop is a pilot serving the test mesh with api-1's sidecar connected (state of the world,
// or delta), and the reviews upstreams.
type shop struct {
	pilot  *framework.Pilot
	envoy  *framework.Envoy
	v1, v2 *framework.Upstream
}

func startShop(t *testing.T, delta bool, extra ...string) *shop {
	t.Helper()
	s := &shop{v1: framework.StartUpstream(t, "127.0.77.11", "reviews-v1"), v2: framework.StartUpstream(t, "127.0.77.12", "reviews-v2")}
	dir := t.TempDir()
	framework.WriteFile(t, dir, "reviews.yaml", reviews(s.v1, s.v2))
	framework.WriteFile(t, dir, "route.yaml", reviewsRoute("v1"))
	framework.WriteFile(t, dir, "workloads.yaml", workloads)
	for i, doc := range extra {
		framework.WriteFile(t, dir, fmt.Sprintf("extra-%d.yaml", i), doc)
	}
	s.pilot = framework.StartPilot(t, framework.PilotOptions{ConfigDir: dir})
	s.envoy = framework.StartEnvoy(t, s.pilot, framework.EnvoyOptions{NodeID: apiNode, Delta: delta})
	return s
}

// ctl runs skiffctl against the shop's pilot.
func (s *shop) ctl(t *testing.T, args ...string) result {
	t.Helper()
	return skiffctl(t, append([]string{"--pilot", s.pilot.MonitoringAddress}, args...)...)
}

func (s *shop) mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	return mustSkiffctl(t, append([]string{"--pilot", s.pilot.MonitoringAddress}, args...)...)
}
