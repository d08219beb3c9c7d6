package kubemesh

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffmesh/skiff/test/framework"
)

// Where pilot behaves as istiod by default (issue 12), in Kubernetes mode: default PERMISSIVE
// mTLS and auto-mTLS for Pods, protocol sniffing of Service ports that name no protocol, and the
// services of a proxy found by its IP. Folder mode has the same behaviour under test in
// test/e2e and test/capture; these tests check that what the API server holds (Pods,
// Services, EndpointSlices) leads there.

// noIdentityWarning starts the line pilot logs for a proxy that can never hold a workload
// certificate (pkg/xds/identity.go).
const noIdentityWarning = "proxy can never hold a workload certificate"

// TestKubernetesDefaultPermissiveMTLS: with no PeerAuthentication anywhere, a Pod's captured
// sidecar gets istiod's PERMISSIVE inbound chains for the Pod's port (tls_inspector, an mTLS
// chain and a plaintext one), and a client sidecar's cluster of a Service whose Pods carry
// security.istio.io/tlsMode: istio uses auto-mTLS, verifying the server Pod's identity; a
// Service whose Pods do not carry the label stays plaintext. The server Pod names no
// ServiceAccount: in Kubernetes every Pod has an identity ("default"), so pilot translates both
// proxies with default mTLS and warns about neither.
//
// This asserts on what the Envoys hold, not on traffic over mTLS. Pilot grants a workload
// certificate only to a stream from the Pod's IP, and the pod networks here reach pilot, on the
// root namespace's loopback, through a forwarder (newPodNetwork): pilot sees every stream come
// from 127.0.0.1 and refuses the certificate (address mismatch). So the mTLS chains and
// clusters wait for a secret that never comes, as Envoy's warming listeners and clusters, until
// Envoy's initial fetch timeout: both states are accepted below. Traffic over default mTLS is
// tested where proxies reach pilot from their own addresses: test/e2e TestMTLSDefaultPermissive
// and TestSniffedPortOverMTLS, and in Kubernetes mode by TestKubernetesPilotReplicaKilled,
// whose pilots run in a network namespace of their own (framework.StartPilotInNetNS); this test
// could move there too.
func TestKubernetesDefaultPermissiveMTLS(t *testing.T) {
	ns := newNamespace(t, "mtlsdefault")
	pilot := startPilot(t)
	const serverPort = 8080 // the Pods' port, as their EndpointSlices give it
	createService(t, ns, "ratings", 9080, "http")
	server := createPod(t, ns, "ratings-1", "10.253.5.11", "", map[string]string{
		"app": "ratings", "security.istio.io/tlsMode": "istio"})
	createSlice(t, ns, "ratings", server.Name, "http", fmt.Sprintf("%s:%d", server.Status.PodIP, serverPort))
	createService(t, ns, "details", 9080, "http")
	createPod(t, ns, "details-1", "10.253.5.21", "details", map[string]string{"app": "details"})
	createSlice(t, ns, "details", "details-1", "http", fmt.Sprintf("10.253.5.21:%d", serverPort))
	client := createPod(t, ns, "client-1", "10.253.5.1", "client", map[string]string{"app": "client"})
	// As the injector's Pods do, the sidecars connect once pilot knows their Pods: one that came
	// first would be served, and warned about, as a proxy without an identity until then.
	pilotHolds(t, pilot, "Pod", ns, server.Name)
	pilotHolds(t, pilot, "Pod", ns, client.Name)

	// A pod network each: two sidecars cannot share one network namespace's ports.
	serverNet, clientNet := newPodNetwork(t, pilot), newPodNetwork(t, pilot)
	serverEnvoy := framework.StartEnvoyInNetNS(t, pilot, serverNet.ns, framework.NetNSEnvoyOptions{
		NodeID: nodeID(server), XDSAddress: serverNet.xds, Interception: "redirect",
	})
	clientEnvoy := clientNet.startEnvoy(t, pilot, nodeID(client))

	// The server: virtualInbound splits the Pod's port by transport protocol.
	framework.Eventually(t, func() error {
		l, err := dumpedListener(t, serverEnvoy, "virtualInbound")
		if err != nil {
			return err
		}
		if !l.hasListenerFilter("envoy.filters.listener.tls_inspector") {
			return fmt.Errorf("virtualInbound has no tls_inspector (listener filters %v): not PERMISSIVE", l.listenerFilterNames())
		}
		var tlsChain, plainChain *envoyFilterChain
		for i, c := range l.FilterChains {
			if c.Match.DestinationPort != serverPort {
				continue
			}
			switch c.Match.TransportProtocol {
			case "tls":
				tlsChain = &l.FilterChains[i]
			case "raw_buffer":
				plainChain = &l.FilterChains[i]
			}
		}
		if tlsChain == nil || plainChain == nil {
			return fmt.Errorf("virtualInbound's chains for port %d are %v; want an mTLS (tls) and a plaintext (raw_buffer) one",
				serverPort, l.chainsFor(serverPort))
		}
		if err := tlsChain.requiresMeshClientCertificate(); err != nil {
			return fmt.Errorf("virtualInbound chain %s: %w", tlsChain.Name, err)
		}
		if plainChain.TransportSocket != nil {
			return fmt.Errorf("virtualInbound chain %s, plaintext, has transport socket %s", plainChain.Name, plainChain.TransportSocket.Name)
		}
		return nil
	})

	// The client: auto-mTLS to ratings (its Pod is labelled tlsMode istio and no policy says
	// otherwise), to the server Pod's identity, the defaulted ServiceAccount; none to details.
	ratings := "outbound|9080||ratings." + ns + ".svc.cluster.local"
	details := "outbound|9080||details." + ns + ".svc.cluster.local"
	serverID := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/default", ns)
	framework.Eventually(t, func() error {
		clusters, err := dumpedClusters(t, clientEnvoy)
		if err != nil {
			return err
		}
		c, ok := clusters[ratings]
		if !ok {
			return fmt.Errorf("the client has no cluster %s", ratings)
		}
		var istio, disabled bool
		for _, m := range c.TransportSocketMatches {
			switch {
			case m.Match["tlsMode"] == "istio":
				socket := string(m.TransportSocket)
				if !strings.Contains(socket, "UpstreamTlsContext") || !strings.Contains(socket, `"`+serverID+`"`) {
					return fmt.Errorf("cluster %s: transport socket match %s is not mTLS verifying %s: %s", ratings, m.Name, serverID, socket)
				}
				istio = true
			case len(m.Match) == 0:
				disabled = true
			}
		}
		if !istio || !disabled {
			return fmt.Errorf("cluster %s has transport socket matches %v; want tlsMode istio (mTLS) and a plaintext fallback",
				ratings, c.matchNames())
		}
		if d, ok := clusters[details]; !ok || len(d.TransportSocketMatches) != 0 {
			return fmt.Errorf("cluster %s (present: %t) has transport socket matches %v; its Pod declares no sidecar, want none",
				details, ok, d.matchNames())
		}
		// The endpoint carries the Pod's label that selects the mTLS socket.
		endpoints, err := dumpedEndpoints(t, clientEnvoy)
		if err != nil {
			return err
		}
		if got := endpoints[ratings][server.Status.PodIP]["envoy.transport_socket_match"]["tlsMode"]; got != "istio" {
			return fmt.Errorf("the endpoint %s of %s has transport socket match metadata tlsMode %v, want istio (endpoints: %v)",
				server.Status.PodIP, ratings, got, endpoints[ratings])
		}
		return nil
	})

	for _, node := range []string{nodeID(server), nodeID(client)} {
		for _, line := range strings.Split(pilot.Log(), "\n") {
			if strings.Contains(line, noIdentityWarning) && strings.Contains(line, node) {
				t.Errorf("pilot says a Pod's proxy cannot hold a certificate: %s", line)
			}
		}
	}
	serverEnvoy.AssertNoRejections(t)
	clientEnvoy.AssertNoRejections(t)
}

