package translate_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// replicaMesh is a Service with three ready Pods: two replicas of reviews v1 and one v2, plus a
// VirtualService, an AuthorizationPolicy and a Sidecar that select by labels.
const replicaMesh = `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  ports:
  - {name: http, port: 9080, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-x1
  namespace: shop
  labels: {kubernetes.io/service-name: reviews}
addressType: IPv4
endpoints:
- addresses: [10.244.0.5]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: reviews-v1-a, namespace: shop}
- addresses: [10.244.0.6]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: reviews-v1-b, namespace: shop}
- addresses: [10.244.0.7]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: reviews-v2-a, namespace: shop}
ports:
- {name: http, port: 8080}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-a, namespace: shop, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: reviews}]}
status: {podIP: 10.244.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-b, namespace: shop, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: reviews}]}
status: {podIP: 10.244.0.6}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2-a, namespace: shop, labels: {app: reviews, version: v2}}
spec: {containers: [{name: app, image: reviews}]}
status: {podIP: 10.244.0.7}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: v2-only-get, namespace: shop}
spec:
  selector: {matchLabels: {version: v2}}
  rules:
  - to: [{operation: {methods: [GET]}}]
`

func loadYAML(t *testing.T, yaml string) *model.Snapshot {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadCase(t, path)
}

