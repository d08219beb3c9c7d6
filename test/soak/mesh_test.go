package soak

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// The soak's addresses, on loopback and apart from every other test package's.
const (
	clientIP  = "127.0.21.1"
	namespace = "soak"
	host      = "server." + namespace + ".svc.cluster.local"
)

// server is one server workload: its sidecar's address and ingress port, and its app.
type server struct {
	name    string // a, b, c
	ip      string
	inPort  int
	appAddr string
}

// mesh is the folder-mode mesh the soak edits: a client and three server workloads with
// sidecars, mTLS everywhere (certificates from pilot's CA over SDS).
type mesh struct {
	svcPort int // the client's egress listener, on clientIP
	servers []server
}

// staticConfig is what never changes: the workloads (their identities) and their Sidecars.
func (m *mesh) staticConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-1, namespace: %[1]s}
spec:
  address: %[2]s
  serviceAccount: client
  labels: {app: client}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: %[1]s}
spec:
  workloadSelector: {labels: {app: client}}
  egress:
  - port: {number: %[3]d, protocol: HTTP, name: http}
    bind: %[2]s
    hosts: ["./*"]
`, namespace, clientIP, m.svcPort)
	for _, s := range m.servers {
		fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-%[2]s, namespace: %[1]s}
spec:
  address: %[3]s
  serviceAccount: server
  labels: {app: server, instance: %[2]s}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: server-%[2]s, namespace: %[1]s}
spec:
  workloadSelector: {labels: {instance: %[2]s}}
  ingress:
  - port: {number: %[4]d, protocol: HTTP, name: http}
    bind: %[3]s
    defaultEndpoint: %[5]s
  egress:
  - hosts: ["istio-system/*"]
`, namespace, s.name, s.ip, s.inPort, s.appAddr)
	}
	return b.String()
}

// An edit rewrites one file of the mesh. Every version of every file keeps the traffic's
// requests answered 200: each subset keeps at least one endpoint, every policy allows the
// client's GETs, every connection pool is large enough for the load.
type edit struct {
	file, what, content string
}

// editKinds are the kinds of edits, made in turn.
var editKinds = []func(m *mesh, r *rand.Rand) edit{
	(*mesh).weightsEdit,
	(*mesh).endpointsEdit,
	(*mesh).destinationRuleEdit,
	(*mesh).policyEdit,
}

// weightsEdit splits the VirtualService's traffic between v1 and v2 anew.
func (m *mesh) weightsEdit(r *rand.Rand) edit {
	v1 := []int{0, 10, 25, 50, 75, 90, 100}[r.IntN(7)]
	return edit{"virtualservice.yaml", fmt.Sprintf("weights v1=%d v2=%d", v1, 100-v1), fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: server, namespace: %s}
spec:
  hosts: [%s]
  http:
  - route:
    - destination: {host: %[2]s, subset: v1}
      weight: %d
    - destination: {host: %[2]s, subset: v2}
      weight: %d
`, namespace, host, v1, 100-v1)}
}

// endpointsEdit changes the service's endpoints: server a is always v1 and c always v2, b is
// v1, v2 or gone, and each has a load-balancing weight.
func (m *mesh) endpointsEdit(r *rand.Rand) edit {
	versions := map[string]string{"a": "v1", "b": []string{"v1", "v2", ""}[r.IntN(3)], "c": "v2"}
	var eps strings.Builder
	var what []string
	for _, s := range m.servers {
		v := versions[s.name]
		if v == "" {
			continue
		}
		w := 1 + r.IntN(3)
		what = append(what, fmt.Sprintf("%s=%s/%d", s.name, v, w))
		fmt.Fprintf(&eps, "  - {address: %s, ports: {http: %d}, serviceAccount: server, weight: %d, labels: {app: server, version: %s, security.istio.io/tlsMode: istio}}\n",
			s.ip, s.inPort, w, v)
	}
	return edit{"serviceentry.yaml", "endpoints " + strings.Join(what, " "), fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: %s}
spec:
  hosts: [%s]
  location: MESH_INTERNAL
  ports:
  - {number: %d, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
%s`, namespace, host, m.svcPort, eps.String())}
}

// destinationRuleEdit changes the subsets' traffic policy: load balancer, connection pool
// (including a new connection per request, so handshakes go on all the time), outlier
// detection, and explicit ISTIO_MUTUAL or auto mTLS.
func (m *mesh) destinationRuleEdit(r *rand.Rand) edit {
	lb := []string{"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"}[r.IntN(3)]
	perConn := []int{1, 10, 100}[r.IntN(3)]
	tls := []string{"", "    tls: {mode: ISTIO_MUTUAL}\n"}[r.IntN(2)]
	outlier := []string{"", "    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}\n"}[r.IntN(2)]
	what := fmt.Sprintf("destination rule lb=%s maxRequestsPerConnection=%d istioMutual=%t outlier=%t", lb, perConn, tls != "", outlier != "")
	return edit{"destinationrule.yaml", what, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: server, namespace: %s}
spec:
  host: %s
  trafficPolicy:
    loadBalancer: {simple: %s}
    connectionPool:
      tcp: {maxConnections: 1000}
      http: {http1MaxPendingRequests: 1000, maxRequestsPerConnection: %d}
%s%s  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`, namespace, host, lb, perConn, tls, outlier)}
}

// policyEdit changes the servers' PeerAuthentication (STRICT or PERMISSIVE) and
// AuthorizationPolicies: always an ALLOW policy that matches the client's requests (by
// principal, namespace, method and path, in turn), sometimes a DENY for a path it never asks.
func (m *mesh) policyEdit(r *rand.Rand) edit {
	mode := []string{"STRICT", "PERMISSIVE"}[r.IntN(2)]
	rules := []string{
		"  - from: [{source: {principals: [cluster.local/ns/soak/sa/client]}}]\n",
		"  - from: [{source: {namespaces: [soak]}}]\n",
		"  - to: [{operation: {methods: [GET], paths: [/soak/*]}}]\n",
		"  - from: [{source: {principals: [cluster.local/ns/soak/sa/client]}}]\n    to: [{operation: {methods: [GET, HEAD]}}]\n",
	}
	rule := r.IntN(len(rules))
	deny := r.IntN(2) == 0
	content := fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: server, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: server}}
  mtls: {mode: %[2]s}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-allow, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
%[3]s`, namespace, mode, rules[rule])
	if deny {
		content += fmt.Sprintf(`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-deny, namespace: %s}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/never-asked]}}]
`, namespace)
	}
	return edit{"policy.yaml", fmt.Sprintf("policy mtls=%s allow-rule=%d deny=%t", mode, rule, deny), content}
}
