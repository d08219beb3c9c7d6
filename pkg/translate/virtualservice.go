package translate

import (
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// virtualServiceRoutes turns the VirtualService's http section into Envoy routes for one
// service port, keeping Istio's order: the first matching rule wins, and each match of a rule
// becomes its own route with the rule's action.
func virtualServiceRoutes(snap *model.Snapshot, proxy *model.Proxy, vs *networkingv1.VirtualService, svc *model.Service, port model.Port) []*routev3.Route {
	var out []*routev3.Route
	for i, rule := range vs.Spec.Http {
		action := routeAction(snap, proxy, vs, rule, port)
		if action == nil {
			continue // an action this version does not translate yet; never guess.
		}
		matches := rule.Match
		if len(matches) == 0 {
			matches = []*networking.HTTPMatchRequest{nil} // no match: everything
		}
		for _, m := range matches {
			match, ok := routeMatch(m, proxy, port.Number)
			if !ok {
				continue
			}
			out = append(out, &routev3.Route{
				Name:     rule.Name,
				Match:    match,
				Action:   action,
				Metadata: IstioMetadata(map[string]string{"config": virtualServiceRef(vs, i)}),
			})
		}
	}
	return out
}

// virtualServiceRef points at the rule in the source object, as Istio's route metadata does.
func virtualServiceRef(vs *networkingv1.VirtualService, rule int) string {
	return fmt.Sprintf("/apis/networking.istio.io/v1/namespaces/%s/virtual-service/%s#http[%d]", vs.Namespace, vs.Name, rule)
}

// routeAction forwards to the rule's destinations. It returns nil for rules whose action is not
// a route (redirect, directResponse, delegate), which the translation leaves out.
func routeAction(snap *model.Snapshot, proxy *model.Proxy, vs *networkingv1.VirtualService, rule *networking.HTTPRoute, port model.Port) *routev3.Route_Route {
	if len(rule.Route) == 0 {
		return nil
	}
	action := &routev3.RouteAction{
		Timeout:     Duration(0), // Istio disables Envoy's 15 s default unless the rule sets one.
		RetryPolicy: retryPolicy(rule.Retries),
	}
	if rule.Timeout != nil {
		action.Timeout = rule.Timeout
	}
	setClusters(action, snap, proxy, vs.Namespace, rule.Route, port)
	return &routev3.Route_Route{Route: action}
}

// setClusters names one cluster, or weighted clusters when the rule splits traffic.
func setClusters(action *routev3.RouteAction, snap *model.Snapshot, proxy *model.Proxy, ns string, dests []*networking.HTTPRouteDestination, port model.Port) {
	if len(dests) == 1 {
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: destinationCluster(snap, proxy, ns, dests[0].Destination, port)}
		return
	}
	weighted := &routev3.WeightedCluster{}
	for _, d := range dests {
		if d.Weight <= 0 {
			continue // Istio drops destinations with no weight when there are several.
		}
		weighted.Clusters = append(weighted.Clusters, &routev3.WeightedCluster_ClusterWeight{
			Name:   destinationCluster(snap, proxy, ns, d.Destination, port),
			Weight: uint32Value(uint32(d.Weight)),
		})
	}
	if len(weighted.Clusters) == 0 {
		// No weights at all: split evenly rather than send nowhere.
		for _, d := range dests {
			weighted.Clusters = append(weighted.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name:   destinationCluster(snap, proxy, ns, d.Destination, port),
				Weight: uint32Value(1),
			})
		}
	}
	action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: weighted}
}

// destinationCluster names the cluster of a destination: its host expanded in the
// VirtualService's namespace, its port (or the target service's only port, or the port being
// routed), and its subset.
func destinationCluster(snap *model.Snapshot, proxy *model.Proxy, ns string, d *networking.Destination, port model.Port) string {
	host := model.ResolveHost(d.GetHost(), ns)
	number := d.GetPort().GetNumber()
	if number == 0 {
		number = port.Number
		if target := snap.Service(host, proxy.Namespace); target != nil && len(target.Ports) == 1 {
			number = target.Ports[0].Number
		}
	}
	return OutboundClusterName(number, d.GetSubset(), host)
}
