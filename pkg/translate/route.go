package translate

import (
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// noClusterValidation is validate_clusters: false, which every route configuration of a
// sidecar or gateway carries: shared, like noTimeout (a thousand-server gateway has a
// thousand route configurations), and never modified.
var noClusterValidation = falseValue()

// outboundRouteConfigs builds one route configuration per HTTP port number the proxy sees, named
// by the number ("80"), with a virtual host per service on that port and the catch-all last.
// A sniffed service port is in its port's configuration when it shares its listener, and has
// one of its own, `HOST:PORT`, when its listener is its own (see sniffing.go).
func outboundRouteConfigs(snap *model.Snapshot, proxy *model.Proxy) []*routev3.RouteConfiguration {
	byPort := map[uint32][]*model.Service{}
	var own []*routev3.RouteConfiguration
	for _, svc := range snap.ServicesFor(proxy) {
		for _, port := range svc.Ports {
			switch {
			case port.Protocol.IsHTTP():
				byPort[port.Number] = append(byPort[port.Number], svc)
			case port.Protocol.IsSniffed():
				if _, ownAddress := ownListenerAddress(proxy, svc); ownAddress {
					own = append(own, sniffedRouteConfig(snap, proxy, svc, port))
				} else {
					byPort[port.Number] = append(byPort[port.Number], svc)
				}
			}
		}
	}
	numbers := make([]uint32, 0, len(byPort))
	for n := range byPort {
		numbers = append(numbers, n)
	}
	slices.Sort(numbers)

	out := make([]*routev3.RouteConfiguration, 0, len(numbers))
	for _, n := range numbers {
		rc := &routev3.RouteConfiguration{
			Name: RouteConfigName(n),
			// A route may name a cluster this proxy does not know (a typo in a destination);
			// Envoy should answer 503 for that route, not reject the whole configuration.
			ValidateClusters: noClusterValidation,
			// As istiod's sidecars: a Host header's port is ignored when choosing the virtual
			// host (the listener already chose the port), so a service's domains need no
			// ":PORT" forms, which halves them.
			IgnorePortInHostMatching: true,
		}
		// Each service has about five domains; sized once, the set does not grow while filling.
		claimed := make(map[string]struct{}, 5*len(byPort[n]))
		rc.VirtualHosts = make([]*routev3.VirtualHost, 0, len(byPort[n])+1)
		for _, svc := range byPort[n] {
			port, _ := svc.Port(n)
			if vh := serviceVirtualHost(snap, proxy, svc, port, claimed); len(vh.Domains) > 0 {
				rc.VirtualHosts = append(rc.VirtualHosts, vh)
			}
		}
		rc.VirtualHosts = append(rc.VirtualHosts, catchAllVirtualHost(snap.RegistryOnly(proxy)))
		if size := maxDirectResponseBody(rc.VirtualHosts); size > 0 {
			rc.MaxDirectResponseBodySizeBytes = uint32Value(size)
		}
		out = append(out, rc)
	}
	slices.SortFunc(own, func(a, b *routev3.RouteConfiguration) int { return strings.Compare(a.Name, b.Name) })
	return append(out, own...)
}

// sniffedRouteConfig is the route configuration of a sniffed service port on a listener of its
// own, istiod's: the service's virtual host alone, for any Host (the listener already chose the
// service), and no catch-all.
func sniffedRouteConfig(snap *model.Snapshot, proxy *model.Proxy, svc *model.Service, port model.Port) *routev3.RouteConfiguration {
	vh := serviceVirtualHost(snap, proxy, svc, port, map[string]struct{}{})
	vh.Domains = []string{"*"}
	rc := &routev3.RouteConfiguration{
		Name:                     SniffedRouteConfigName(svc.Hostname, port.Number),
		ValidateClusters:         noClusterValidation,
		IgnorePortInHostMatching: true,
		VirtualHosts:             []*routev3.VirtualHost{vh},
	}
	if size := maxDirectResponseBody(rc.VirtualHosts); size > 0 {
		rc.MaxDirectResponseBodySizeBytes = uint32Value(size)
	}
	return rc
}

// serviceVirtualHostParts is a sidecar virtual host with room for its usual domains and
// routes, allocated at once: a sidecar has one per service.
type serviceVirtualHostParts struct {
	vh      routev3.VirtualHost
	domains [5]string
	routes  [2]*routev3.Route
}

// serviceVirtualHost routes one service port: by its VirtualService if one applies, else
// straight to the service's cluster.
func serviceVirtualHost(snap *model.Snapshot, proxy *model.Proxy, svc *model.Service, port model.Port, claimed map[string]struct{}) *routev3.VirtualHost {
	parts := &serviceVirtualHostParts{}
	vh := &parts.vh
	vh.Name = VirtualHostName(svc.Hostname, port.Number)
	vh.Domains = unclaimed(serviceDomains(svc, proxy, parts.domains[:0]), claimed)
	vh.IncludeRequestAttemptCount = true
	if vs := snap.VirtualServiceFor(svc.Hostname, proxy.Namespace, model.MeshGateway); vs != nil {
		vh.Routes = httpRoutesFor(snap, proxy, vs, port, meshOnly, false, parts.routes[:0])
	}
	if len(vh.Routes) == 0 {
		// No VirtualService, or none of its rules applies to this port and proxy: istiod then
		// routes the service as if it had none.
		r := defaultRoute(OutboundClusterName(port.Number, "", svc.Hostname))
		// As istiod: a DestinationRule's consistent hash applies without a VirtualService too.
		r.GetRoute().HashPolicy = HashPolicy(snap.DestinationRuleFor(svc.Hostname, proxy.Namespace), port, "")
		vh.Routes = append(parts.routes[:0], r)
	}
	hoistDefaultRetry(vh)
	return vh
}

// defaultRoute sends everything to one cluster with Istio's defaults: no timeout, and the
// default retry policy (both shared, see noTimeout).
func defaultRoute(cluster string) *routev3.Route {
	return &routev3.Route{
		Name:  "default",
		Match: matchAll(),
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          noTimeout,
			RetryPolicy:      sharedDefaultRetry,
		}},
	}
}

