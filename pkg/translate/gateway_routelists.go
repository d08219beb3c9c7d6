package translate

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// The route lists of one gateway proxy, shared between its route configurations. A
// VirtualService bound to a Gateway with an HTTP server on 80 and HTTPS servers on 443 is in
// http.80 and in each https.443.* configuration; istiod translates it for each (its route
// cache key holds the port). Its routes are the same on every port unless something in them
// reads the port, so they are translated once per Gateway and VirtualService, and the route
// configurations share the messages (built messages are never modified). For istiod's
// 1,000-Gateway benchmark this halves the routes translated.

// routeListKey identifies the routes one VirtualService gives on one Gateway. port is the
// server's port, or 0 when the routes cannot depend on it (portIndependent); tls says whether
// the server terminates TLS, which only redirects read (istiod's RouteOptions.IsTLS), so it is
// false for routes without one. istiod leaves TLS out of its own cache key and would reuse the
// first server's translation for the others.
type routeListKey struct {
	gateway string
	vs      *networkingv1.VirtualService
	port    uint32
	tls     bool
}

// gatewayRouteLists translates each route list of a gateway proxy once, for all its route
// configurations.
type gatewayRouteLists struct {
	snap  *model.Snapshot
	proxy *model.Proxy
	lists map[routeListKey][]*routev3.Route
	// portFree caches portIndependent per VirtualService.
	portFree map[*networkingv1.VirtualService]bool
}

// newGatewayRouteLists prepares for about bindings route lists: sized once, the maps do not
// grow (and leave their old tables behind) list by list.
func newGatewayRouteLists(snap *model.Snapshot, proxy *model.Proxy, bindings int) *gatewayRouteLists {
	return &gatewayRouteLists{
		snap:     snap,
		proxy:    proxy,
		lists:    make(map[routeListKey][]*routev3.Route, bindings),
		portFree: make(map[*networkingv1.VirtualService]bool, bindings),
	}
}

// key is the routeListKey of vs on a server of gateway on port, with or without TLS.
func (l *gatewayRouteLists) key(gateway string, vs *networkingv1.VirtualService, port uint32, tls bool) routeListKey {
	free, ok := l.portFree[vs]
	if !ok {
		free = portIndependent(l.snap, l.proxy.Namespace, vs)
		l.portFree[vs] = free
	}
	if free {
		port, tls = 0, false
	}
	return routeListKey{gateway: gateway, vs: vs, port: port, tls: tls}
}

// routes returns the routes vs gives on server gs (whose key is key), translating them the
// first time.
func (l *gatewayRouteLists) routes(key routeListKey, gs *gatewayServer, tls bool) []*routev3.Route {
	routes, ok := l.lists[key]
	if !ok {
		routes = httpRoutesFor(l.snap, l.proxy, key.vs, gs.port, []string{gs.gateway}, tls, nil)
		l.lists[key] = routes
	}
	return routes
}

// portIndependent reports whether httpRoutesFor gives vs the same routes on every port of a
// gateway proxy in namespace ns, and with or without TLS. The port is read by a match that
// names one, by redirects (a derived port, dropping :80 or :443 by scheme, which TLS decides),
// and by destinations and mirrors without a port, whose cluster takes the routed port unless
// the destination service has exactly one. Anything else in a route comes from the rule.
func portIndependent(snap *model.Snapshot, ns string, vs *networkingv1.VirtualService) bool {
	fixed := func(d *networking.Destination) bool {
		if d == nil || d.GetPort().GetNumber() != 0 { // no mirror, or a port of its own
			return true
		}
		target := snap.Service(model.ResolveHost(d.GetHost(), vs.Namespace), ns)
		return target != nil && len(target.Ports) == 1
	}
	for _, rule := range vs.Spec.Http {
		if rule.Redirect != nil {
			return false
		}
		for _, m := range rule.Match {
			if m.GetPort() != 0 {
				return false
			}
		}
		for _, d := range rule.Route {
			// A destination without a host (which validation rejects) would be routed to the
			// port too.
			if d.GetDestination() == nil || !fixed(d.GetDestination()) {
				return false
			}
		}
		if !fixed(rule.Mirror) {
			return false
		}
		for _, m := range rule.Mirrors {
			if !fixed(m.GetDestination()) {
				return false
			}
		}
	}
	return true
}
