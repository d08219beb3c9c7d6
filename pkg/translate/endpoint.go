package translate

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Endpoints builds one ClusterLoadAssignment per EDS cluster of the mesh (every port of every
// STATIC service, and every subset of it). They do not depend on the proxy, so pilot keeps one
// copy for all proxies and re-sends only the assignments that change.
func Endpoints(snap *model.Snapshot) []*endpointv3.ClusterLoadAssignment {
	var out []*endpointv3.ClusterLoadAssignment
	// Several namespaces may declare one host; the first declaration wins.
	seen := map[string]bool{}
	add := func(cla *endpointv3.ClusterLoadAssignment) {
		if !seen[cla.ClusterName] {
			seen[cla.ClusterName] = true
			out = append(out, cla)
		}
	}
	for _, svc := range snap.Services {
		if svc.Resolution != networking.ServiceEntry_STATIC {
			continue
		}
		// Subsets are looked up as the service's own namespace sees the rules.
		dr := snap.DestinationRuleFor(svc.Hostname, svc.Namespace)
		for _, port := range svc.Ports {
			if port.Protocol == model.UDP {
				continue
			}
			add(loadAssignment(snap, OutboundClusterName(port.Number, "", svc.Hostname), svc, port, nil))
			if dr == nil {
				continue
			}
			for _, subset := range dr.Spec.Subsets {
				name := OutboundClusterName(port.Number, subset.Name, svc.Hostname)
				add(loadAssignment(snap, name, svc, port, subset.Labels))
			}
		}
	}
	return out
}

// loadAssignment groups the service's endpoints that match selector by locality, in the order
// they were declared.
func loadAssignment(snap *model.Snapshot, name string, svc *model.Service, port model.Port, selector map[string]string) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	byLocality := map[string]*endpointv3.LocalityLbEndpoints{}
	for _, ep := range svc.Endpoints {
		if !ep.MatchesLabels(selector) {
			continue
		}
		group, ok := byLocality[ep.Locality]
		if !ok {
			group = &endpointv3.LocalityLbEndpoints{Locality: parseLocality(ep.Locality)}
			byLocality[ep.Locality] = group
			cla.Endpoints = append(cla.Endpoints, group)
		}
		lb := lbEndpoint(ep.Address, ep.PortFor(port), ep.Weight)
		lb.Metadata = endpointMetadata(snap, svc, ep)
		group.LbEndpoints = append(group.LbEndpoints, lb)
	}
	return cla
}

func lbEndpoint(address string, port, weight uint32) *endpointv3.LbEndpoint {
	lb := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: SocketAddress(address, port),
	}}}
	if weight > 0 {
		lb.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	return lb
}

// parseLocality reads Istio's "region/zone/subzone" form.
func parseLocality(s string) *corev3.Locality {
	if s == "" {
		return nil
	}
	parts := strings.SplitN(s, "/", 3)
	parts = append(parts, "", "")
	return &corev3.Locality{Region: parts[0], Zone: parts[1], SubZone: parts[2]}
}
