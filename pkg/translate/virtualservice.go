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

// httpRoutesFor turns the VirtualService's http section into Envoy routes for one port of a
// proxy that serves the given gateways (model.MeshGateway for sidecars, NAMESPACE/NAME for a
// gateway proxy; tls when that gateway server terminates TLS), keeping Istio's order: the first
// matching rule wins, and each match of a rule that can apply here becomes its own route with
// the rule's action. Translation stops after a route that matches everything, as istiod's
// does: nothing after it could be reached. The routes are appended to out (nil: a list of
// their own).
func httpRoutesFor(snap *model.Snapshot, proxy *model.Proxy, vs *networkingv1.VirtualService, port model.Port, served []string, tls bool, out []*routev3.Route) []*routev3.Route {
	var metadata *corev3.Metadata // the VirtualService's, looked up with the first action
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
				if metadata == nil {
					metadata = virtualServiceMetadata(snap, vs)
				}
				if action = ruleAction(snap, proxy, vs.Namespace, metadata, rule, port, tls); action == nil {
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
	route   routev3.Route
	action  routev3.Route_Route
	ra      routev3.RouteAction
	cluster routev3.RouteAction_Cluster // a single destination's
}

// ruleAction builds what every route of a rule carries: its action, header operations, fault
// and CORS configuration and metadata, as a route without name or match. nil when the rule's
// action is not one Skiff translates.
// ns is the VirtualService's namespace and metadata its route metadata.
func ruleAction(snap *model.Snapshot, proxy *model.Proxy, ns string, metadata *corev3.Metadata,
	rule *networking.HTTPRoute, port model.Port, tls bool,
) *routev3.Route {
	parts := &forwardingRoute{}
	out := &parts.route
	out.Metadata = metadata
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
		routeAction(parts, snap, proxy, ns, rule, port, ops.authority)
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
// It fills parts.ra, a new RouteAction, and adds a single destination's header operations to
// parts.route.
func routeAction(parts *forwardingRoute, snap *model.Snapshot, proxy *model.Proxy, ns string, rule *networking.HTTPRoute, port model.Port, authority string) {
	action := &parts.ra
	action.Timeout = noTimeout
	if rule.Timeout != nil {
		action.Timeout = rule.Timeout
	}
	if authority != "" {
		setHostRewrite(action, authority)
	}
	applyRewrite(action, rule.Rewrite)
	action.RequestMirrorPolicies = mirrorPolicies(snap, proxy, ns, rule, port)
	setClusters(parts, snap, proxy, ns, rule.Route, port)
	hashed := len(rule.Route) == 1 && len(action.HashPolicy) > 0
	action.RetryPolicy = retryPolicy(rule.Retries, hashed)
}

// setClusters names one cluster, or weighted clusters when the rule splits traffic. A single
// destination's header operations join the route's; a weighted destination's stay on its
// cluster entry. The hash policy comes from the first destination's DestinationRule.
func setClusters(parts *forwardingRoute, snap *model.Snapshot, proxy *model.Proxy, ns string, dests []*networking.HTTPRouteDestination, port model.Port) {
	action := &parts.ra
	if len(dests) == 1 {
		d := dests[0]
		host, number, target := destinationTarget(snap, proxy, ns, d.Destination, port)
		parts.cluster.Cluster = OutboundClusterName(number, d.Destination.GetSubset(), host)
		action.ClusterSpecifier = &parts.cluster
		ops := translateHeaders(d.Headers)
		ops.applyToRoute(&parts.route)
		// The route's own rewrite wins: Envoy would otherwise apply both, differently for one
		// cluster and for weighted ones.
		if ops.authority != "" && action.HostRewriteSpecifier == nil {
			setHostRewrite(action, ops.authority)
		}
		action.HashPolicy = destinationHashPolicy(snap, proxy, host, number, target, d.Destination.GetSubset())
		return
	}
	weighted := newWeightedClusters(len(dests))
	var resolved splitDestinations
	for _, d := range dests {
		if d.Weight <= 0 {
			continue // Istio drops destinations with no weight when there are several.
		}
		weighted.add(resolved.cluster(snap, proxy, ns, d.Destination, port), d, uint32(d.Weight))
	}
	if len(weighted.weighted.Clusters) == 0 {
		// No weights at all: split evenly rather than send nowhere.
		for _, d := range dests {
			weighted.add(resolved.cluster(snap, proxy, ns, d.Destination, port), d, 1)
		}
	}
	action.ClusterSpecifier = &weighted.specifier
	first := dests[0].Destination
	host, number, target := resolved.firstHost, resolved.firstNumber, resolved.firstService
	if resolved.first != first { // the first destination has no weight
		host, number, target = destinationTarget(snap, proxy, ns, first, port)
	}
	action.HashPolicy = destinationHashPolicy(snap, proxy, host, number, target, first.GetSubset())
}

// splitDestinations resolves the destinations of a weighted split one after another, keeping
// what the split needs again: the first one's target, whose DestinationRule gives the hash
// policy, and the last cluster name, which an entry for the same cluster (a split between
// entries of one subset) shares. It lives on the stack of setClusters.
type splitDestinations struct {
	first        *networking.Destination
	firstHost    string
	firstNumber  uint32
	firstService *model.Service
	last         struct {
		host, subset, name string
		number             uint32
	}
}

// cluster resolves d and names its cluster.
func (r *splitDestinations) cluster(snap *model.Snapshot, proxy *model.Proxy, ns string, d *networking.Destination, port model.Port) string {
	host, number, target := destinationTarget(snap, proxy, ns, d, port)
	subset := d.GetSubset()
	if r.first == nil {
		r.first, r.firstHost, r.firstNumber, r.firstService = d, host, number, target
	}
	if r.last.name == "" || r.last.host != host || r.last.number != number || r.last.subset != subset {
		r.last.host, r.last.number, r.last.subset = host, number, subset
		r.last.name = OutboundClusterName(number, subset, host)
	}
	return r.last.name
}

// weightedClusters is a weighted split's messages. A split between two destinations (a
// canary's 90/10, the usual one) is one allocation: its entries and the list of them are
// arrays here; more destinations allocate their own.
type weightedClusters struct {
	specifier routev3.RouteAction_WeightedClusters
	weighted  routev3.WeightedCluster
	list      [2]*routev3.WeightedCluster_ClusterWeight
	entries   [2]clusterWeightParts
	more      []clusterWeightParts
}

func newWeightedClusters(n int) *weightedClusters {
	w := &weightedClusters{}
	w.specifier.WeightedClusters = &w.weighted
	w.weighted.Clusters = w.list[:0]
	if n > len(w.entries) {
		w.more = make([]clusterWeightParts, 0, n)
		w.weighted.Clusters = make([]*routev3.WeightedCluster_ClusterWeight, 0, n)
	}
	return w
}

// add appends a weighted destination to cluster.
func (w *weightedClusters) add(cluster string, d *networking.HTTPRouteDestination, weight uint32) {
	var parts *clusterWeightParts
	if w.more != nil {
		w.more = append(w.more, clusterWeightParts{})
		parts = &w.more[len(w.more)-1]
	} else {
		parts = &w.entries[len(w.weighted.Clusters)]
	}
	w.weighted.Clusters = append(w.weighted.Clusters, clusterWeight(parts, cluster, d, weight))
}

// clusterWeightParts is one weighted destination's messages, allocated together.
type clusterWeightParts struct {
	entry  routev3.WeightedCluster_ClusterWeight
	weight wrapperspb.UInt32Value
}

// clusterWeight fills parts with one weighted destination, to cluster, and returns its entry.
func clusterWeight(parts *clusterWeightParts, cluster string, d *networking.HTTPRouteDestination, weight uint32) *routev3.WeightedCluster_ClusterWeight {
	parts.weight.Value = weight
	c := &parts.entry
	c.Name = cluster
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

// destinationTarget is destinationHostPort with the service the destination names, as the
// proxy sees it (nil when there is none), which its hash policy reads too: one lookup for both.
func destinationTarget(snap *model.Snapshot, proxy *model.Proxy, ns string, d *networking.Destination, port model.Port) (string, uint32, *model.Service) {
	host := model.ResolveHost(d.GetHost(), ns)
	target := snap.Service(host, proxy.Namespace)
	number := d.GetPort().GetNumber()
	if number == 0 {
		number = port.Number
		if target != nil && len(target.Ports) == 1 {
			number = target.Ports[0].Number
		}
	}
	return host, number, target
}

// destinationHashPolicy is the consistent-hash policy of the DestinationRule of a destination
// (as destinationTarget resolves it: svc is its service, or nil) for its port and subset, which
// istiod puts on the route so that Envoy's hashing cluster hashes what the rule says (a header,
// cookie, source IP or query parameter).
func destinationHashPolicy(snap *model.Snapshot, proxy *model.Proxy, host string, number uint32, svc *model.Service, subset string) []*routev3.RouteAction_HashPolicy {
	target := model.Port{Number: number}
	if svc != nil {
		if p, ok := svc.Port(number); ok {
			target = p
		}
	}
	return HashPolicy(snap.DestinationRuleFor(host, proxy.Namespace), target, subset)
}