// TestKubernetesProtocolSniffing: a Service port named `web`, without appProtocol, says nothing
// of its protocol, so a client sidecar sniffs it: its listener has http_inspector, HTTP chains
// for http/1.1 and h2c on the port's route configuration, and a TCP chain. The VirtualService's
// http routes are in that route configuration and apply (by header to subset v2, the rest to
// v1, a response header set by the routes) to HTTP/1.1 and to HTTP/2 prior knowledge, while a
// client speaking neither reaches the Service through the TCP chain.
func TestKubernetesProtocolSniffing(t *testing.T) {
	ns := newNamespace(t, "sniffing")
	pilot := startPilot(t)
	pods := newPodNetwork(t, pilot)
	const port = 9090
	createService(t, ns, "web", port, "web")
	for i, v := range []string{"v1", "v2"} {
		ip := fmt.Sprintf("10.253.6.1%d", i+1)
		pods.addIP(t, ip)
		l := pods.ns.Listen(t, ip+":0")
		framework.ServeSniffable(t, l, "web-"+v)
		pod := "web-" + v + "-1"
		createPod(t, ns, pod, ip, "web", map[string]string{"app": "web", "version": v})
		createSlice(t, ns, "web", pod, "web", l.Addr().String())
	}
	apply(t, versionSubsets(ns, "web")+fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: %[1]s}
spec:
  hosts: [web]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    headers: {response: {set: {x-skiff-vs: web}}}
    route:
    - destination: {host: web, subset: v2}
  - headers: {response: {set: {x-skiff-vs: web}}}
    route:
    - destination: {host: web, subset: v1}
`, ns))
	client := createPod(t, ns, "client-1", "10.253.6.1", "client", map[string]string{"app": "client"})
	envoy := pods.startEnvoy(t, pilot, nodeID(client))

	host := "web." + ns + ".svc.cluster.local"
	routeConfig := fmt.Sprint(port) // the shared listener's: the client is not captured
	framework.Eventually(t, func() error {
		l, err := dumpedListener(t, envoy, fmt.Sprintf("127.0.0.1_%d", port))
		if err != nil {
			return err
		}
		if !l.hasListenerFilter("envoy.filters.listener.http_inspector") {
			return fmt.Errorf("listener %s has no http_inspector (listener filters %v)", l.Name, l.listenerFilterNames())
		}
		httpChains := map[string]bool{}
		tcp := false
		for _, c := range l.FilterChains {
			switch {
			case c.hasFilter("envoy.filters.network.http_connection_manager"):
				if len(c.Match.ApplicationProtocols) != 1 {
					return fmt.Errorf("HTTP chain %s matches application protocols %v; want one", c.Name, c.Match.ApplicationProtocols)
				}
				if rds := c.routeConfigName(); rds != routeConfig {
					return fmt.Errorf("HTTP chain %s routes by %q, want route configuration %q", c.Name, rds, routeConfig)
				}
				httpChains[c.Match.ApplicationProtocols[0]] = true
			case c.hasFilter("envoy.filters.network.tcp_proxy") && len(c.Match.ApplicationProtocols) == 0:
				tcp = true
			}
		}
		if !httpChains["http/1.1"] || !httpChains["h2c"] || !tcp {
			return fmt.Errorf("listener %s has HTTP chains for %v and a TCP chain: %t; want http/1.1, h2c and TCP", l.Name, httpChains, tcp)
		}
		routes, err := dumpedRouteConfigs(t, envoy)
		if err != nil {
			return err
		}
		rc, ok := routes[routeConfig]
		if !ok {
			return fmt.Errorf("Envoy has no route configuration %s", routeConfig)
		}
		if want := "outbound|9090|v2|" + host; !rc.routesHeaderTo(host, "end-user", "jason", want) {
			return fmt.Errorf("route configuration %s has no route of %s for end-user: jason to %s", routeConfig, host, want)
		}
		return nil
	})

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	h1 := pods.ns.HTTPClient()
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Timeout: framework.RequestTimeout, Transport: &http.Transport{
		DialContext: pods.ns.DialContext, Protocols: &protocols, DisableKeepAlives: true}}
	routed := func(c *http.Client, headers map[string]string, wantUpstream, wantProto string) {
		t.Helper()
		framework.Eventually(t, func() error {
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			req.Host = host
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			got := fmt.Sprintf("%d from %s over %s, x-skiff-vs %q", resp.StatusCode, resp.Header.Get("x-upstream"),
				resp.Header.Get("x-proto"), resp.Header.Get("x-skiff-vs"))
			if want := fmt.Sprintf("200 from %s over %s, x-skiff-vs %q", wantUpstream, wantProto, "web"); got != want {
				return fmt.Errorf("GET %s with %v: %s; want %s", url, headers, got, want)
			}
			return nil
		})
	}
	routed(h1, nil, "web-v1", "HTTP/1.1")
	routed(h1, map[string]string{"end-user": "jason"}, "web-v2", "HTTP/1.1")
	routed(h2c, map[string]string{"end-user": "jason"}, "web-v2", "HTTP/2.0")
	framework.Eventually(t, func() error {
		c, err := pods.ns.DialContext(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		got, err := framework.SayHelo(c)
		if err != nil {
			return err
		}
		if got != "web-v1-tcp" && got != "web-v2-tcp" {
			return fmt.Errorf("a raw TCP client of the sniffed port got %q; want web-v1-tcp or web-v2-tcp", got)
		}
		return nil
	})
	// Each kind of traffic took the chain meant for it.
	atLeast := func(n uint64) func(uint64) bool { return func(v uint64) bool { return v >= n } }
	envoy.WaitStat(t, fmt.Sprintf("http.outbound_127.0.0.1_%d.downstream_rq_total", port), atLeast(3))
	envoy.WaitStat(t, fmt.Sprintf("tcp.outbound|%d||%s.downstream_cx_total", port, host), atLeast(1))
	envoy.AssertNoRejections(t)
}

// TestKubernetesInboundByAddress: a captured Envoy whose node ID names no Pod (a VM, or an Envoy
// started by hand), at an address that an EndpointSlice of a Service in its namespace lists,
// serves that endpoint's port as istiod's service targets would: an `inbound|PORT||` cluster
// and a virtualInbound chain for it, plaintext (pilot knows the proxy can never hold a
// certificate, and says so). The EndpointSlice arrives after the Envoy, and goes again: what
// the proxy serves follows endpoint changes. A Service of another namespace listing the same
// address adds nothing.
func TestKubernetesInboundByAddress(t *testing.T) {
	ns := newNamespace(t, "byaddress")
	other := newNamespace(t, "byaddress-other")
	pilot := startPilot(t)
	pods := newPodNetwork(t, pilot)
	const vmIP = "10.253.7.20"
	const ownPort, otherPort = 8080, 8081
	ownCluster, otherCluster := fmt.Sprintf("inbound|%d||", ownPort), fmt.Sprintf("inbound|%d||", otherPort)
	createSelectorlessService(t, ns, "legacy", 9080, "http")
	createSelectorlessService(t, other, "elsewhere", 9080, "http")

	node := fmt.Sprintf("sidecar~%s~vm-1.%s~%s.svc.cluster.local", vmIP, ns, ns)
	envoy := framework.StartEnvoyInNetNS(t, pilot, pods.ns, framework.NetNSEnvoyOptions{
		NodeID: node, XDSAddress: pods.xds, Interception: "redirect",
	})
	clusters, err := dumpedClusters(t, envoy)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := clusters[ownCluster]; ok {
		t.Fatalf("Envoy has %s before any endpoint is at its address", ownCluster)
	}

	// The other namespace's slice first: once the proxy's own port shows, pilot has seen both.
	createAddressSlice(t, other, "elsewhere", "elsewhere-vm", "http", fmt.Sprintf("%s:%d", vmIP, otherPort))
	createAddressSlice(t, ns, "legacy", "legacy-vm", "http", fmt.Sprintf("%s:%d", vmIP, ownPort))
	framework.Eventually(t, func() error {
		clusters, err := dumpedClusters(t, envoy)
		if err != nil {
			return err
		}
		if _, ok := clusters[ownCluster]; !ok {
			return fmt.Errorf("Envoy has no cluster %s", ownCluster)
		}
		l, err := dumpedListener(t, envoy, "virtualInbound")
		if err != nil {
			return err
		}
		chains := l.chainsFor(ownPort)
		if len(chains) != 1 {
			return fmt.Errorf("virtualInbound's chains for port %d are %v; want one", ownPort, chains)
		}
		for _, c := range l.FilterChains {
			if c.Match.DestinationPort == ownPort && (c.TransportSocket != nil || c.Match.TransportProtocol == "tls") {
				return fmt.Errorf("virtualInbound chain %s is mTLS; the proxy names no Pod and can never hold a certificate", c.Name)
			}
		}
		return nil
	})
	if clusters, err := dumpedClusters(t, envoy); err != nil {
		t.Error(err)
	} else if _, ok := clusters[otherCluster]; ok {
		t.Errorf("Envoy has %s, from an EndpointSlice of namespace %s, not the proxy's", otherCluster, other)
	}
	if l, err := dumpedListener(t, envoy, "virtualInbound"); err != nil {
		t.Error(err)
	} else if chains := l.chainsFor(otherPort); len(chains) != 0 {
		t.Errorf("virtualInbound has chains %v for port %d, from an EndpointSlice of namespace %s", chains, otherPort, other)
	}
	framework.Eventually(t, func() error {
		for _, line := range strings.Split(pilot.Log(), "\n") {
			if strings.Contains(line, noIdentityWarning) && strings.Contains(line, node) &&
				strings.Contains(line, "no Pod or WorkloadEntry named vm-1 in namespace "+ns) {
				return nil
			}
		}
		return fmt.Errorf("pilot's log has no %q line for %s", noIdentityWarning, node)
	})

	// The endpoint leaves the proxy's address: so does its port.
	if err := cluster.Kube.DiscoveryV1().EndpointSlices(ns).Delete(ctx(t), "legacy-vm", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting EndpointSlice %s/legacy-vm: %v", ns, err)
	}
	framework.Eventually(t, func() error {
		clusters, err := dumpedClusters(t, envoy)
		if err != nil {
			return err
		}
		if _, ok := clusters[ownCluster]; ok {
			return fmt.Errorf("Envoy still has %s after its EndpointSlice was deleted", ownCluster)
		}
		return nil
	})
	envoy.AssertNoRejections(t)
}

// createSelectorlessService creates a ClusterIP Service with one port and no selector: its
// endpoints are the EndpointSlices someone writes, as for a VM.
func createSelectorlessService(t *testing.T, ns, name string, port int, portName string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: portName, Port: int32(port), TargetPort: intstr.FromInt32(int32(port))}}},
	}
	if _, err := cluster.Kube.CoreV1().Services(ns).Create(ctx(t), svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Service %s/%s: %v", ns, name, err)
	}
}

// createAddressSlice creates EndpointSlice name of service with one ready endpoint at address
// (IP:PORT) that refers to no Pod.
func createAddressSlice(t *testing.T, ns, service, name, portName, address string) {
	t.Helper()
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		t.Fatal(err)
	}
	number, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("port of %s: %v", address, err)
	}
	port := int32(number)
	ready := true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}
	if _, err := cluster.Kube.DiscoveryV1().EndpointSlices(ns).Create(ctx(t), slice, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating EndpointSlice %s/%s: %v", ns, name, err)
	}
}

// What the tests read of Envoy's /config_dump: the few fields they assert on, as Envoy writes
// them (proto field names).

type envoyListener struct {
	Name            string `json:"name"`
	ListenerFilters []struct {
		Name string `json:"name"`
	} `json:"listener_filters"`
	FilterChains []envoyFilterChain `json:"filter_chains"`
}

type envoyFilterChain struct {
	Name  string `json:"name"`
	Match struct {
		DestinationPort      uint32   `json:"destination_port"`
		TransportProtocol    string   `json:"transport_protocol"`
		ApplicationProtocols []string `json:"application_protocols"`
	} `json:"filter_chain_match"`
	Filters         []envoyTypedExtension `json:"filters"`
	TransportSocket *envoyTypedExtension  `json:"transport_socket"`
}

// envoyTypedExtension is a filter or transport socket: a name and its typed config.
type envoyTypedExtension struct {
	Name        string          `json:"name"`
	TypedConfig json.RawMessage `json:"typed_config"`
}

type envoyCluster struct {
	Name                   string `json:"name"`
	TransportSocketMatches []struct {
		Name            string          `json:"name"`
		Match           map[string]any  `json:"match"`
		TransportSocket json.RawMessage `json:"transport_socket"`
	} `json:"transport_socket_matches"`
}

type envoyRouteConfig struct {
	Name         string `json:"name"`
	VirtualHosts []struct {
		Domains []string `json:"domains"`
		Routes  []struct {
			Match struct {
				Headers []struct {
					Name        string `json:"name"`
					StringMatch struct {
						Exact string `json:"exact"`
					} `json:"string_match"`
				} `json:"headers"`
			} `json:"match"`
			Route struct {
				Cluster string `json:"cluster"`
			} `json:"route"`
		} `json:"routes"`
	} `json:"virtual_hosts"`
}

func (l envoyListener) listenerFilterNames() []string {
	var names []string
	for _, f := range l.ListenerFilters {
		names = append(names, f.Name)
	}
	return names
}

func (l envoyListener) hasListenerFilter(name string) bool {
	return slices.Contains(l.listenerFilterNames(), name)
}

// chainsFor describes the filter chains that match destination port, for messages.
func (l envoyListener) chainsFor(port uint32) []string {
	var out []string
	for _, c := range l.FilterChains {
		if c.Match.DestinationPort == port {
			out = append(out, fmt.Sprintf("%s (transport %q)", c.Name, c.Match.TransportProtocol))
		}
	}
	return out
}

func (c envoyFilterChain) hasFilter(name string) bool {
	return slices.ContainsFunc(c.Filters, func(f envoyTypedExtension) bool { return f.Name == name })
}

// routeConfigName is the RDS name of the chain's HTTP connection manager, "" if none.
func (c envoyFilterChain) routeConfigName() string {
	for _, f := range c.Filters {
		if f.Name != "envoy.filters.network.http_connection_manager" {
			continue
		}
		var hcm struct {
			RDS struct {
				RouteConfigName string `json:"route_config_name"`
			} `json:"rds"`
		}
		if json.Unmarshal(f.TypedConfig, &hcm) == nil {
			return hcm.RDS.RouteConfigName
		}
	}
	return ""
}

// requiresMeshClientCertificate checks that the chain terminates mTLS as a mesh server: the
// workload certificate (SDS `default`) and a required client certificate.
func (c envoyFilterChain) requiresMeshClientCertificate() error {
	if c.TransportSocket == nil {
		return fmt.Errorf("no transport socket")
	}
	var tls struct {
		Type                     string `json:"@type"`
		RequireClientCertificate bool   `json:"require_client_certificate"`
		CommonTLSContext         struct {
			Certificates []struct {
				Name string `json:"name"`
			} `json:"tls_certificate_sds_secret_configs"`
		} `json:"common_tls_context"`
	}
	if err := json.Unmarshal(c.TransportSocket.TypedConfig, &tls); err != nil {
		return fmt.Errorf("reading its transport socket: %w", err)
	}
	certs := tls.CommonTLSContext.Certificates
	if !strings.HasSuffix(tls.Type, ".DownstreamTlsContext") || !tls.RequireClientCertificate || len(certs) != 1 || certs[0].Name != "default" {
		return fmt.Errorf("transport socket %s does not require a client certificate with the workload certificate: %s",
			c.TransportSocket.Name, c.TransportSocket.TypedConfig)
	}
	return nil
}

func (c envoyCluster) matchNames() []string {
	var names []string
	for _, m := range c.TransportSocketMatches {
		names = append(names, m.Name)
	}
	return names
}

// routesHeaderTo reports whether a virtual host for domain has a route matching header name
// exactly value, to cluster.
func (rc envoyRouteConfig) routesHeaderTo(domain, name, value, cluster string) bool {
	for _, vh := range rc.VirtualHosts {
		if !slices.Contains(vh.Domains, domain) {
			continue
		}
		for _, r := range vh.Routes {
			for _, h := range r.Match.Headers {
				if h.Name == name && h.StringMatch.Exact == value && r.Route.Cluster == cluster {
					return true
				}
			}
		}
	}
	return false
}

// dumpResources decodes one resource of Envoy's /config_dump (?resource=, each item a config).
func dumpResources[T any](t *testing.T, e *framework.Envoy, resource string) ([]T, error) {
	t.Helper()
	status, body := e.Get(t, "/config_dump?include_eds&resource="+resource)
	if status != http.StatusOK {
		return nil, fmt.Errorf("Envoy /config_dump?resource=%s: status %d: %s", resource, status, body)
	}
	var dump struct {
		Configs []T `json:"configs"`
	}
	if err := json.Unmarshal(body, &dump); err != nil {
		return nil, fmt.Errorf("Envoy /config_dump?resource=%s: %w", resource, err)
	}
	return dump.Configs, nil
}

// dumpedListener is Envoy's dynamic listener name, the warming version if there is one: a
// listener whose mTLS chains wait for a certificate is warming until Envoy's initial fetch
// timeout, and its configuration is what the tests assert on.
func dumpedListener(t *testing.T, e *framework.Envoy, name string) (envoyListener, error) {
	t.Helper()
	type state struct {
		Listener envoyListener `json:"listener"`
	}
	listeners, err := dumpResources[struct {
		Name         string `json:"name"`
		ActiveState  *state `json:"active_state"`
		WarmingState *state `json:"warming_state"`
	}](t, e, "dynamic_listeners")
	if err != nil {
		return envoyListener{}, err
	}
	for _, l := range listeners {
		switch {
		case l.Name != name:
		case l.WarmingState != nil:
			return l.WarmingState.Listener, nil
		case l.ActiveState != nil:
			return l.ActiveState.Listener, nil
		}
	}
	return envoyListener{}, fmt.Errorf("Envoy has no listener %s", name)
}

// dumpedClusters are Envoy's dynamic clusters by name, active and warming (warming wins: it is
// the newer version).
func dumpedClusters(t *testing.T, e *framework.Envoy) (map[string]envoyCluster, error) {
	t.Helper()
	out := map[string]envoyCluster{}
	for _, resource := range []string{"dynamic_active_clusters", "dynamic_warming_clusters"} {
		clusters, err := dumpResources[struct {
			Cluster envoyCluster `json:"cluster"`
		}](t, e, resource)
		if err != nil {
			return nil, err
		}
		for _, c := range clusters {
			out[c.Cluster.Name] = c.Cluster
		}
	}
	return out, nil
}

func dumpedRouteConfigs(t *testing.T, e *framework.Envoy) (map[string]envoyRouteConfig, error) {
	t.Helper()
	configs, err := dumpResources[struct {
		RouteConfig envoyRouteConfig `json:"route_config"`
	}](t, e, "dynamic_route_configs")
	if err != nil {
		return nil, err
	}
	out := map[string]envoyRouteConfig{}
	for _, c := range configs {
		out[c.RouteConfig.Name] = c.RouteConfig
	}
	return out, nil
}

// dumpedEndpoints are the filter metadata of Envoy's EDS endpoints: cluster → IP → filter →
// key → value.
func dumpedEndpoints(t *testing.T, e *framework.Envoy) (map[string]map[string]map[string]map[string]any, error) {
	t.Helper()
	configs, err := dumpResources[struct {
		EndpointConfig struct {
			ClusterName string `json:"cluster_name"`
			Endpoints   []struct {
				LbEndpoints []struct {
					Endpoint struct {
						Address struct {
							SocketAddress struct {
								Address string `json:"address"`
							} `json:"socket_address"`
						} `json:"address"`
					} `json:"endpoint"`
					Metadata struct {
						FilterMetadata map[string]map[string]any `json:"filter_metadata"`
					} `json:"metadata"`
				} `json:"lb_endpoints"`
			} `json:"endpoints"`
		} `json:"endpoint_config"`
	}](t, e, "dynamic_endpoint_configs")
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]map[string]map[string]any{}
	for _, c := range configs {
		byIP := map[string]map[string]map[string]any{}
		for _, group := range c.EndpointConfig.Endpoints {
			for _, ep := range group.LbEndpoints {
				byIP[ep.Endpoint.Address.SocketAddress.Address] = ep.Metadata.FilterMetadata
			}
		}
		out[c.EndpointConfig.ClusterName] = byIP
	}
	return out, nil
}
