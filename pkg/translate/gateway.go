package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// A gateway proxy (node type `router`) serves the Gateways whose selector matches its labels,
// as istiod does: Gateways in every namespace are considered (PILOT_SCOPE_GATEWAY_TO_NAMESPACE
// is false by default), and a Gateway without a selector applies to every gateway proxy. Their
// servers are merged by port into one listener `BIND_PORT` each (0.0.0.0 unless the server
// names a bind address). The server port is the port Envoy listens on: there is no Kubernetes
// Service here whose targetPort istiod would translate it to.
//
// The merge follows istiod's mergeGateways: plaintext HTTP servers of one port share the route
// configuration `http.PORT`; each HTTPS server that terminates TLS gets its own filter chain
// (matched by SNI) and route configuration `https.PORT.PORTNAME.GATEWAY.NAMESPACE`. A server
// with a bind address adds `.BIND` to either name, as istiod's gatewayRDSRouteName does: its
// listener is another one than the wildcard's on that port, so must be its route configuration
// (else 127.0.0.1:80 would serve the hosts of 0.0.0.0:80 and the reverse); TLS
// passthrough servers get a filter chain per SNI match of the VirtualServices' tls routes; TCP
// servers (and TLS servers that terminate) forward with tcp_proxy by the VirtualServices' tcp
// routes. A server that conflicts with one merged before it (plaintext and TLS on one port, two
// TLS servers claiming one host) is left out, as istiod leaves it out.
//
// An ISTIO_MUTUAL server terminates TLS with the gateway proxy's own workload certificate
// (SDS `default`, as sidecars' inbound mTLS) and requires a client certificate signed by the
// mesh root (`ROOTCA`), with the server's subjectAltNames if it lists any: istiod's
// BuildListenerTLSContext. Pilot grants that certificate only to a proxy whose node ID names a
// workload with a service account and an IP address (model.Snapshot.MayHoldIdentity), so for
// any other gateway proxy the server is left out rather than sent to wait for a secret that
// never comes.
//
// Unlike istiod, a server whose credentialName Secret (or, for MUTUAL, its CA) is missing from
// the proxy's namespace is left out too: istiod would send the listener and let Envoy wait for a
// secret that never comes, holding the whole listener (and, at startup, every listener) in
// warming; over ADS an SDS answer without the secret would be rejected outright.
// AUTO_PASSTHROUGH (multi-network SNI routing) and unix socket binds are not supported and left
// out. Nothing is left out silently: the model's analysis (model.Snapshot.Warnings) reports
// every such server on its Gateway, with the field that decides it.

// gatewayTransportSocketConnectTimeout is istiod's transport_socket_connect_timeout for gateway
// filter chains: a client that opens a connection and never finishes the TLS handshake is cut
// off rather than holding memory.
const gatewayTransportSocketConnectTimeout = 15 * time.Second

// gatewayServerKind says how a server is served.
type gatewayServerKind int

const (
	serverHTTP           gatewayServerKind = iota // plaintext HTTP: HCM on http.PORT
	serverTCP                                     // plaintext TCP: tcp_proxy by tcp routes
	serverHTTPS                                   // HTTPS terminating TLS: HCM on https.PORT.NAME.GW.NS
	serverTLSTerminate                            // TLS terminated, then tcp_proxy by tcp routes
	serverTLSPassthrough                          // TLS passed through by SNI, by tls routes
)

// gatewayServer is one Gateway server as this proxy serves it.
type gatewayServer struct {
	server  *networking.Server
	gateway string // NAMESPACE/NAME of the Gateway, as VirtualServices bind to it
	kind    gatewayServerKind
	// hosts are the server's hosts with `./` resolved to the Gateway's namespace and `*/`
	// dropped, as istiod sanitises them: `host` or `namespace/host`.
	hosts     []string
	port      model.Port
	routeName string // for serverHTTP and serverHTTPS
}

// gatewayListener is the servers merged onto one bind address and port.
type gatewayListener struct {
	bind     string
	port     uint32
	first    gatewayServerKind // the kind of the server merged first, which decides who may join
	servers  []*gatewayServer
	tlsHosts map[string]bool // hosts claimed by servers with TLS settings, which become SNI matches
}

