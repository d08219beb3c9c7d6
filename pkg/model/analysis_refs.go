package model

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// referenceWarnings reports IST0101 (ReferencedResourceNotFound) for VirtualService
// destinations: a host no service declares, or a subset no DestinationRule of that host
// defines. Both load fine and then answer every request with a 503 (no healthy upstream, or a
// cluster that does not exist), which is the hardest kind of mistake to see from the outside.
// Also for a Gateway the VirtualService binds to (spec.gateways) that does not exist: its
// routes are then served nowhere.
func (s *Snapshot) referenceWarnings() []Warning {
	var out []Warning
	gateways := map[string]bool{}
	if s.Config != nil {
		for _, gw := range s.Config.Gateways {
			gateways[gw.Namespace+"/"+gw.Name] = true
		}
	}
	for _, vs := range s.VirtualServices {
		warn := func(field, msg string) {
			out = append(out, Warning{Code: CodeReferencedResourceNotFound, Kind: "VirtualService", Namespace: vs.Namespace, Name: vs.Name,
				Field: field, Message: msg})
		}
		for i, ref := range vs.Spec.Gateways {
			if gw := ResolveGatewayName(ref, vs.Namespace); gw != MeshGateway && !gateways[gw] {
				warn(fmt.Sprintf("spec.gateways[%d]", i), fmt.Sprintf("referenced gateway not found: %s: the routes bound to it are served nowhere", gw))
			}
		}
		for field, dest := range destinationsOf(vs) {
			host := ResolveHost(dest.GetHost(), vs.Namespace)
			if s.Service(host, vs.Namespace) == nil {
				warn(field, fmt.Sprintf("referenced host not found: %s", host))
				continue
			}
			if subset := dest.GetSubset(); subset != "" && !s.hasSubset(host, vs.Namespace, subset) {
				warn(field, fmt.Sprintf("referenced host+subset in DestinationRule not found: %s+%s", host, subset))
			}
		}
	}
	return out
}

// ResolveGatewayName turns a gateway reference in a VirtualService in namespace ns into
// NAMESPACE/NAME, as istiod does: `mesh` stays, `name` and `./name` are in ns, `ns/name` is
// explicit, and the legacy `name.ns[.svc.cluster.local]` names ns.
func ResolveGatewayName(ref, ns string) string {
	if ref == MeshGateway {
		return ref
	}
	if refNS, name, ok := strings.Cut(ref, "/"); ok {
		if refNS == "." {
			return ns + "/" + name
		}
		return ref
	}
	name, rest, ok := strings.Cut(ref, ".")
	if !ok {
		return ns + "/" + ref
	}
	refNS, _, _ := strings.Cut(rest, ".")
	return refNS + "/" + name
}

// hasSubset reports whether the DestinationRule a namespace sees for host defines subset.
func (s *Snapshot) hasSubset(host, ns, subset string) bool {
	dr := s.DestinationRuleFor(host, ns)
	if dr == nil {
		return false
	}
	for _, ss := range dr.Spec.GetSubsets() {
		if ss.GetName() == subset {
			return true
		}
	}
	return false
}

// destinationsOf yields every destination of a VirtualService with its field path, in order.
func destinationsOf(vs *networkingv1.VirtualService) func(yield func(string, *networking.Destination) bool) {
	return func(yield func(string, *networking.Destination) bool) {
		for i, r := range vs.Spec.Http {
			for j, d := range r.Route {
				if !yield(fmt.Sprintf("spec.http[%d].route[%d].destination", i, j), d.Destination) {
					return
				}
			}
			if r.Mirror != nil && !yield(fmt.Sprintf("spec.http[%d].mirror", i), r.Mirror) {
				return
			}
			for j, m := range r.Mirrors {
				if !yield(fmt.Sprintf("spec.http[%d].mirrors[%d].destination", i, j), m.Destination) {
					return
				}
			}
		}
		for i, r := range vs.Spec.Tcp {
			for j, d := range r.Route {
				if !yield(fmt.Sprintf("spec.tcp[%d].route[%d].destination", i, j), d.Destination) {
					return
				}
			}
		}
		for i, r := range vs.Spec.Tls {
			for j, d := range r.Route {
				if !yield(fmt.Sprintf("spec.tls[%d].route[%d].destination", i, j), d.Destination) {
					return
				}
			}
		}
	}
}
