package model

import (
	"fmt"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// referenceWarnings reports IST0101 (ReferencedResourceNotFound) for VirtualService
// destinations: a host no service declares, or a subset no DestinationRule of that host
// defines. Both load fine and then answer every request with a 503 (no healthy upstream, or a
// cluster that does not exist), which is the hardest kind of mistake to see from the outside.
func (s *Snapshot) referenceWarnings() []Warning {
	var out []Warning
	for _, vs := range s.VirtualServices {
		warn := func(field, msg string) {
			out = append(out, Warning{Code: CodeReferencedResourceNotFound, Kind: "VirtualService", Namespace: vs.Namespace, Name: vs.Name,
				Field: field, Message: msg})
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