// mergedGateway is every server of the Gateways that select a proxy.
type mergedGateway struct {
	listeners []*gatewayListener // sorted by name
	// routes maps each RDS route configuration name to the servers it serves, in merge order.
	routes map[string][]*gatewayServer
}

// selectedGateways lists the Gateways whose selector is a subset of the proxy's labels, in
// configuration order (istiod uses creation time, which a folder does not have).
func selectedGateways(snap *model.Snapshot, proxy *model.Proxy) []*networkingv1.Gateway {
	var out []*networkingv1.Gateway
	for _, gw := range snap.Config.Gateways {
		if labelsSubset(gw.Spec.Selector, proxy.Labels) {
			out = append(out, gw)
		}
	}
	return out
}

func labelsSubset(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// mergedGatewaysKey is what a merge depends on besides the snapshot: the selected Gateways
// (their positions in the configuration), the namespace whose Secrets credentialNames name,
// and whether the proxy can hold the workload certificate ISTIO_MUTUAL servers present.
type mergedGatewaysKey struct {
	selected  string
	namespace string
	identity  bool
}

// mergeGateways merges the servers of the Gateways that select the proxy, once per snapshot
// for all the proxies (and the listener, route and secret builders of each) that select the
// same Gateways: istiod likewise merges a gateway proxy's servers when the proxy is
// initialized, not per generated type. The result is shared and must not be modified.
func mergeGateways(snap *model.Snapshot, proxy *model.Proxy) *mergedGateway {
	if proxy.Type != model.Router {
		return &mergedGateway{routes: map[string][]*gatewayServer{}}
	}
	var selected []*networkingv1.Gateway
	var positions strings.Builder
	for i, gw := range snap.Config.Gateways {
		if labelsSubset(gw.Spec.Selector, proxy.Labels) {
			selected = append(selected, gw)
			positions.WriteString(strconv.Itoa(i))
			positions.WriteByte(',')
		}
	}
	key := mergedGatewaysKey{selected: positions.String(), namespace: proxy.Namespace, identity: snap.MayHoldIdentity(proxy)}
	return snap.Derived(key, func() any {
		return buildMergedGateway(snap, selected, proxy.Namespace, key.identity)
	}).(*mergedGateway)
}

// buildMergedGateway merges the servers of the selected Gateways for a proxy in namespace ns.
func buildMergedGateway(snap *model.Snapshot, selected []*networkingv1.Gateway, ns string, identity bool) *mergedGateway {
	m := &mergedGateway{routes: map[string][]*gatewayServer{}}
	byKey := map[string]*gatewayListener{}
	secrets := newSecretIndex(snap, ns)
	for _, gw := range selected {
		for _, s := range gw.Spec.Servers {
			gs := newGatewayServer(gw, s, secrets, identity)
			if gs == nil {
				continue
			}
			key := ListenerName(listenerBind(s), gs.port.Number)
			l := byKey[key]
			if l == nil {
				l = &gatewayListener{bind: listenerBind(s), port: gs.port.Number, first: gs.kind, tlsHosts: map[string]bool{}}
				byKey[key] = l
			} else if !l.accepts(gs) {
				continue
			}
			if gs.kind == serverHTTPS && len(m.routes[gs.routeName]) > 0 {
				continue // each HTTPS server needs a route configuration of its own
			}
			if s.GetTls() != nil && l.claimHosts(gs.sniHosts()) {
				continue
			}
			if gs.routeName != "" {
				m.routes[gs.routeName] = append(m.routes[gs.routeName], gs)
			}
			l.servers = append(l.servers, gs)
		}
	}
	for _, key := range sortedKeys(byKey) {
		m.listeners = append(m.listeners, byKey[key])
	}
	return m
}

// newGatewayServer classifies a server, or returns nil for one this proxy cannot serve;
// identity says whether the proxy can hold its workload certificate.
func newGatewayServer(gw *networkingv1.Gateway, s *networking.Server, secrets secretIndex, identity bool) *gatewayServer {
	p := s.GetPort()
	if p == nil || strings.HasPrefix(s.GetBind(), "unix://") {
		return nil
	}
	gs := &gatewayServer{
		server:  s,
		gateway: gw.Namespace + "/" + gw.Name,
		hosts:   sanitizeServerHosts(s.Hosts, gw.Namespace),
		port:    model.Port{Name: p.Name, Number: p.Number, Protocol: model.ParseProtocol(p.Protocol)},
	}
	bind := ""
	if s.GetBind() != "" {
		bind = "." + s.GetBind()
	}
	tls := s.GetTls()
	switch {
	case gs.port.Protocol.IsHTTP():
		gs.kind = serverHTTP
		gs.routeName = "http." + strconv.FormatUint(uint64(p.Number), 10) + bind
		return gs
	case tls == nil:
		gs.kind = serverTCP
		return gs
	}
	switch tls.Mode {
	case networking.ServerTLSSettings_PASSTHROUGH:
		gs.kind = serverTLSPassthrough
		return gs
	case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		if !secrets.hasAll(credentialRefs(tls)) {
			return nil // a missing credential leaves the server out: see the top of this file
		}
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		if !identity {
			return nil // no workload certificate to present: see the top of this file
		}
	default:
		return nil // AUTO_PASSTHROUGH
	}
	if gs.port.Protocol == model.HTTPS {
		gs.kind = serverHTTPS
		gs.routeName = fmt.Sprintf("https.%d.%s.%s.%s%s", p.Number, p.Name, gw.Name, gw.Namespace, bind)
	} else {
		gs.kind = serverTLSTerminate
	}
	return gs
}

// accepts reports whether a server may join the listener: plaintext HTTP servers merge with
// plaintext HTTP servers; TLS servers of any kind merge with TLS servers (SNI tells them
// apart); everything else conflicts, and the server merged first keeps the port.
func (l *gatewayListener) accepts(gs *gatewayServer) bool {
	if l.first == serverHTTP || l.first == serverTCP {
		return gs.kind == serverHTTP && l.first == serverHTTP
	}
	return gs.kind != serverHTTP && gs.kind != serverTCP
}

// claimHosts records the hosts of a server with TLS settings and reports a conflict when one is
// already claimed on this listener: Envoy rejects two filter chains with the same SNI match.
func (l *gatewayListener) claimHosts(hosts []string) (conflict bool) {
	for _, h := range hosts {
		if l.tlsHosts[h] {
			return true
		}
	}
	for _, h := range hosts {
		l.tlsHosts[h] = true
	}
	return false
}

func listenerBind(s *networking.Server) string {
	if s.GetBind() != "" {
		return s.GetBind()
	}
	return wildcardAddress
}

// sanitizeServerHosts resolves `./host` to the Gateway's namespace and drops `*/` (any
// namespace), as istiod does; `*/*` makes the whole list `*`.
func sanitizeServerHosts(hosts []string, ns string) []string {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		hostNS, name, ok := strings.Cut(h, "/")
		switch {
		case !ok:
			out = append(out, h)
		case hostNS == ".":
			out = append(out, ns+"/"+name)
		case hostNS == "*" && name == "*":
			return []string{"*"}
		case hostNS == "*":
			out = append(out, name)
		default:
			out = append(out, h)
		}
	}
	return out
}

