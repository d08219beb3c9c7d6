package translate

import (
	"net"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// The listeners a Sidecar resource declares explicitly. Without traffic capture they are how an
// application reaches the mesh (egress: `bind` and `port`) and how the mesh reaches the
// application (ingress: `port` forwarded to `defaultEndpoint`), as in Istio's captureMode NONE.

// InboundClusterName is `inbound|PORT||`.
func InboundClusterName(port uint32) string {
	return "inbound|" + strconv.FormatUint(uint64(port), 10) + "||"
}

// sidecarEgressListeners builds a listener per Sidecar egress listener that names a port, bound
// to its `bind` address (or the proxy's default) and serving the services it imports on that
// port. It returns them with the ports they claim, which service listeners must not take.
func sidecarEgressListeners(snap *model.Snapshot, proxy *model.Proxy, defaultBind string) []*listenerv3.Listener {
	sc := snap.SidecarFor(proxy)
	if sc == nil {
		return nil
	}
	var out []*listenerv3.Listener
	for _, eg := range sc.Spec.Egress {
		port := eg.GetPort()
		if port.GetNumber() == 0 {
			continue // the catch-all egress listener only scopes which services are seen
		}
		bind := eg.Bind
		if bind == "" {
			bind = defaultBind
		}
		if model.ParseProtocol(port.Protocol).IsHTTP() {
			out = append(out, httpOutboundListener(bind, port.Number, telemetryFor(snap, proxy)))
			continue
		}
		// A TCP egress listener forwards to the one service it imports on the port.
		for _, svc := range snap.ServicesFor(proxy) {
			if _, ok := svc.Port(port.Number); ok && model.EgressImports(eg, svc, proxy.Namespace) {
				out = append(out, tcpOutboundListener(bind, port.Number, OutboundClusterName(port.Number, "", svc.Hostname), telemetryFor(snap, proxy)))
				break
			}
		}
	}
	return out
}

// sidecarIngress is one Sidecar ingress listener resolved for a proxy.
type sidecarIngress struct {
	listener *networking.IstioIngressListener
	bind     string
	endpoint *corev3.Address
}

// sidecarIngresses resolves the Sidecar's ingress listeners: the bind address defaults to the
// proxy's own IP without capture (0.0.0.0 with it), and defaultEndpoint is `IP:PORT` or `unix://PATH`. Listeners whose endpoint
// does not parse are left out (validation rejects them before they get here).
func sidecarIngresses(snap *model.Snapshot, proxy *model.Proxy) []sidecarIngress {
	sc := snap.SidecarFor(proxy)
	if sc == nil {
		return nil
	}
	var out []sidecarIngress
	for _, in := range sc.Spec.Ingress {
		if in.GetPort().GetNumber() == 0 {
			continue
		}
		endpoint, ok := parseDefaultEndpoint(in.DefaultEndpoint)
		if !ok {
			continue
		}
		bind := in.Bind
		if bind == "" {
			// Captured traffic reaches the listener whatever its address; without capture,
			// callers connect to the workload's own address (which is why the class of a
			// proxy without capture includes its IP).
			bind = wildcardAddress
			if proxy.InterceptionMode == model.InterceptionNone {
				bind = proxy.IP.String()
			}
		}
		out = append(out, sidecarIngress{listener: in, bind: bind, endpoint: endpoint})
	}
	return out
}

// targetPort is the application's port, which PeerAuthentication's portLevelMtls names (istiod
// keys it by the inbound target port): the defaultEndpoint's port, or the listener's for a
// unix socket.
func (in sidecarIngress) targetPort() uint32 {
	if sa := in.endpoint.GetSocketAddress(); sa != nil {
		return sa.GetPortValue()
	}
	return in.listener.GetPort().GetNumber()
}

func parseDefaultEndpoint(s string) (*corev3.Address, bool) {
	if path, ok := strings.CutPrefix(s, "unix://"); ok && path != "" {
		return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}, true
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return nil, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return nil, false
	}
	return SocketAddress(host, uint32(n)), true
}

// inboundClusters are `inbound|PORT||` clusters, one per Sidecar ingress listener, holding the
// application's address.
func inboundClusters(ingresses []sidecarIngress) []*clusterv3.Cluster {
	out := make([]*clusterv3.Cluster, 0, len(ingresses))
	for _, in := range ingresses {
		out = append(out, inboundCluster(in.listener.Port.Number, in.endpoint))
	}
	return out
}

// inboundCluster is the STATIC cluster `inbound|PORT||` holding the application's address;
// both the Sidecar ingress path and virtualInbound (inbound.go) send to one.
func inboundCluster(port uint32, app *corev3.Address) *clusterv3.Cluster {
	name := InboundClusterName(port)
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       Duration(defaultConnectTimeout),
		CircuitBreakers:      defaultCircuitBreakers(),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: app}},
			}}}},
		},
	}
}

