package translate

import (
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

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
	plans, own := PlanOutboundRoutes(snap, proxy)
	out := make([]*routev3.RouteConfiguration, 0, len(plans)+len(own))
	for _, p := range plans {
		rc := p.Config
		rc.VirtualHosts = make([]*routev3.VirtualHost, 0, len(p.Hosts)+1)
		for _, h := range p.Hosts {
			rc.VirtualHosts = append(rc.VirtualHosts, h.Build(snap, proxy))
		}
		rc.VirtualHosts = append(rc.VirtualHosts, p.CatchAll)
		if size := maxDirectResponseBody(rc.VirtualHosts); size > 0 {
			rc.MaxDirectResponseBodySizeBytes = uint32Value(size)
		}
		out = append(out, rc)
	}
	return append(out, own...)
}

// RouteConfigPlan is a sidecar's outbound route configuration for one port before its
// services' virtual hosts are built: what they will be is known, and cheap to know, before
// their routes are translated. Pilot uses it to translate, on a change of VirtualServices
// alone, only the virtual hosts whose VirtualService changed (a virtual host depends on the
// snapshot only through its service, its domains and the VirtualService that routes it).
type RouteConfigPlan struct {
	// Config is the configuration without its virtual hosts and without
	// max_direct_response_body_size_bytes, which follows from them (DirectResponseBodyLimit).
	Config *routev3.RouteConfiguration
	// Hosts are the services' virtual hosts, in order; CatchAll comes after them.
	Hosts    []VirtualHostPlan
	CatchAll *routev3.VirtualHost
}

// VirtualHostPlan is one service port's virtual host in a RouteConfigPlan.
type VirtualHostPlan struct {
	Name    string
	Service *model.Service
	Port    model.Port
	Domains []string
	// VirtualService routes it; nil when none applies to the service.
	VirtualService *networkingv1.VirtualService
}

// PlanOutboundRoutes plans a sidecar's outbound route configurations, one per HTTP port number,
// in order; own are the route configurations of sniffed service ports on listeners of their
// own, built in full.
func PlanOutboundRoutes(snap *model.Snapshot, proxy *model.Proxy) (plans []RouteConfigPlan, own []*routev3.RouteConfiguration) {
	byPort := map[uint32][]*model.Service{}
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

	plans = make([]RouteConfigPlan, 0, len(numbers))
	for _, n := range numbers {
		p := RouteConfigPlan{
			Config: &routev3.RouteConfiguration{
				Name: RouteConfigName(n),
				// A route may name a cluster this proxy does not know (a typo in a destination);
				// Envoy should answer 503 for that route, not reject the whole configuration.
				ValidateClusters: noClusterValidation,
				// As istiod's sidecars: a Host header's port is ignored when choosing the virtual
				// host (the listener already chose the port), so a service's domains need no
				// ":PORT" forms, which halves them.
				IgnorePortInHostMatching: true,
			},
			Hosts:    make([]VirtualHostPlan, 0, len(byPort[n])),
			CatchAll: catchAllVirtualHost(snap.RegistryOnly(proxy)),
		}
		// Each service has about five domains; sized once, the set does not grow while filling.
		claimed := make(map[string]struct{}, 5*len(byPort[n]))
		domains := make([]string, 0, 5*len(byPort[n]))
		for _, svc := range byPort[n] {
			port, _ := svc.Port(n)
			start := len(domains)
			domains = serviceDomains(svc, proxy, domains)
			domains = domains[:start+len(unclaimed(domains[start:], claimed))]
			if len(domains) == start {
				continue // every name it has is another service's
			}
			p.Hosts = append(p.Hosts, planVirtualHost(snap, proxy, svc, port, slices.Clip(domains[start:])))
		}
		plans = append(plans, p)
	}
	slices.SortFunc(own, func(a, b *routev3.RouteConfiguration) int { return strings.Compare(a.Name, b.Name) })
	return plans, own
}

// DirectResponseBodyLimit is what a route configuration holding vh needs in
// max_direct_response_body_size_bytes for vh's direct responses (0: nothing); a configuration
// needs the largest of its virtual hosts' limits.
func DirectResponseBodyLimit(vh *routev3.VirtualHost) uint32 {
	return maxDirectResponseBody([]*routev3.VirtualHost{vh})
}

// sniffedRouteConfig is the route configuration of a sniffed service port on a listener of its
// own, istiod's: the service's virtual host alone, for any Host (the listener already chose the
// service), and no catch-all.
func sniffedRouteConfig(snap *model.Snapshot, proxy *model.Proxy, svc *model.Service, port model.Port) *routev3.RouteConfiguration {
	vh := planVirtualHost(snap, proxy, svc, port, []string{"*"}).Build(snap, proxy)
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

// serviceVirtualHostParts is a sidecar virtual host with room for its usual routes, allocated
// at once: a sidecar has one per service.
type serviceVirtualHostParts struct {
	vh     routev3.VirtualHost
	routes [2]*routev3.Route
}

// Build translates the virtual host: routed by its VirtualService if one applies, else
// straight to the service's cluster.
func (h VirtualHostPlan) Build(snap *model.Snapshot, proxy *model.Proxy) *routev3.VirtualHost {
	svc, port := h.Service, h.Port
	parts := &serviceVirtualHostParts{}
	vh := &parts.vh
	vh.Name = h.Name
	vh.Domains = h.Domains
	vh.IncludeRequestAttemptCount = true
	if h.VirtualService != nil {
		vh.Routes = httpRoutesFor(snap, proxy, h.VirtualService, port, meshOnly, false, parts.routes[:0])
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

// planVirtualHost plans one service port's virtual host for domains.
func planVirtualHost(snap *model.Snapshot, proxy *model.Proxy, svc *model.Service, port model.Port, domains []string) VirtualHostPlan {
	return VirtualHostPlan{
		Name:           VirtualHostName(svc.Hostname, port.Number),
		Service:        svc,
		Port:           port,
		Domains:        domains,
		VirtualService: snap.VirtualServiceFor(svc.Hostname, proxy.Namespace, model.MeshGateway),
	}
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
