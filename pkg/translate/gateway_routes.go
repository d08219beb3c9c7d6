package translate

import (
	"slices"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// The route configurations of a gateway proxy: `http.PORT` for the plaintext HTTP servers of a
// port, `https.PORT.PORTNAME.GATEWAY.NAMESPACE` for each HTTPS server, as istiod's
// buildGatewayHTTPRouteConfig builds them. A virtual host per host that a server and a bound
// VirtualService have in common carries that VirtualService's http routes, translated by the
// sidecar code with the gateway as the match context.

// gatewayRoutes builds a gateway proxy's route configurations, sorted by name.
func gatewayRoutes(snap *model.Snapshot, proxy *model.Proxy) []*routev3.RouteConfiguration {
	merged := mergeGateways(snap, proxy)
	bound := map[string][]*networkingv1.VirtualService{} // by gateway, computed once
	out := make([]*routev3.RouteConfiguration, 0, len(merged.routes))
	for _, name := range sortedKeys(merged.routes) {
		out = append(out, gatewayRouteConfig(snap, proxy, name, merged.routes[name], bound))
	}
	return out
}

// gatewayRouteConfig builds one route configuration for the servers that share it.
func gatewayRouteConfig(snap *model.Snapshot, proxy *model.Proxy, name string, servers []*gatewayServer, bound map[string][]*networkingv1.VirtualService) *routev3.RouteConfiguration {
	vhosts := map[string]*routev3.VirtualHost{}
	// The routes of one VirtualService for one gateway are the same for each of its hosts:
	// translate them once and share them between virtual hosts.
	translated := map[string][]*routev3.Route{}
	for _, gs := range servers {
		vss, ok := bound[gs.gateway]
		if !ok {
			vss = gatewayVirtualServices(snap, proxy, gs.gateway)
			bound[gs.gateway] = vss
		}
		redirect := gs.server.GetTls().GetHttpsRedirect()
		for _, vs := range vss {
			hosts := overlappingHosts(gs, vs)
			if len(hosts) == 0 {
				continue
			}
			// As istiod's RouteOptions.IsTLS: any TLS settings, httpsRedirect included.
			tls := gs.server.GetTls() != nil
			key := gs.gateway + "|" + vs.Namespace + "/" + vs.Name + "|" + strconv.FormatBool(tls)
			routes, ok := translated[key]
			if !ok {
				routes = httpRoutesFor(snap, proxy, vs, gs.port, []string{gs.gateway}, tls)
				translated[key] = routes
			}
			for _, h := range hosts {
				h = strings.ToLower(h)
				vh := vhosts[h]
				if vh == nil {
					vh = gatewayVirtualHost(h, gs.port.Number)
					vh.Routes = make([]*routev3.Route, 0, len(routes))
					vhosts[h] = vh
				}
				vh.Routes = append(vh.Routes, routes...)
				if redirect {
					vh.RequireTls = routev3.VirtualHost_ALL
				}
			}
		}
		if !redirect {
			continue
		}
		// httpsRedirect redirects every host of the server, routed or not.
		for _, h := range gs.sniHosts() {
			h = strings.ToLower(h)
			vh := vhosts[h]
			if vh == nil {
				vh = gatewayVirtualHost(h, gs.port.Number)
				vhosts[h] = vh
			}
			vh.RequireTls = routev3.VirtualHost_ALL
		}
	}

	rc := &routev3.RouteConfiguration{
		Name: name,
		// As for sidecars: a route naming an unknown cluster answers 503 rather than the
		// whole configuration being rejected.
		ValidateClusters: falseValue(),
	}
	if len(vhosts) == 0 {
		// Nothing is bound: every request gets 404, from a virtual host without routes.
		rc.VirtualHosts = []*routev3.VirtualHost{{
			Name:    "blackhole:" + strconv.FormatUint(uint64(servers[0].port.Number), 10),
			Domains: []string{"*"},
		}}
		return rc
	}
	rc.VirtualHosts = make([]*routev3.VirtualHost, 0, len(vhosts))
	for _, vh := range vhosts {
		vh.Routes = catchAllLast(vh.Routes)
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	// Sorted by name, as istiod sorts them (Envoy picks a virtual host by its domains, so the
	// order only keeps the output stable).
	slices.SortFunc(rc.VirtualHosts, func(a, b *routev3.VirtualHost) int { return strings.Compare(a.Name, b.Name) })
	return rc
}

// gatewayVirtualHost is the virtual host of one gateway host: HOST and HOST:PORT (just `*` for
// the wildcard, which covers any port), with Istio's request attempt count header.
func gatewayVirtualHost(host string, port uint32) *routev3.VirtualHost {
	p := strconv.FormatUint(uint64(port), 10)
	domains := []string{host}
	if host != "*" {
		domains = append(domains, host+":"+p)
	}
	return &routev3.VirtualHost{
		Name:                       host + ":" + p,
		Domains:                    domains,
		IncludeRequestAttemptCount: true,
	}
}

// gatewayVirtualServices lists the VirtualServices bound to gateway (NAMESPACE/NAME) that a
// proxy in its namespace may see (exportTo), in configuration order.
func gatewayVirtualServices(snap *model.Snapshot, proxy *model.Proxy, gateway string) []*networkingv1.VirtualService {
	var out []*networkingv1.VirtualService
	for _, vs := range snap.VirtualServices {
		if matchesGateway(vs.Spec.Gateways, vs.Namespace, gateway) &&
			model.ParseVisibility(vs.Namespace, vs.Spec.ExportTo).VisibleTo(proxy.Namespace) {
			out = append(out, vs)
		}
	}
	return out
}

// overlappingHosts are the hosts a server and a VirtualService have in common, as istiod's
// Intersection computes them: of a server host and a VirtualService host, the narrower one when
// one covers the other (`*` and `a.example.com` give `a.example.com`; `*.example.com` and `*`
// give `*.example.com`). Server hosts of another namespace than the VirtualService's do not
// count; VirtualService short names are expanded in its namespace.
func overlappingHosts(gs *gatewayServer, vs *networkingv1.VirtualService) []string {
	var out []string
	add := func(h string) {
		for _, have := range out {
			if have == h {
				return
			}
		}
		out = append(out, h)
	}
	for _, sh := range gs.hostsForNamespace(vs.Namespace) {
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
