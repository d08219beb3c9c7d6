package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// virtualServiceRoutes turns a VirtualService's http section into Envoy routes for one port of
// a proxy: a sidecar's (the mesh gateway), or a gateway proxy's, where a match naming gateways
// applies if it names any Gateway that selects the proxy. svc is the service being routed (nil
// when there is none, as for a gateway host); the routes do not depend on it. A gateway route
// configuration shared by several Gateways should use httpRoutesFor with the one it serves.
func virtualServiceRoutes(snap *model.Snapshot, proxy *model.Proxy, vs *networkingv1.VirtualService, svc *model.Service, port model.Port) []*routev3.Route {
	served := []string{model.MeshGateway}
	if proxy.Type == model.Router {
		served = served[:0]
		for _, gw := range selectedGateways(snap, proxy) {
			served = append(served, gw.Namespace+"/"+gw.Name)
		}
	}
	return httpRoutesFor(snap, proxy, vs, port, served, false)
}

// httpRoutesFor turns the VirtualService's http section into Envoy routes for one port of a
// proxy that serves the given gateways (model.MeshGateway for sidecars, NAMESPACE/NAME for a
// gateway proxy; tls when that gateway server terminates TLS), keeping Istio's order: the first
// matching rule wins, and each match of a rule that can apply here becomes its own route with
// the rule's action. Translation stops after a route that matches everything, as istiod's
// does: nothing after it could be reached.
func httpRoutesFor(snap *model.Snapshot, proxy *model.Proxy, vs *networkingv1.VirtualService, port model.Port, served []string, tls bool) []*routev3.Route {
	var out []*routev3.Route
	for _, rule := range vs.Spec.Http {
		matches := rule.Match
		if len(matches) == 0 {
			matches = []*networking.HTTPMatchRequest{nil} // no match: everything
		}
		var action *routev3.Route // the rule's action, built once for all its matches
		for _, m := range matches {
			if !httpMatchApplies(m, vs.Namespace, proxy, port.Number, served) {
				continue
			}
			match, ok := translateRouteMatch(m)
			if !ok {
				continue
			}
			if action == nil {
				if action = ruleAction(snap, proxy, vs, rule, port, tls); action == nil {
					break // an action this version does not translate (delegate); never guess.
				}
			}
			name := rule.Name
			if m.GetName() != "" {
				name += "." + m.GetName() // istiod's naming, leading dot included when the rule has none
			}
			if out == nil {
				out = make([]*routev3.Route, 0, len(vs.Spec.Http))
			}
			if len(matches) == 1 {
				// The usual rule, with one match (or none): its action is its only route.
				action.Name, action.Match, action.StatPrefix = name, match, m.GetStatPrefix()
				out = append(out, action)
				if isCatchAll(match) {
					return out
				}
				continue
			}
			// The routes of one rule share their action's messages: generated protos are never
			// modified after construction, and a rule's matches differ only in name and match.
			out = append(out, &routev3.Route{
				Name:                    name,
				Match:                   match,
				StatPrefix:              m.GetStatPrefix(),
				Action:                  action.Action,
				Metadata:                action.Metadata,
				RequestHeadersToAdd:     action.RequestHeadersToAdd,
				RequestHeadersToRemove:  action.RequestHeadersToRemove,
				ResponseHeadersToAdd:    action.ResponseHeadersToAdd,
				ResponseHeadersToRemove: action.ResponseHeadersToRemove,
				TypedPerFilterConfig:    action.TypedPerFilterConfig,
			})
			if isCatchAll(match) {
				return out
			}
		}
	}
	return out
}

// forwardingRoute holds the messages of a forwarding route in one allocation instead of three
// (a redirect or direct response leaves the last two unused). A sidecar has a route or two per
// service, and allocation is most of what building them costs; the messages are used through
// pointers into it like any others.
type forwardingRoute struct {
	route  routev3.Route
	action routev3.Route_Route
	ra     routev3.RouteAction
}