// catchAllVirtualHost handles requests for hosts the mesh does not know: under ALLOW_ANY
// (Istio's default) they pass to their original destination; under REGISTRY_ONLY they get 502,
// as in Istio.
func catchAllVirtualHost(registryOnly bool) *routev3.VirtualHost {
	if registryOnly {
		return &routev3.VirtualHost{
			Name:    BlockAllVirtualHost,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:   BlockAllVirtualHost,
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}},
			}},
		}
	}
	return &routev3.VirtualHost{
		Name:    AllowAnyVirtualHost,
		Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Name:  AllowAnyVirtualHost,
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: PassthroughCluster},
				Timeout:          noTimeout,
			}},
		}},
	}
}

// serviceDomains are the Host header values that reach a service, as istiod builds them for
// a sidecar: the full name, the short forms a client in the proxy's namespace (or the
// cluster) may use, and the service addresses; the first is the hostname. Ports are left out:
// the route configuration ignores them (IgnorePortInHostMatching).
//
// A sidecar has a virtual host per service, so this runs for every service of every route
// configuration: the short forms are prefixes of the hostname, so nothing is allocated but,
// when out has no room for them, the list. They are appended to out.
func serviceDomains(svc *model.Service, proxy *model.Proxy, out []string) []string {
	out = append(out, svc.Hostname)
	if nameNS, ok := strings.CutSuffix(svc.Hostname, "."+model.DefaultDomainSuffix); ok {
		if name, ns, found := strings.Cut(nameNS, "."); found && !strings.Contains(ns, ".") {
			if ns == proxy.Namespace {
				out = append(out, name)
			}
			// NAME.NS.svc is the hostname up to the suffix's first label.
			out = append(out, nameNS, svc.Hostname[:len(nameNS)+len(".svc")])
		}
	}
	return append(out, svc.Addresses...)
}

// unclaimed drops domains an earlier virtual host of the same route configuration already
// has: Envoy rejects a route configuration in which two virtual hosts share a domain.
func unclaimed(domains []string, claimed map[string]struct{}) []string {
	out := domains[:0]
	for _, d := range domains {
		if _, dup := claimed[d]; !dup {
			claimed[d] = struct{}{}
			out = append(out, d)
		}
	}
	return out
}
