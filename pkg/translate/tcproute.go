package translate

import (
	"net/netip"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// A sidecar's outbound listener for a TCP, TLS or HTTPS service port forwards by the tcp or tls
// routes of the service's VirtualService, as istiod's buildSidecarOutboundTCPFilterChainOpts and
// buildSidecarOutboundTLSFilterChainOpts do. What istiod can decide when it builds the
// configuration (port, sourceLabels, sourceNamespace, gateways) is decided here; what only the
// connection tells (destination and source addresses, SNI) becomes a filter chain match.
//
// Envoy picks a filter chain by the most specific match, not in order: a later route with a
// narrower destinationSubnets wins over an earlier, wider one, as it does in Istio.

// l4ServicePort is a TCP, TLS or HTTPS port of a service, served by an outbound listener.
type l4ServicePort struct {
	svc  *model.Service
	port model.Port
}

// l4Listener is an outbound listener address and the service ports that share it, in
// configuration order. shared is true when the address is not a service's own (the wildcard or
// localhost), where a TLS service without tls routes is matched by its hostname.
type l4Listener struct {
	address string
	shared  bool
	ports   []l4ServicePort
}

// sniffs reports whether a port of the listener is sniffed (see sniffing.go).
func (g *l4Listener) sniffs() bool {
	return slices.ContainsFunc(g.ports, func(p l4ServicePort) bool { return p.port.Protocol.IsSniffed() })
}

// build makes the listener. The first port decides: a TCP port's routes alone make it (two TCP
// services on one address and port cannot be told apart); TLS ports are told apart by SNI, so
// the TLS and HTTPS ports of every service sharing the listener get their filter chains.
func (g *l4Listener) build(snap *model.Snapshot, proxy *model.Proxy) *listenerv3.Listener {
	ports, address, shared := g.ports, g.address, g.shared
	first := ports[0]
	var chains []*listenerv3.FilterChain
	if isTLSProtocol(first.port.Protocol) {
		for _, p := range ports {
			if isTLSProtocol(p.port.Protocol) {
				chains = append(chains, tlsRouteChains(snap, proxy, p.svc, p.port, shared)...)
			}
		}
	} else {
		chains = tcpRouteChains(snap, proxy, first.svc, first.port)
	}
	l := &listenerv3.Listener{
		Name:             ListenerName(address, first.port.Number),
		Address:          SocketAddress(address, first.port.Number),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     uniqueFilterChains(chains),
	}
	for _, c := range l.FilterChains {
		if len(c.GetFilterChainMatch().GetServerNames()) > 0 {
			// SNI is only known once the TLS inspector has read the ClientHello.
			l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspector()}
			break
		}
	}
	return l
}

// tcpRouteChains are the filter chains of a TCP service port: the first tcp route whose match
// applies without a destination subnet (or that has no match) forwards everything; routes
// before it whose applicable matches all name destinationSubnets forward those subnets; the
// service's own cluster takes the rest when no route took everything.
func tcpRouteChains(snap *model.Snapshot, proxy *model.Proxy, svc *model.Service, port model.Port) []*listenerv3.FilterChain {
	var chains []*listenerv3.FilterChain
	vs := snap.VirtualServiceFor(svc.Hostname, proxy.Namespace, model.MeshGateway)
	if vs != nil {
	rules:
		for _, rule := range vs.Spec.Tcp {
			if len(rule.Route) == 0 {
				continue
			}
			if len(rule.Match) == 0 {
				return append(chains, vsFilterChain(vs, nil, tcpRouteProxy(snap, proxy, vs, rule.Route, port)))
			}
			var subnets []string
			for _, m := range rule.Match {
				if !l4MatchApplies(m.Port, m.Gateways, m.SourceLabels, m.SourceNamespace, vs.Namespace, proxy, port.Number, meshOnly) {
					continue
				}
				if m.SourceSubnet != "" {
					// A source condition cannot be merged with the rule's other matches: give
					// the match its own chain.
					fcm := &listenerv3.FilterChainMatch{
						PrefixRanges:       cidrRanges(m.DestinationSubnets),
						SourcePrefixRanges: cidrRanges([]string{m.SourceSubnet}),
					}
					chains = append(chains, vsFilterChain(vs, fcm, tcpRouteProxy(snap, proxy, vs, rule.Route, port)))
					continue
				}
				if len(m.DestinationSubnets) == 0 {
					chains = append(chains, vsFilterChain(vs, nil, tcpRouteProxy(snap, proxy, vs, rule.Route, port)))
					break rules
				}
				subnets = append(subnets, m.DestinationSubnets...)
			}
			if len(subnets) > 0 {
				fcm := &listenerv3.FilterChainMatch{PrefixRanges: cidrRanges(subnets)}
				chains = append(chains, vsFilterChain(vs, fcm, tcpRouteProxy(snap, proxy, vs, rule.Route, port)))
			}
		}
		if len(chains) > 0 && chains[len(chains)-1].FilterChainMatch == nil {
			return chains
		}
	}
	cluster := OutboundClusterName(port.Number, "", svc.Hostname)
	return append(chains, &listenerv3.FilterChain{Filters: []*listenerv3.Filter{TCPProxy(cluster, cluster, telemetryFor(snap, proxy))}})
}