// ruleAction builds what every route of a rule carries: its action, header operations, fault
// and CORS configuration and metadata, as a route without name or match. nil when the rule's
// action is not one Skiff translates.
func ruleAction(snap *model.Snapshot, proxy *model.Proxy, vs *networkingv1.VirtualService,
	rule *networking.HTTPRoute, port model.Port, tls bool,
) *routev3.Route {
	parts := &forwardingRoute{}
	out := &parts.route
	out.Metadata = virtualServiceMetadata(snap, vs)
	ops := translateHeaders(rule.Headers)
	ops.applyToRoute(out)
	switch {
	case rule.Redirect != nil:
		redirect := redirectAction(rule.Redirect, port.Number, tls)
		if redirect == nil {
			return nil
		}
		out.Action = redirect
	case rule.DirectResponse != nil:
		out.Action = directResponseAction(rule.DirectResponse)
	case len(rule.Route) > 0:
		parts.action.Route = &parts.ra
		routeAction(&parts.ra, snap, proxy, vs.Namespace, rule, port, ops.authority, out)
		out.Action = &parts.action
	default:
		return nil
	}
	// The fault and CORS filters sit in every connection manager; the route says what they do.
	if f := translateFault(rule.Fault); f != nil {
		setPerFilterConfig(out, wellknown.Fault, MustAny(f))
	}
	if c := translateCORS(rule.CorsPolicy); c != nil {
		setPerFilterConfig(out, wellknown.CORS, MustAny(c))
	}
	return out
}

func setPerFilterConfig(r *routev3.Route, filter string, config *anypb.Any) {
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[filter] = config
}

// virtualServiceMetadataKey keys a VirtualService's route metadata in Snapshot.Derived.
type virtualServiceMetadataKey struct{ vs *networkingv1.VirtualService }

// virtualServiceMetadata is the metadata every route of the VirtualService carries: where it
// came from, exactly as istiod's BuildConfigInfoMetadata records it (the object, not the rule:
// `/apis/networking.istio.io/v1/namespaces/NS/virtual-service/NAME`), so tooling that reads
// istiod's route metadata reads Skiff's. One message per VirtualService, built once per
// snapshot and shared by all its routes of every proxy: a sidecar carries a route or two per
// service, and this string is a quarter of a virtual host's bytes.
func virtualServiceMetadata(snap *model.Snapshot, vs *networkingv1.VirtualService) *corev3.Metadata {
	return snap.Derived(virtualServiceMetadataKey{vs}, func() any {
		return istioMetadata("config", virtualServiceRef(vs))
	}).(*corev3.Metadata)
}

// virtualServiceRef points at the source object, as Istio's config metadata does.
func virtualServiceRef(vs *networkingv1.VirtualService) string {
	return "/apis/networking.istio.io/v1/namespaces/" + vs.Namespace + "/virtual-service/" + vs.Name
}

// routeAction forwards to the rule's destinations, in the order istiod builds it: timeout
// (none unless set: Istio turns off Envoy's 15 s default), the authority from the rule's headers
// and then from its rewrite, path rewrites, mirrors, destinations with their own header
// operations, and the retry policy, which depends on whether the destination hashes.
// It fills action, a new RouteAction.
func routeAction(action *routev3.RouteAction, snap *model.Snapshot, proxy *model.Proxy, ns string, rule *networking.HTTPRoute, port model.Port, authority string, route *routev3.Route) {
	action.Timeout = noTimeout
	if rule.Timeout != nil {
		action.Timeout = rule.Timeout
	}
	if authority != "" {
		setHostRewrite(action, authority)
	}
	applyRewrite(action, rule.Rewrite)
	action.RequestMirrorPolicies = mirrorPolicies(snap, proxy, ns, rule, port)
	setClusters(action, route, snap, proxy, ns, rule.Route, port)
	hashed := len(rule.Route) == 1 && len(action.HashPolicy) > 0
	action.RetryPolicy = retryPolicy(rule.Retries, hashed)
}

