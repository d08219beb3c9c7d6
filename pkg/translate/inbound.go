package translate

import (
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/model"
)

// The captured inbound side, as istiod builds it: iptables redirects every connection to the
// workload to 15006, where virtualInbound picks a filter chain by the original destination
// port. The workload's own ports (the target ports of the services whose endpoints are its
// Pod or WorkloadEntry, or are at its IP) go through the same mTLS and RBAC chains as Sidecar
// ingress listeners, to `inbound|PORT||`; any other port passes through to
// InboundPassthroughCluster; 15006 itself would loop and is dropped.

// inboundPassthroughBindAddress is istiod's (≥1.10) source for passthrough traffic: a loopback
// address other than 127.0.0.1, which iptables' capture rules exempt, so the connection to the
// application is not redirected back to 15006, and which the application can tell apart from
// its own localhost traffic.
const inboundPassthroughBindAddress = "127.0.0.6"

// inboundPort is one application port of the proxy's workload.
type inboundPort struct {
	number   uint32
	protocol listenerProtocol
}

// workloadInboundPorts are the ports the proxy's workload serves, those the services it is an
// endpoint of send to (Endpoint.PortFor). Its endpoints are those of the Pod or WorkloadEntry
// the node ID names (POD.NAMESPACE), or, when it names none, those at the proxy's IP in its
// namespace, as istiod finds them (model.Snapshot.ServedEndpoints). When two services disagree
// on a port's protocol, HTTP wins, then sniffing (mergeListenerProtocols). Sorted by number, so
// the listener is stable.
func workloadInboundPorts(snap *model.Snapshot, proxy *model.Proxy) []inboundPort {
	byNumber := map[uint32]listenerProtocol{}
	for _, se := range snap.ServedEndpoints(proxy) {
		for _, port := range se.Service.Ports {
			if port.Protocol == model.UDP {
				continue
			}
			n := se.Endpoint.PortFor(port)
			protocol := listenerProtocolOf(port.Protocol)
			if seen, ok := byNumber[n]; ok {
				protocol = mergeListenerProtocols(seen, protocol)
			}
			byNumber[n] = protocol
		}
	}
	out := make([]inboundPort, 0, len(byNumber))
	for n, protocol := range byNumber {
		// 15006 is the blackhole chain's (see virtualInboundListener).
		if n != VirtualInboundPort {
			out = append(out, inboundPort{number: n, protocol: protocol})
		}
	}
	slices.SortFunc(out, func(a, b inboundPort) int { return int(a.number) - int(b.number) })
	return out
}

// InboundPortsFollowAddresses reports whether the proxy's inbound ports, part of its
// configuration key, follow endpoint addresses: those of a captured sidecar that names no
// workload are the ports of the endpoints at its IP. A change that only moves endpoints
// (model.EndpointsOnly) translates nothing, so pilot computes such a proxy's key again then:
// an endpoint moved to or from its IP changes what it serves.
func InboundPortsFollowAddresses(snap *model.Snapshot, proxy *model.Proxy) bool {
	return capturedSidecar(proxy) && snap.ServesByAddress(proxy)
}

// virtualInboundPorts splits virtualInbound's ports: the Sidecar's ingress ports, which go to
// the ingress listener's cluster (the Sidecar names the application's endpoint explicitly),
// and the workload's other ports, which get a cluster of their own.
func virtualInboundPorts(snap *model.Snapshot, proxy *model.Proxy, ingresses []sidecarIngress) (own []inboundPort, sidecar []sidecarIngress) {
	claimed := map[uint32]bool{}
	for _, in := range ingresses {
		if n := in.listener.Port.Number; n != VirtualInboundPort && !claimed[n] {
			claimed[n] = true
			sidecar = append(sidecar, in)
		}
	}
	for _, p := range workloadInboundPorts(snap, proxy) {
		if !claimed[p.number] {
			own = append(own, p)
		}
	}
	return own, sidecar
}