// meshOnly is the gateway set of a sidecar.
var meshOnly = []string{model.MeshGateway}

// vsFilterChain is a filter chain built from a VirtualService route, pointing back at it.
func vsFilterChain(vs *networkingv1.VirtualService, match *listenerv3.FilterChainMatch, proxyFilter *listenerv3.Filter) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{
		FilterChainMatch: match,
		Filters:          []*listenerv3.Filter{proxyFilter},
		Metadata: IstioMetadata(map[string]string{
			"config": "/apis/networking.istio.io/v1/namespaces/" + vs.Namespace + "/virtual-service/" + vs.Name,
		}),
	}
}

// uniqueFilterChains keeps listeners acceptable to Envoy, which rejects one where two chains
// match the same connections: same destination range, server name and source range. Routes
// come in order and the first is the one Istio means, so a later chain loses the server names
// and ranges an earlier chain already matches on, and is left out when it has none left (an
// empty list would match everything).
func uniqueFilterChains(chains []*listenerv3.FilterChain) []*listenerv3.FilterChain {
	claimed := map[string]bool{}
	out := make([]*listenerv3.FilterChain, 0, len(chains))
	for _, c := range chains {
		m := c.GetFilterChainMatch()
		dst, sni, src := cidrKeys(m.GetPrefixRanges()), m.GetServerNames(), cidrKeys(m.GetSourcePrefixRanges())
		taken := func(d, n, s string) bool { return claimed[d+"|"+n+"|"+s] }
		keepSNI := slices.DeleteFunc(slices.Clone(sni), func(n string) bool {
			return anyKey(dst, []string{n}, src, taken)
		})
		keepDst := slices.DeleteFunc(slices.Clone(dst), func(d string) bool {
			return anyKey([]string{d}, keepSNI, src, taken)
		})
		keepSrc := slices.DeleteFunc(slices.Clone(src), func(s string) bool {
			return anyKey(keepDst, keepSNI, []string{s}, taken)
		})
		if len(keepSNI) < len(sni) || len(keepDst) < len(dst) || len(keepSrc) < len(src) {
			if (len(sni) > 0 && len(keepSNI) == 0) || (len(dst) > 0 && len(keepDst) == 0) || (len(src) > 0 && len(keepSrc) == 0) {
				continue
			}
			c = proto.Clone(c).(*listenerv3.FilterChain)
			c.FilterChainMatch.ServerNames = keepSNI
			c.FilterChainMatch.PrefixRanges = keepRanges(m.GetPrefixRanges(), keepDst)
			c.FilterChainMatch.SourcePrefixRanges = keepRanges(m.GetSourcePrefixRanges(), keepSrc)
		}
		if anyKey(keepDst, keepSNI, keepSrc, taken) {
			continue // no match at all, and an earlier chain had none either
		}
		anyKey(keepDst, keepSNI, keepSrc, func(d, n, s string) bool {
			claimed[d+"|"+n+"|"+s] = true
			return false
		})
		out = append(out, c)
	}
	return out
}

// anyKey calls f for every combination of the values (an empty list is the one value "any")
// until it returns true.
func anyKey(dst, sni, src []string, f func(d, n, s string) bool) bool {
	orAny := func(v []string) []string {
		if len(v) == 0 {
			return []string{"*"}
		}
		return v
	}
	for _, d := range orAny(dst) {
		for _, n := range orAny(sni) {
			for _, s := range orAny(src) {
				if f(d, n, s) {
					return true
				}
			}
		}
	}
	return false
}

func cidrKeys(ranges []*corev3.CidrRange) []string {
	out := make([]string, 0, len(ranges))
	for _, r := range ranges {
		out = append(out, r.GetAddressPrefix()+"/"+strconv.FormatUint(uint64(r.GetPrefixLen().GetValue()), 10))
	}
	return out
}

func keepRanges(ranges []*corev3.CidrRange, keep []string) []*corev3.CidrRange {
	var out []*corev3.CidrRange
	for _, r := range ranges {
		if slices.Contains(keep, cidrKeys([]*corev3.CidrRange{r})[0]) {
			out = append(out, r)
		}
	}
	return out
}

// cidrRanges converts IPs and CIDRs (validated by the loader) to Envoy prefix ranges; an IP is
// a single address. Repeats are dropped: Envoy rejects a range listed twice.
func cidrRanges(subnets []string) []*corev3.CidrRange {
	var out []*corev3.CidrRange
	seen := map[netip.Prefix]bool{}
	for _, s := range subnets {
		prefix, err := netip.ParsePrefix(s)
		if err != nil {
			addr, err := netip.ParseAddr(s)
			if err != nil {
				continue // cannot happen after validation; an unparsable subnet matches nothing
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		prefix = prefix.Masked()
		if seen[prefix] {
			continue
		}
		seen[prefix] = true
		out = append(out, &corev3.CidrRange{
			AddressPrefix: prefix.Addr().String(),
			PrefixLen:     wrapperspb.UInt32(uint32(prefix.Bits())),
		})
	}
	return out
}