// setClusters names one cluster, or weighted clusters when the rule splits traffic. A single
// destination's header operations join the route's; a weighted destination's stay on its
// cluster entry. The hash policy comes from the first destination's DestinationRule.
func setClusters(action *routev3.RouteAction, route *routev3.Route, snap *model.Snapshot, proxy *model.Proxy, ns string, dests []*networking.HTTPRouteDestination, port model.Port) {
	if len(dests) == 1 {
		d := dests[0]
		host, number := destinationHostPort(snap, proxy, ns, d.Destination, port)
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: OutboundClusterName(number, d.Destination.GetSubset(), host)}
		ops := translateHeaders(d.Headers)
		ops.applyToRoute(route)
		// The route's own rewrite wins: Envoy would otherwise apply both, differently for one
		// cluster and for weighted ones.
		if ops.authority != "" && action.HostRewriteSpecifier == nil {
			setHostRewrite(action, ops.authority)
		}
		action.HashPolicy = destinationHashPolicy(snap, proxy, host, number, d.Destination.GetSubset())
		return
	}
	// The entries are allocated together, like forwardingRoute.
	parts := &struct {
		specifier routev3.RouteAction_WeightedClusters
		weighted  routev3.WeightedCluster
	}{}
	entries := make([]clusterWeightParts, len(dests))
	weighted := &parts.weighted
	weighted.Clusters = make([]*routev3.WeightedCluster_ClusterWeight, 0, len(dests))
	for i, d := range dests {
		if d.Weight <= 0 {
			continue // Istio drops destinations with no weight when there are several.
		}
		weighted.Clusters = append(weighted.Clusters, clusterWeight(&entries[i], snap, proxy, ns, d, port, uint32(d.Weight)))
	}
	if len(weighted.Clusters) == 0 {
		// No weights at all: split evenly rather than send nowhere.
		for i, d := range dests {
			weighted.Clusters = append(weighted.Clusters, clusterWeight(&entries[i], snap, proxy, ns, d, port, 1))
		}
	}
	parts.specifier.WeightedClusters = weighted
	action.ClusterSpecifier = &parts.specifier
	host, number := destinationHostPort(snap, proxy, ns, dests[0].Destination, port)
	action.HashPolicy = destinationHashPolicy(snap, proxy, host, number, dests[0].Destination.GetSubset())
}

// clusterWeightParts is one weighted destination's messages, allocated together.
type clusterWeightParts struct {
	entry  routev3.WeightedCluster_ClusterWeight
	weight wrapperspb.UInt32Value
}

// clusterWeight fills parts with one weighted destination and returns its entry.
func clusterWeight(parts *clusterWeightParts, snap *model.Snapshot, proxy *model.Proxy, ns string, d *networking.HTTPRouteDestination, port model.Port, weight uint32) *routev3.WeightedCluster_ClusterWeight {
	parts.weight.Value = weight
	c := &parts.entry
	c.Name = destinationCluster(snap, proxy, ns, d.Destination, port)
	c.Weight = &parts.weight
	translateHeaders(d.Headers).applyToClusterWeight(c)
	return c
}

// destinationCluster names the cluster of a destination: its host expanded in the
// VirtualService's namespace, its port (or the target service's only port, or the port being
// routed), and its subset.
func destinationCluster(snap *model.Snapshot, proxy *model.Proxy, ns string, d *networking.Destination, port model.Port) string {
	host, number := destinationHostPort(snap, proxy, ns, d, port)
	return OutboundClusterName(number, d.GetSubset(), host)
}

func destinationHostPort(snap *model.Snapshot, proxy *model.Proxy, ns string, d *networking.Destination, port model.Port) (string, uint32) {
	host := model.ResolveHost(d.GetHost(), ns)
	number := d.GetPort().GetNumber()
	if number == 0 {
		number = port.Number
		if target := snap.Service(host, proxy.Namespace); target != nil && len(target.Ports) == 1 {
			number = target.Ports[0].Number
		}
	}
	return host, number
}

// destinationHashPolicy is the consistent-hash policy of the DestinationRule of a destination
// (as destinationHostPort resolves it) for its port and subset, which istiod puts on the route
// so that Envoy's hashing cluster hashes what the rule says (a header, cookie, source IP or
// query parameter).
func destinationHashPolicy(snap *model.Snapshot, proxy *model.Proxy, host string, number uint32, subset string) []*routev3.RouteAction_HashPolicy {
	target := model.Port{Number: number}
	if svc := snap.Service(host, proxy.Namespace); svc != nil {
		if p, ok := svc.Port(number); ok {
			target = p
		}
	}
	return HashPolicy(snap.DestinationRuleFor(host, proxy.Namespace), target, subset)
}