// virtualInboundClusters are what virtualInbound adds to a captured sidecar's CDS: an
// `inbound|PORT||` cluster per workload port, and InboundPassthroughCluster. A sniffed port's
// cluster speaks to the application the HTTP version the client spoke, as istiod's does.
//
// The application is reached on 127.0.0.1:PORT, as istiod did before 1.10. Newer istiod sends
// to the pod IP from 127.0.0.6 so that applications bound to the pod IP only are reachable, but
// Skiff's workloads are processes on a laptop whose WorkloadEntry address may not be local at
// all (the e2e tests use 127.0.9.x and made-up IPs), while localhost always is; the price is
// that an application listening only on its pod IP is not reachable through the sidecar.
func virtualInboundClusters(snap *model.Snapshot, proxy *model.Proxy, ingresses []sidecarIngress) []*clusterv3.Cluster {
	own, _ := virtualInboundPorts(snap, proxy, ingresses)
	out := make([]*clusterv3.Cluster, 0, len(own)+1)
	for _, p := range own {
		c := inboundCluster(p.number, SocketAddress(localhostAddress, p.number))
		if p.protocol == listenAuto {
			(&protocolOptions{downstream: true}).setOn(c)
		}
		out = append(out, c)
	}
	return append(out, inboundPassthroughCluster())
}

// inboundPassthroughCluster sends a connection on to its original destination, from
// 127.0.0.6 (see inboundPassthroughBindAddress).
func inboundPassthroughCluster() *clusterv3.Cluster {
	c := passthroughCluster()
	c.Name = InboundPassthroughCluster
	c.UpstreamBindConfig = &corev3.BindConfig{
		SourceAddress: &corev3.SocketAddress{
			Address:       inboundPassthroughBindAddress,
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
		},
	}
	return c
}

// virtualInboundListener is 0.0.0.0:15006. The original_dst listener filter restores the
// address iptables rewrote, so chains match on the workload's port and the passthrough cluster
// knows where to go; tls_inspector lets PERMISSIVE chains tell mTLS from plaintext, and
// http_inspector sniffed ports' chains HTTP from TCP (only those ports, see
// inboundListenerFilters).
//
// use_original_dst is deliberately left unset, as in istiod's virtualInbound: it would hand a
// connection to whichever listener owns its original address, and a captured sidecar's
// outbound listeners are 0.0.0.0_PORT (not bound, reached through virtualOutbound), so inbound
// traffic to port 9080 would be routed as outbound traffic to the 9080 services.
func virtualInboundListener(snap *model.Snapshot, proxy *model.Proxy, ingresses []sidecarIngress) *listenerv3.Listener {
	own, sidecar := virtualInboundPorts(snap, proxy, ingresses)
	tel := telemetryFor(snap, proxy)
	var chains []*listenerv3.FilterChain
	// Ports whose chains are chosen by transport protocol (PERMISSIVE, or sniffed under mTLS)
	// need the TLS inspector, sniffed ports the HTTP inspector; the others must wait for
	// neither, see inboundListenerFilters. 15006 is the blackhole's.
	plain, inspected, sniffed := []uint32{VirtualInboundPort}, []uint32(nil), []uint32(nil)
	addPort := func(port, targetPort uint32, protocol listenerProtocol) {
		cluster := InboundClusterName(port)
		portChains, inspectors := inboundPortChains(inboundMTLSMode(snap, proxy, &targetPort), cluster, protocol, tel)
		tls := slices.ContainsFunc(inspectors, func(f *listenerv3.ListenerFilter) bool { return f.Name == wellknown.TlsInspector })
		if tls {
			inspected = append(inspected, port)
		} else {
			plain = append(plain, port)
		}
		if slices.ContainsFunc(inspectors, func(f *listenerv3.ListenerFilter) bool { return f.Name == wellknown.HTTPInspector }) {
			sniffed = append(sniffed, port)
		}
		chains = append(chains, onDestinationPort(portChains, port, cluster)...)
	}
	for _, p := range own {
		addPort(p.number, p.number, p.protocol)
	}
	for _, in := range sidecar {
		addPort(in.listener.Port.Number, in.targetPort(), listenerProtocolOf(model.ParseProtocol(in.listener.Port.Protocol)))
	}
	chains = append(chains, &listenerv3.FilterChain{
		Name:             VirtualInbound + "-blackhole",
		FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: uint32Value(VirtualInboundPort)},
		Filters:          []*listenerv3.Filter{TCPProxy(BlackHoleCluster, BlackHoleCluster, tel)},
	})

	// Any other port passes through, under the workload's mode (a STRICT workload takes no
	// plaintext on any port, as in istiod) and its RBAC network filters.
	passthrough, inspectPassthrough := inboundFilterChains(inboundMTLSMode(snap, proxy, nil), func(bool) []*listenerv3.Filter {
		return inboundTCPFilters(InboundPassthroughCluster, tel)
	})
	l := &listenerv3.Listener{
		Name:             VirtualInbound,
		Address:          SocketAddress(wildcardAddress, VirtualInboundPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters:  inboundListenerFilters(plain, inspected, sniffed, len(inspectPassthrough) > 0),
	}
	if len(sniffed) > 0 {
		// As istiod with its default protocolDetectionTimeout (0s): see sniffListener.
		l.ListenerFiltersTimeout = Duration(0)
		l.ContinueOnListenerFiltersTimeout = true
	}
	if len(passthrough) == 1 {
		passthrough[0].Name = VirtualInbound + "-catchall"
		l.DefaultFilterChain = passthrough[0]
	} else {
		// PERMISSIVE: one chain per transport protocol, matching any port that no port chain
		// claims (Envoy matches destination_port before transport_protocol).
		for _, c := range passthrough {
			c.Name = VirtualInbound + "-catchall-" + c.FilterChainMatch.GetTransportProtocol()
		}
		chains = append(chains, passthrough...)
	}
	l.FilterChains = chains
	return l
}