// sniHosts are the server's hosts without namespaces, deduplicated and sorted: the server
// names a TLS filter chain matches.
func (gs *gatewayServer) sniHosts() []string {
	out := make([]string, 0, len(gs.hosts))
	for _, h := range gs.hosts {
		if _, name, ok := strings.Cut(h, "/"); ok {
			h = name
		}
		out = append(out, h)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// matchesGateway reports whether a list of gateway references (a VirtualService's `gateways`
// or a match's) written in namespace ns names gateway (NAMESPACE/NAME, or `mesh`).
func matchesGateway(refs []string, ns, gateway string) bool {
	for _, ref := range refs {
		if model.ResolveGatewayName(ref, ns) == gateway {
			return true
		}
	}
	return false
}

// gatewayListeners builds a gateway proxy's listeners from the Gateways that select it.
func gatewayListeners(snap *model.Snapshot, proxy *model.Proxy) []*listenerv3.Listener {
	merged := mergeGateways(snap, proxy)
	out := make([]*listenerv3.Listener, 0, len(merged.listeners))
	sockets, hcms := tlsSocketCache{}, newGatewayHCMs(telemetryFor(snap, proxy))
	for _, gl := range merged.listeners {
		if l := buildGatewayListener(snap, proxy, gl, sockets, hcms); l != nil {
			out = append(out, l)
		}
	}
	return out
}

// buildGatewayListener builds one listener, or nil when no server on it has anything to serve
// (a TCP server no VirtualService routes): Envoy rejects a listener without filter chains.
func buildGatewayListener(snap *model.Snapshot, proxy *model.Proxy, gl *gatewayListener, sockets tlsSocketCache, hcms *gatewayHCMs) *listenerv3.Listener {
	name := ListenerName(gl.bind, gl.port)
	var chains []*listenerv3.FilterChain
	httpDone := false
	for _, gs := range gl.servers {
		switch gs.kind {
		case serverHTTP:
			if httpDone {
				continue // every plaintext HTTP server of the port shares one chain and http.PORT
			}
			httpDone = true
			chains = append(chains, &listenerv3.FilterChain{
				Filters: []*listenerv3.Filter{hcms.filter("outbound_"+name, gs.routeName)},
			})
		case serverHTTPS:
			statPrefix := "outbound_" + name
			if gs.server.Name != "" {
				statPrefix = gs.server.Name
			}
			chains = append(chains, &listenerv3.FilterChain{
				FilterChainMatch: sniMatch(gs.sniHosts()),
				TransportSocket:  sockets.socket(gs.server.Tls),
				Filters:          []*listenerv3.Filter{hcms.filter(statPrefix, gs.routeName)},
			})
		case serverTCP, serverTLSTerminate:
			filters := gatewayTCPFilters(snap, proxy, gs)
			if filters == nil {
				continue
			}
			chain := &listenerv3.FilterChain{Filters: filters}
			if gs.kind == serverTLSTerminate {
				chain.FilterChainMatch = sniMatch(gs.sniHosts())
				chain.TransportSocket = sockets.socket(gs.server.Tls)
			}
			chains = append(chains, chain)
		case serverTLSPassthrough:
			chains = append(chains, passthroughChains(snap, proxy, gs)...)
		}
	}
	chains = dropOverlappingChains(chains)
	if len(chains) == 0 {
		return nil
	}
	l := &listenerv3.Listener{
		Name:             name,
		Address:          SocketAddress(gl.bind, gl.port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     chains,
	}
	for _, c := range chains {
		c.TransportSocketConnectTimeout = Duration(gatewayTransportSocketConnectTimeout)
		// The TLS inspector reads SNI and ALPN before a chain is picked; every TLS chain needs
		// one or the other.
		if l.ListenerFilters == nil && (c.FilterChainMatch != nil || c.TransportSocket != nil) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspector()}
		}
	}
	return l
}

// dropOverlappingChains keeps the first of filter chains that match the same server name (or
// that both match every name): Envoy rejects a listener in which two chains match the same
// connections. The merge already keeps servers from claiming one host twice; this also covers
// passthrough routes that name a host a server or another route already has. Gateway chains
// match on server names only, so names are all there is to compare.
func dropOverlappingChains(chains []*listenerv3.FilterChain) []*listenerv3.FilterChain {
	claimed := map[string]bool{}
	out := chains[:0]
	for _, c := range chains {
		names := c.GetFilterChainMatch().GetServerNames()
		if len(names) == 0 {
			names = []string{""} // no SNI match: every name
		}
		if slices.ContainsFunc(names, func(n string) bool { return claimed[n] }) {
			continue
		}
		for _, n := range names {
			claimed[n] = true
		}
		out = append(out, c)
	}
	// A chain without a match catches every connection the others do not; keep it last so the
	// listener reads in matching order.
	slices.SortStableFunc(out, func(a, b *listenerv3.FilterChain) int {
		return cmp.Compare(boolInt(a.FilterChainMatch == nil), boolInt(b.FilterChainMatch == nil))
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sniMatch matches the server names of a TLS chain; a `*` host matches any name, which is no
// match at all.
func sniMatch(hosts []string) *listenerv3.FilterChainMatch {
	if len(hosts) == 0 || slices.Contains(hosts, "*") {
		return nil
	}
	return &listenerv3.FilterChainMatch{ServerNames: hosts}
}

var tlsInspectorAny = MustAny(&tlsinspectorv3.TlsInspector{})

func tlsInspector() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{
		Name:       wellknown.TLSInspector,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: tlsInspectorAny},
	}
}
