package translate

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// The route configurations of a gateway proxy: `http.PORT` for the plaintext HTTP servers of a
// port, `https.PORT.PORTNAME.GATEWAY.NAMESPACE` for each HTTPS server (both `.BIND` suffixed when
// the server names a bind address), as istiod's buildGatewayHTTPRouteConfig builds them. The
// hosts that a server and a bound VirtualService have in common carry that VirtualService's http
// routes, translated by the sidecar code with the gateway as the match context; hosts with the
// same routes share one virtual host (gateway_vhosts.go).

// gatewayRoutes builds a gateway proxy's route configurations, sorted by name.
func gatewayRoutes(snap *model.Snapshot, proxy *model.Proxy) []*routev3.RouteConfiguration {
	merged := mergeGateways(snap, proxy)
	out := make([]*routev3.RouteConfiguration, 0, len(merged.routes))
	if len(merged.routes) == 0 {
		return out
	}
	bound := bindGatewayVirtualServices(snap, proxy)
	// Each server's VirtualServices, counted once per Gateway: usually a list each.
	bindings, counted := 0, map[string]bool{}
	for _, servers := range merged.routes {
		for _, gs := range servers {
			if !counted[gs.gateway] {
				counted[gs.gateway] = true
				bindings += len(bound[gs.gateway])
			}
		}
	}
	lists := newGatewayRouteLists(snap, proxy, bindings)
	for _, name := range sortedKeys(merged.routes) {
		out = append(out, gatewayRouteConfig(name, merged.routes[name], bound, lists))
	}
	return out
}

// gatewayRouteConfig builds one route configuration for the servers that share it, with route
// lists from lists.
func gatewayRouteConfig(name string, servers []*gatewayServer, bound gatewayBindings, lists *gatewayRouteLists) *routev3.RouteConfiguration {
	hostCount, listCount := 0, 0
	for _, gs := range servers {
		hostCount += len(gs.hosts)
		listCount += len(bound[gs.gateway])
	}
	// Every server of a route configuration listens on one port (the name says which).
	vhosts := newGatewayVHosts(servers[0].port.Number, hostCount, listCount)
	var overlap []string // reused: each server and VirtualService's hosts are bound at once
	for _, gs := range servers {
		redirect := gs.server.GetTls().GetHttpsRedirect()
		// As istiod's RouteOptions.IsTLS: any TLS settings, httpsRedirect included.
		tls := gs.server.GetTls() != nil
		for _, vs := range bound[gs.gateway] {
			overlap = overlappingHosts(gs, vs, overlap[:0])
			if len(overlap) == 0 {
				continue
			}
			key := lists.key(gs.gateway, vs, gs.port.Number, tls)
			id := vhosts.routeList(key, func() []*routev3.Route { return lists.routes(key, gs, tls) })
			for _, h := range overlap {
				vhosts.bind(h, id, redirect)
			}
		}
		if redirect {
			// httpsRedirect redirects every host of the server, routed or not.
			for _, h := range gs.sniHosts() {
				vhosts.redirect(h)
			}
		}
	}

	rc := &routev3.RouteConfiguration{
		Name: name,
		// As for sidecars: a route naming an unknown cluster answers 503 rather than the
		// whole configuration being rejected.
		ValidateClusters: noClusterValidation,
		VirtualHosts:     vhosts.virtualHosts(),
	}
	// As for sidecars: Envoy rejects the whole configuration when a direct response body is
	// over its 4 KiB default.
	if size := maxDirectResponseBody(rc.VirtualHosts); size > 0 {
		rc.MaxDirectResponseBodySizeBytes = uint32Value(size)
	}
	if len(rc.VirtualHosts) == 0 {
		// Nothing is bound: every request gets 404, from a virtual host without routes.
		rc.VirtualHosts = []*routev3.VirtualHost{{
			Name:    "blackhole:" + vhosts.port,
			Domains: []string{"*"},
		}}
	}
	return rc
}

// overlappingHosts are the hosts a server and a VirtualService have in common, as istiod's
// Intersection computes them: of a server host and a VirtualService host, the narrower one when
// one covers the other (`*` and `a.example.com` give `a.example.com`; `*.example.com` and `*`
// give `*.example.com`). Server hosts of another namespace than the VirtualService's do not
// count; VirtualService short names are expanded in its namespace. They are appended to out.
func overlappingHosts(gs *gatewayServer, vs *networkingv1.VirtualService, out []string) []string {
	add := func(h string) {
		for _, have := range out {
			if have == h {
				return
			}
		}
		out = append(out, h)
	}
	for _, sh := range gs.hosts {
		// A host without a namespace binds VirtualServices of any namespace; `ns/host` only
		// those of ns.
		if hostNS, name, ok := strings.Cut(sh, "/"); ok {
			if hostNS != vs.Namespace {
				continue
			}
			sh = name
		}
		for _, vh := range vs.Spec.Hosts {
			vh = model.ResolveHost(vh, vs.Namespace)
			switch {
			case hostSubsetOf(sh, vh):
				add(sh)
			case hostSubsetOf(vh, sh):
				add(vh)
			}
		}
	}
	return out
}

// hostSubsetOf reports whether every name h covers is covered by o, as Istio's Name.SubsetOf:
// a wildcard is a subset only of an equal or wider wildcard.
func hostSubsetOf(h, o string) bool {
	hWild, oWild := strings.HasPrefix(h, "*"), strings.HasPrefix(o, "*")
	switch {
	case hWild && oWild:
		return len(h) >= len(o) && strings.HasSuffix(h[1:], o[1:])
	case hWild:
		return false
	case oWild:
		return strings.HasSuffix(h, o[1:])
	}
	return h == o
}

// catchAllLast moves routes that match every request to the end, keeping the order of the
// rest, as istiod does for gateway virtual hosts: when several VirtualServices share a host, a
// catch-all of the first must not hide the specific routes of the others.
func catchAllLast(routes []*routev3.Route) []*routev3.Route {
	// Usually there is nothing to move (one VirtualService's routes end at their first
	// catch-all): return the list itself rather than a copy.
	sorted, seenCatchAll := true, false
	for _, r := range routes {
		catchAll := isCatchAll(r.GetMatch())
		if seenCatchAll && !catchAll {
			sorted = false
			break
		}
		seenCatchAll = seenCatchAll || catchAll
	}
	if sorted {
		return routes
	}
	var tail []*routev3.Route
	out := routes[:0:0]
	for _, r := range routes {
		if isCatchAll(r.GetMatch()) {
			tail = append(tail, r)
		} else {
			out = append(out, r)
		}
	}
	if len(tail) == 0 {
		return routes
	}
	return append(out, tail...)
}

// sortedUnique returns a sorted copy of hosts without duplicates.
func sortedUnique(hosts []string) []string {
	m := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		m[h] = true
	}
	return sortedKeys(m)
}