// onDestinationPort restricts chains to one destination port and names them after cluster
// (with the transport protocol when they are split by it, and "-http" for a sniffed port's
// HTTP chains).
func onDestinationPort(chains []*listenerv3.FilterChain, port uint32, cluster string) []*listenerv3.FilterChain {
	for _, c := range chains {
		match := &listenerv3.FilterChainMatch{}
		if c.FilterChainMatch != nil {
			match = proto.Clone(c.FilterChainMatch).(*listenerv3.FilterChainMatch)
		}
		match.DestinationPort = uint32Value(port)
		c.FilterChainMatch = match
		c.Name = cluster
		if tp := match.GetTransportProtocol(); tp != "" {
			c.Name += "-" + tp
		}
		if len(match.GetApplicationProtocols()) > 0 {
			c.Name += "-http"
		}
	}
	return chains
}

// inboundListenerFilters are original_dst, then tls_inspector only where a chain is picked by
// transport protocol, as istiod does with filter_disabled, then http_inspector only on the
// sniffed ports. An inspector waits for the client's first bytes, so on a plain port a
// server-first protocol (MySQL, SMTP) would stall until the listener filter timeout, and so
// would a connection to 15006 itself before the blackhole closes it. Either the catch-all
// needs TLS inspection, and it is disabled on the plain ports, or it does not, and it is
// disabled everywhere but on the inspected ports (left out when there are none).
func inboundListenerFilters(plain, inspected, sniffed []uint32, inspectOthers bool) []*listenerv3.ListenerFilter {
	filters := []*listenerv3.ListenerFilter{originalDstFilter()}
	if inspectOthers || len(inspected) > 0 {
		inspector := tlsInspectorFilter()
		if inspectOthers {
			inspector.FilterDisabled = anyDestinationPort(plain)
		} else {
			inspector.FilterDisabled = onlyOnDestinationPorts(inspected)
		}
		filters = append(filters, inspector)
	}
	if len(sniffed) > 0 {
		// After the TLS inspector: it leaves connections it found to be TLS alone.
		inspector := httpInspectorFilter()
		inspector.FilterDisabled = onlyOnDestinationPorts(sniffed)
		filters = append(filters, inspector)
	}
	return filters
}

// onlyOnDestinationPorts is the filter_disabled predicate of a listener filter that runs only
// for connections to ports.
func onlyOnDestinationPorts(ports []uint32) *listenerv3.ListenerFilterChainMatchPredicate {
	return &listenerv3.ListenerFilterChainMatchPredicate{
		Rule: &listenerv3.ListenerFilterChainMatchPredicate_NotMatch{NotMatch: anyDestinationPort(ports)},
	}
}

// anyDestinationPort matches a connection whose destination is one of ports (at least one).
func anyDestinationPort(ports []uint32) *listenerv3.ListenerFilterChainMatchPredicate {
	rules := make([]*listenerv3.ListenerFilterChainMatchPredicate, 0, len(ports))
	for _, p := range ports {
		rules = append(rules, &listenerv3.ListenerFilterChainMatchPredicate{
			Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
				DestinationPortRange: &typev3.Int32Range{Start: int32(p), End: int32(p) + 1},
			},
		})
	}
	if len(rules) == 1 {
		return rules[0] // an or_match takes two rules or more
	}
	return &listenerv3.ListenerFilterChainMatchPredicate{
		Rule: &listenerv3.ListenerFilterChainMatchPredicate_OrMatch{
			OrMatch: &listenerv3.ListenerFilterChainMatchPredicate_MatchSet{Rules: rules},
		},
	}
}

func originalDstFilter() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{
		Name:       wellknown.OriginalDestination,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: MustAny(&originaldstv3.OriginalDst{})},
	}
}