func podProxy(t *testing.T, pod, ip string) *model.Proxy {
	t.Helper()
	p, err := model.ParseNodeID("sidecar~" + ip + "~" + pod + ".shop~shop.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Replicas of one Deployment share a configuration class and get identical configuration; a Pod
// with other labels, or one relabelled, belongs to another.
func TestConfigKeySharesReplicas(t *testing.T) {
	snap := loadYAML(t, replicaMesh)
	a, b := podProxy(t, "reviews-v1-a", "10.244.0.5"), podProxy(t, "reviews-v1-b", "10.244.0.6")
	v2 := podProxy(t, "reviews-v2-a", "10.244.0.7")

	keyA, keyB, keyV2 := translate.ConfigKey(snap, a), translate.ConfigKey(snap, b), translate.ConfigKey(snap, v2)
	if keyA != keyB {
		t.Errorf("replicas have keys %q and %q, want one", keyA, keyB)
	}
	if keyA == keyV2 {
		t.Errorf("v1 and v2 share key %q", keyA)
	}
	if !strings.Contains(keyA, "/ports=8080h") {
		t.Errorf("key %q lacks the workload's inbound port", keyA)
	}
	sameConfig(t, snap, a, b)

	// The AuthorizationPolicy selects v2 only, so v2's RBAC rules differ: sharing v1's would be wrong.
	if equalConfig(snap, a, v2) {
		t.Errorf("v1 and v2 translate alike; the test mesh does not tell them apart")
	}

	// Relabel reviews-v1-b as v2: it moves to v2's class, and gets v2's configuration.
	relabelled := loadYAML(t, strings.Replace(replicaMesh,
		"metadata: {name: reviews-v1-b, namespace: shop, labels: {app: reviews, version: v1}}",
		"metadata: {name: reviews-v1-b, namespace: shop, labels: {app: reviews, version: v2}}", 1))
	if got := translate.ConfigKey(relabelled, b); got != translate.ConfigKey(relabelled, v2) {
		t.Errorf("relabelled Pod has key %q, want v2's %q", got, translate.ConfigKey(relabelled, v2))
	}
	sameConfig(t, relabelled, b, v2)
}

// The application probes are in the key, and nothing of the Pod but them: replicas with equal
// probes (their JSON in any order) share a configuration although the health listener
// forwards to each one's own address; other probes, or none, make other configurations.
func TestConfigKeyAppProbes(t *testing.T) {
	const ready = `"/app-health/app/readyz":{"httpGet":{"path":"/ready","port":8080},"timeoutSeconds":1}`
	const live = `"/app-health/app/livez":{"tcpSocket":{"port":8080},"timeoutSeconds":1}`
	withProbes := func(pod, probers string) string {
		return "metadata: {name: " + pod + ", namespace: shop, labels: {app: reviews, version: v1}}\n" +
			"spec: {containers: [{name: app, image: reviews}, {name: istio-proxy, image: envoy, env: [{name: ISTIO_KUBE_APP_PROBERS, value: '" + probers + "'}]}]}"
	}
	mesh := strings.NewReplacer(
		"metadata: {name: reviews-v1-a, namespace: shop, labels: {app: reviews, version: v1}}\nspec: {containers: [{name: app, image: reviews}]}",
		withProbes("reviews-v1-a", "{"+ready+","+live+"}"),
		"metadata: {name: reviews-v1-b, namespace: shop, labels: {app: reviews, version: v1}}\nspec: {containers: [{name: app, image: reviews}]}",
		withProbes("reviews-v1-b", "{"+live+","+ready+"}"),
	).Replace(replicaMesh)
	snap := loadYAML(t, mesh)
	a, b := podProxy(t, "reviews-v1-a", "10.244.0.5"), podProxy(t, "reviews-v1-b", "10.244.0.6")
	keyA, keyB := translate.ConfigKey(snap, a), translate.ConfigKey(snap, b)
	if keyA != keyB || !strings.Contains(keyA, "/probes=") {
		t.Errorf("replicas with equal probes have keys %q and %q, want one with the probes", keyA, keyB)
	}
	if translate.TrafficConfigKey(snap, a) != translate.TrafficConfigKey(snap, b) {
		t.Error("replicas with equal probes have different traffic keys")
	}
	sameConfig(t, snap, a, b)
	var health bool
	for _, l := range translate.ForProxy(snap, a).Listeners {
		health = health || l.GetName() == translate.AppHealthListener
	}
	if !health {
		t.Fatalf("no %s listener for a Pod with probes", translate.AppHealthListener)
	}

	other := loadYAML(t, strings.Replace(mesh, `"port":8080},"timeoutSeconds":1},"/app-health/app/livez"`, `"port":8081},"timeoutSeconds":1},"/app-health/app/livez"`, 1))
	if translate.ConfigKey(other, a) == keyA || translate.TrafficConfigKey(other, a) == translate.TrafficConfigKey(snap, a) {
		t.Error("a Pod whose probe moved to another port kept its keys")
	}
	plain := loadYAML(t, replicaMesh)
	if k := translate.ConfigKey(plain, a); k == keyA || strings.Contains(k, "/probes=") {
		t.Errorf("a Pod without probes has key %q", k)
	}
	// Without capture nothing answers on 15020 (its port would clash between proxies on a
	// laptop): no probes in the key, no listener.
	a.InterceptionMode = model.InterceptionNone
	if k := translate.ConfigKey(snap, a); strings.Contains(k, "/probes=") {
		t.Errorf("uncaptured proxy's key %q has the probes", k)
	}
	for _, l := range translate.ForProxy(snap, a).Listeners {
		if l.GetName() == translate.AppHealthListener {
			t.Errorf("uncaptured proxy gets %s", l.GetName())
		}
	}
}

// Workloads told apart only by an AuthorizationPolicy share a traffic key, and so their
// clusters, routes and secrets; a Sidecar selecting by the same label separates them again.
func TestTrafficConfigKeyLeavesOutPolicyLabels(t *testing.T) {
	snap := loadYAML(t, replicaMesh)
	v1, v2 := podProxy(t, "reviews-v1-a", "10.244.0.5"), podProxy(t, "reviews-v2-a", "10.244.0.7")
	if translate.ConfigKey(snap, v1) == translate.ConfigKey(snap, v2) {
		t.Fatal("the policy's label is missing from the full keys")
	}
	if k1, k2 := translate.TrafficConfigKey(snap, v1), translate.TrafficConfigKey(snap, v2); k1 != k2 {
		t.Errorf("traffic keys %q and %q differ, though only an AuthorizationPolicy tells them apart", k1, k2)
	}
	r1, r2 := translate.ForProxy(snap, v1), translate.ForProxy(snap, v2)
	if !equalMessages(messages(r1.Clusters), messages(r2.Clusters)) || !equalMessages(messages(r1.Routes), messages(r2.Routes)) {
		t.Error("equal traffic keys, yet clusters or routes differ")
	}
	withSidecar := loadYAML(t, replicaMesh+`---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: v2, namespace: shop}
spec:
  workloadSelector: {labels: {version: v2}}
  egress: [{hosts: ["./*"]}]
`)
	if translate.TrafficConfigKey(withSidecar, v1) == translate.TrafficConfigKey(withSidecar, v2) {
		t.Error("a Sidecar selects by version, yet v1 and v2 share a traffic key")
	}
}

// Workloads told apart only by an AuthorizationPolicy share their clusters and routes, but not
// their listeners: the policy's TCP rules mark v2's TCP chains (authz_ecds.go), so that a rule
// change drains TCP connections accepted under the old rules. Its HTTP chains are unmarked:
// their connections follow the rules (ExtensionConfigs) from the next request on.
func TestTCPChainsMarkedWithTheirRules(t *testing.T) {
	snap := loadYAML(t, replicaMesh)
	v1, v2 := podProxy(t, "reviews-v1-a", "10.244.0.5"), podProxy(t, "reviews-v2-a", "10.244.0.7")
	if translate.ConfigKey(snap, v1) == translate.ConfigKey(snap, v2) {
		t.Error("an AuthorizationPolicy selects by version, yet v1 and v2 share a key")
	}
	if translate.TrafficConfigKey(snap, v1) != translate.TrafficConfigKey(snap, v2) {
		t.Error("an AuthorizationPolicy separates traffic keys")
	}
	r1, r2 := translate.ForProxy(snap, v1), translate.ForProxy(snap, v2)
	if equalMessages(messages(r1.ExtensionConfigs), messages(r2.ExtensionConfigs)) {
		t.Error("v2's policy is not in its RBAC rules")
	}
	marks := func(listeners []*listenerv3.Listener) (tcp, http int) {
		for _, l := range listeners {
			for _, c := range l.GetFilterChains() {
				if c.GetMetadata().GetFilterMetadata()["skiff.rbac"] == nil {
					continue
				}
				if strings.HasPrefix(c.GetFilters()[0].GetName(), "inbound.rbac.tcp.") {
					tcp++
				} else {
					http++
				}
			}
		}
		return tcp, http
	}
	if tcp, http := marks(r1.Listeners); tcp+http != 0 {
		t.Errorf("v1, which no policy selects, has %d marked chains", tcp+http)
	}
	if tcp, http := marks(r2.Listeners); tcp == 0 || http != 0 {
		t.Errorf("v2 has %d marked TCP chains and %d marked others; want some TCP and no other", tcp, http)
	}
}

// Without capture the proxy's IP is bound by Sidecar ingress listeners, so it is part of the key;
// a gateway's key has no inbound ports.
func TestConfigKeyInputs(t *testing.T) {
	snap := loadYAML(t, replicaMesh)
	a, b := podProxy(t, "reviews-v1-a", "10.244.0.5"), podProxy(t, "reviews-v1-b", "10.244.0.6")
	a.InterceptionMode, b.InterceptionMode = model.InterceptionNone, model.InterceptionNone
	if translate.ConfigKey(snap, a) == translate.ConfigKey(snap, b) {
		t.Errorf("proxies without capture on different IPs share key %q", translate.ConfigKey(snap, a))
	}
	// A port whose protocol nothing declares is sniffed inbound: another listener.
	sniffed := loadYAML(t, strings.Replace(replicaMesh, "{name: http, port: 9080, targetPort: 8080}", "{name: web, port: 9080, targetPort: 8080}", 1))
	c := podProxy(t, "reviews-v1-a", "10.244.0.5")
	if key := translate.ConfigKey(sniffed, c); !strings.Contains(key, "/ports=8080s") || key == translate.ConfigKey(snap, c) {
		t.Errorf("key of a workload with a sniffed port: %q", key)
	}
	gw, err := model.ParseNodeID("router~10.244.0.9~ingress-1.shop~shop.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	if key := translate.ConfigKey(snap, gw); strings.Contains(key, "ports=") || !strings.HasPrefix(key, "router/shop/") {
		t.Errorf("gateway key %q", key)
	}
}

// Gateway proxies that can hold their workload certificate serve ISTIO_MUTUAL servers, and
// others do not: the two never share a configuration.
func TestConfigKeyGatewayIdentity(t *testing.T) {
	snap := loadYAML(t, `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress-1, namespace: istio-system}
spec: {address: 10.0.0.9, serviceAccount: ingress, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mesh, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
`)
	node := func(name string) *model.Proxy {
		p, err := model.ParseNodeID("router~10.0.0.9~" + name + ".istio-system~istio-system.svc.cluster.local")
		if err != nil {
			t.Fatal(err)
		}
		p.Labels = map[string]string{"istio": "ingressgateway"}
		return p
	}
	known, unknown := node("ingress-1"), node("ingress-2")
	if translate.ConfigKey(snap, known) == translate.ConfigKey(snap, unknown) {
		t.Errorf("gateways with and without an identity share key %q", translate.ConfigKey(snap, known))
	}
	if translate.TrafficConfigKey(snap, known) == translate.TrafficConfigKey(snap, unknown) {
		t.Errorf("gateways with and without an identity share traffic key %q", translate.TrafficConfigKey(snap, known))
	}
	if got := len(translate.ForProxy(snap, known).Listeners); got != 1 {
		t.Errorf("the gateway with an identity has %d listeners, want the ISTIO_MUTUAL server's", got)
	}
	if got := len(translate.ForProxy(snap, unknown).Listeners); got != 0 {
		t.Errorf("the gateway without an identity has %d listeners, want none: it could never get the certificate", got)
	}
}

// Only label keys that some selector names are part of the key: Deployments that no selector
// tells apart share one configuration, and a label value cannot pass for another label.
func TestConfigKeyLabels(t *testing.T) {
	snap := loadYAML(t, replicaMesh) // selects by version only
	x, y := podProxy(t, "x", "10.0.0.1"), podProxy(t, "y", "10.0.0.2")
	x.Labels = map[string]string{"app": "ratings", "version": "v1"}
	y.Labels = map[string]string{"app": "details", "version": "v1"}
	if kx, ky := translate.ConfigKey(snap, x), translate.ConfigKey(snap, y); kx != ky || strings.Contains(kx, "app") {
		t.Errorf("keys %q and %q: want one, without the label no selector names", kx, ky)
	}
	sameConfig(t, snap, x, y)

	bySidecar := loadYAML(t, replicaMesh+`---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings, namespace: shop}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress: [{hosts: [./nothing.shop.svc.cluster.local]}]
`)
	if translate.ConfigKey(bySidecar, x) == translate.ConfigKey(bySidecar, y) {
		t.Errorf("a Sidecar selects by app, yet ratings and details share key %q", translate.ConfigKey(bySidecar, x))
	}
	if equalConfig(bySidecar, x, y) {
		t.Errorf("the Sidecar changes nothing for ratings; the test does not tell them apart")
	}

	quoted := loadYAML(t, replicaMesh+`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ab, namespace: shop}
spec:
  selector: {matchLabels: {a: "1", b: "2"}}
  action: DENY
  rules: [{to: [{operation: {methods: [POST]}}]}]
`)
	x.Labels = map[string]string{"a": `1"/"b"="2`}
	y.Labels = map[string]string{"a": "1", "b": "2"}
	if translate.ConfigKey(quoted, x) == translate.ConfigKey(quoted, y) {
		t.Errorf("different labels share key %q", translate.ConfigKey(quoted, x))
	}
}

func sameConfig(t *testing.T, snap *model.Snapshot, p, q *model.Proxy) {
	t.Helper()
	if !equalConfig(snap, p, q) {
		t.Errorf("%s and %s share a key but translate differently", p.NodeID, q.NodeID)
	}
}

func equalConfig(snap *model.Snapshot, p, q *model.Proxy) bool {
	rp, rq := translate.ForProxy(snap, p), translate.ForProxy(snap, q)
	return equalMessages(messages(rp.Listeners), messages(rq.Listeners)) && equalMessages(messages(rp.Routes), messages(rq.Routes)) &&
		equalMessages(messages(rp.Clusters), messages(rq.Clusters)) && equalMessages(messages(rp.ExtensionConfigs), messages(rq.ExtensionConfigs))
}

func equalMessages(a, b []proto.Message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// identityMesh is folder mode: a server whose WorkloadEntry declares a sidecar (tlsMode istio),
// and two client WorkloadEntries, one with a service account and one without. No
// PeerAuthentication anywhere.
const identityMesh = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-1, namespace: default}
spec:
  address: 10.0.0.2
  serviceAccount: server
  labels: {app: server, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-1, namespace: default}
spec: {address: 10.0.0.3, serviceAccount: client, labels: {app: client}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: anonymous-1, namespace: default}
spec: {address: 10.0.0.4, labels: {app: client}}
`

// Whether a proxy may hold a workload certificate is an input of translation (without one it
// gets no default PERMISSIVE chains and no auto-mTLS), so proxies that differ only in it never
// share a key; proxies alike in it (no WorkloadEntry, or one without a service account) do.
func TestConfigKeyIdentity(t *testing.T) {
	snap := loadYAML(t, identityMesh)
	proxy := func(name, ip string) *model.Proxy {
		p, err := model.ParseNodeID("sidecar~" + ip + "~" + name + ".default~default.svc.cluster.local")
		if err != nil {
			t.Fatal(err)
		}
		p.Labels = map[string]string{"app": "client"}
		return p
	}
	withSA, withoutSA, unknown := proxy("client-1", "10.0.0.3"), proxy("anonymous-1", "10.0.0.4"), proxy("stranger-1", "10.0.0.5")
	if !snap.MayHoldIdentity(withSA) || snap.MayHoldIdentity(withoutSA) || snap.MayHoldIdentity(unknown) {
		t.Fatalf("MayHoldIdentity: %v, %v, %v; want true, false, false",
			snap.MayHoldIdentity(withSA), snap.MayHoldIdentity(withoutSA), snap.MayHoldIdentity(unknown))
	}
	if got := snap.MissingIdentity(withoutSA); !strings.Contains(got, "WorkloadEntry default/anonymous-1 names no serviceAccount") {
		t.Errorf("MissingIdentity of the entry without a service account: %q", got)
	}
	if got := snap.MissingIdentity(unknown); !strings.Contains(got, "no Pod or WorkloadEntry named stranger-1 in namespace default") {
		t.Errorf("MissingIdentity of the unknown proxy: %q", got)
	}

	if translate.ConfigKey(snap, withSA) == translate.ConfigKey(snap, withoutSA) ||
		translate.TrafficConfigKey(snap, withSA) == translate.TrafficConfigKey(snap, withoutSA) {
		t.Errorf("a proxy with an identity and one without share key %q", translate.ConfigKey(snap, withSA))
	}
	if equalConfig(snap, withSA, withoutSA) {
		t.Error("with and without an identity translate alike; the mesh does not tell them apart")
	}
	if kw, ku := translate.ConfigKey(snap, withoutSA), translate.ConfigKey(snap, unknown); kw != ku {
		t.Errorf("two proxies without an identity have keys %q and %q, want one", kw, ku)
	}
	sameConfig(t, snap, withoutSA, unknown)

	// What tells them apart: auto-mTLS to the server, and virtualInbound's PERMISSIVE chains.
	for _, c := range []struct {
		proxy *model.Proxy
		mtls  bool
	}{{withSA, true}, {withoutSA, false}} {
		res := translate.ForProxy(snap, c.proxy)
		var autoMTLS, inspected bool
		for _, cl := range res.Clusters {
			if cl.Name == "outbound|80||server.default.svc.cluster.local" {
				autoMTLS = len(cl.TransportSocketMatches) > 0
			}
		}
		for _, l := range res.Listeners {
			if l.Name == "virtualInbound" {
				for _, f := range l.ListenerFilters {
					inspected = inspected || f.Name == "envoy.filters.listener.tls_inspector"
				}
			}
		}
		if autoMTLS != c.mtls || inspected != c.mtls {
			t.Errorf("%s: auto-mTLS %v, tls_inspector on virtualInbound %v; want %v", c.proxy.Name, autoMTLS, inspected, c.mtls)
		}
	}
}