// inboundListeners bind each Sidecar ingress port and forward to the application: HTTP through
// a connection manager with an inline route, anything else as TCP. The AuthorizationPolicies
// that apply to the workload are enforced on every one of them: RBAC HTTP filters ahead of the
// router, or RBAC network filters ahead of tcp_proxy, whose rules they fetch (authz_ecds.go).
func inboundListeners(snap *model.Snapshot, proxy *model.Proxy, ingresses []sidecarIngress) []*listenerv3.Listener {
	if len(ingresses) == 0 {
		return nil
	}
	out := make([]*listenerv3.Listener, 0, len(ingresses))
	for _, in := range ingresses {
		port := in.listener.Port
		cluster := InboundClusterName(port.Number)
		targetPort := in.targetPort()
		chains, listenerFilters := inboundPortChains(inboundMTLSMode(snap, proxy, &targetPort),
			cluster, listenerProtocolOf(model.ParseProtocol(port.Protocol)), telemetryFor(snap, proxy))
		out = append(out, &listenerv3.Listener{
			Name:             ListenerName(in.bind, port.Number),
			Address:          SocketAddress(in.bind, port.Number),
			TrafficDirection: corev3.TrafficDirection_INBOUND,
			ListenerFilters:  listenerFilters,
			FilterChains:     chains,
		})
	}
	return out
}

// inboundPortChains are the filter chains of one inbound application port, for the port's
// PeerAuthentication mode (see inboundFilterChains) and protocol, ending in cluster: HTTP
// through a connection manager with an inline route, anything else through tcp_proxy, with
// the workload's RBAC filters ahead of either, and a sniffed port both (sniffedInboundChains).
// The Sidecar ingress listeners and virtualInbound's per-port chains (inbound.go) are both
// built here, so the two paths enforce the same policy. The listener filters returned are the
// inspectors the chains need: tls_inspector where a chain is picked by transport protocol,
// then http_inspector where one is picked by plaintext HTTP. The RBAC filters are the same in
// every chain of every proxy: they fetch the workload's rules by name (authz_ecds.go), so the
// chains do not depend on AuthorizationPolicies at all.
func inboundPortChains(mode security.PeerAuthentication_MutualTLS_Mode, cluster string, protocol listenerProtocol, tel *listenerTelemetry) ([]*listenerv3.FilterChain, []*listenerv3.ListenerFilter) {
	httpChain := func(mtls bool) []*listenerv3.Filter {
		return []*listenerv3.Filter{inboundHTTPConnectionManager(cluster, mtls, tel)}
	}
	tcpChain := func(bool) []*listenerv3.Filter { return inboundTCPFilters(cluster, tel) }
	switch protocol {
	case listenHTTP:
		return inboundFilterChains(mode, httpChain)
	case listenAuto:
		chains := sniffedInboundChains(mode, httpChain, tcpChain)
		var inspectors []*listenerv3.ListenerFilter
		if mode != security.PeerAuthentication_MutualTLS_DISABLE {
			inspectors = append(inspectors, tlsInspectorFilter())
		}
		if mode != security.PeerAuthentication_MutualTLS_STRICT {
			inspectors = append(inspectors, httpInspectorFilter())
		}
		return chains, inspectors
	}
	return inboundFilterChains(mode, tcpChain)
}

// inboundTCPFilters are the RBAC network filters, then tcp_proxy to cluster.
func inboundTCPFilters(cluster string, tel *listenerTelemetry) []*listenerv3.Filter {
	return append(slices.Clone(inboundRBACNetworkFilters), TCPProxy(cluster, cluster, tel))
}

// inboundHTTPConnectionManager routes every request to the application's cluster. The route
// is inline: it never changes independently of the listener. The authorization filters come
// first, as in istiod's inbound chains: a denied request goes no further than RBAC, so fault
// injection, CORS and the router never see it.
//
// On an mTLS chain the application learns who called: the peer's SPIFFE ID is appended to
// x-forwarded-client-cert, as istiod's sidecars do (APPEND_FORWARD). Plaintext chains keep
// Envoy's default, which strips the header, so a plaintext client cannot claim an identity.
func inboundHTTPConnectionManager(cluster string, mtls bool, tel *listenerTelemetry) *listenerv3.Filter {
	route := &routev3.RouteConfiguration{
		Name: cluster,
		// Envoy checks the clusters of an inline route when the listener arrives; the inbound
		// cluster comes in the same push but over CDS, which Envoy may apply later.
		ValidateClusters: falseValue(),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "inbound|http|" + strings.Split(cluster, "|")[1],
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:  "default",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
					Timeout:          Duration(0),
				}},
			}},
		}},
	}
	hcm := newHTTPConnectionManager("inbound_"+cluster, tel)
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: route}
	hcm.HttpFilters = append(slices.Clone(inboundRBACHTTPFilters), hcm.HttpFilters...)
	if mtls {
		hcm.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
		hcm.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	}
	return hcmFilter(hcm)
}
