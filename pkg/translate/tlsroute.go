package translate

import (
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// isTLSProtocol: ports whose traffic Envoy forwards still encrypted, told apart by SNI.
func isTLSProtocol(p model.Protocol) bool { return p == model.TLS || p == model.HTTPS }

// tlsRouteChains are the filter chains of a TLS or HTTPS service port: one per tls route match
// that applies to this proxy and port, matching its sniHosts (and destinationSubnets), in
// order, a later match with the same SNI hosts and subnets being unreachable and left out. A
// service without any such match forwards to its own cluster: every connection when the
// listener is the service's own address, else (shared) those whose SNI is the service's
// hostname, as istiod does for a listener on the wildcard address.
func tlsRouteChains(snap *model.Snapshot, proxy *model.Proxy, svc *model.Service, port model.Port, shared bool) []*listenerv3.FilterChain {
	var chains []*listenerv3.FilterChain
	if vs := snap.VirtualServiceFor(svc.Hostname, proxy.Namespace, model.MeshGateway); vs != nil {
		for _, rule := range vs.Spec.Tls {
			if len(rule.Route) == 0 {
				continue
			}
			for _, m := range rule.Match {
				if !l4MatchApplies(m.Port, m.Gateways, m.SourceLabels, m.SourceNamespace, vs.Namespace, proxy, port.Number, meshOnly) {
					continue
				}
				fcm := &listenerv3.FilterChainMatch{
					ServerNames:  sniNames(m.SniHosts, vs.Namespace),
					PrefixRanges: cidrRanges(m.DestinationSubnets),
				}
				if len(fcm.ServerNames) == 0 && len(fcm.PrefixRanges) == 0 {
					fcm = nil // `*`: every connection
				}
				chains = append(chains, vsFilterChain(vs, fcm, tcpRouteProxy(snap, proxy, vs, rule.Route, port)))
			}
		}
	}
	if len(chains) > 0 {
		return chains // uniqueFilterChains drops the unreachable repeats
	}
	var fcm *listenerv3.FilterChainMatch
	if shared {
		fcm = &listenerv3.FilterChainMatch{ServerNames: []string{svc.Hostname}}
	}
	cluster := OutboundClusterName(port.Number, "", svc.Hostname)
	return []*listenerv3.FilterChain{{FilterChainMatch: fcm, Filters: []*listenerv3.Filter{TCPProxy(cluster, cluster, telemetryFor(snap, proxy))}}}
}

// sniNames resolves SNI hosts as istiod resolves a VirtualService's hosts (short names in its
// namespace), sorted so equal sets compare equal. `*` matches any name, which Envoy expresses
// as no server_names at all.
func sniNames(hosts []string, ns string) []string {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		if h == "*" {
			return nil
		}
		out = append(out, model.ResolveHost(h, ns))
	}
	slices.Sort(out)
	return slices.Compact(out)
}
