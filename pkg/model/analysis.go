package model

import (
	"fmt"
	"maps"
	"slices"
)

// Warning is a problem in configuration that loads but will not do what its author expects:
// the object, the field (a path into it, such as spec.servers[1].tls.credentialName) and what
// pilot does instead, with a code that says which kind of problem it is.
type Warning struct {
	Code      string `json:"code"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Field     string `json:"field,omitempty"`
	Message   string `json:"message"`
}

func (w Warning) String() string {
	if w.Field == "" {
		return fmt.Sprintf("%s %s %s/%s: %s", w.Code, w.Kind, w.Namespace, w.Name, w.Message)
	}
	return fmt.Sprintf("%s %s %s/%s: %s: %s", w.Code, w.Kind, w.Namespace, w.Name, w.Field, w.Message)
}

// Warning codes. Where istioctl analyze reports the same problem, the code is Istio's (from
// its pkg/config/analysis/msg/messages.yaml), so its documentation applies. What only Skiff
// reports, because it is something Skiff does not serve, has a code of its own: SKF and four
// digits, numbered in the order they were introduced and never reused. docs/warnings.md lists
// them all.
const (
	// CodeReferencedResourceNotFound (IST0101): a host, subset or Secret that does not exist.
	CodeReferencedResourceNotFound = "IST0101"
	// CodeConflictingMeshGatewayVirtualServices (IST0109): two VirtualServices for one host.
	CodeConflictingMeshGatewayVirtualServices = "IST0109"
	// CodeConflictingGateways (IST0145): a Gateway server that conflicts with another on a
	// port or host of a gateway proxy both select.
	CodeConflictingGateways = "IST0145"
	// CodeInvalidGatewayCredential (IST0161): a Secret a Gateway names lacks what it needs.
	CodeInvalidGatewayCredential = "IST0161"
	// CodeNotServed (SKF0001): a field or value pilot does not translate; the rest of the
	// object is served, and the message says what happens to this part.
	CodeNotServed = "SKF0001"
	// CodeGatewayWithoutIdentity (SKF0002): an ISTIO_MUTUAL Gateway server that no gateway
	// proxy it selects can serve, because none can be granted a workload certificate.
	CodeGatewayWithoutIdentity = "SKF0002"
)

// Warnings analyses the snapshot as a whole (not proxy by proxy): IST0101 for VirtualService
// destinations that do not exist (analysis_refs.go); IST0109 for two VirtualServices for the
// mesh that name the same host and are visible in a common namespace, of which a sidecar
// applies only one (Istio picks the oldest), so the other's rules silently do nothing there;
// the Gateway servers pilot leaves out (analysis_gateway.go); application probes a sidecar
// cannot answer (SKF0001, appprobes.go); and every field pilot accepts
// but does not translate (analysis_notserved.go). Translation drops nothing silently: what it
// leaves out, a warning here names.
func (s *Snapshot) Warnings() []Warning {
	out := s.referenceWarnings()
	for _, host := range slices.Sorted(maps.Keys(s.virtualServices.exact)) {
		var seen []string
		var seenVisibility []Visibility
		for _, vs := range s.virtualServices.exact[host] {
			if !boundTo(vs, MeshGateway) {
				continue
			}
			v := ParseVisibility(vs.Namespace, vs.Spec.ExportTo)
			for i, other := range seen {
				if overlaps(v, seenVisibility[i]) {
					out = append(out, Warning{
						Code: CodeConflictingMeshGatewayVirtualServices, Kind: "VirtualService", Namespace: vs.Namespace, Name: vs.Name,
						Message: fmt.Sprintf("host %s is also routed for sidecars by VirtualService %s; a sidecar applies only one of them (merge them, or scope them with exportTo)", host, other),
					})
					break
				}
			}
			seen = append(seen, vs.Namespace+"/"+vs.Name)
			seenVisibility = append(seenVisibility, v)
		}
	}
	out = append(out, s.gatewayWarnings()...)
	out = append(out, s.appProbeWarnings()...)
	out = append(out, s.telemetryWarnings()...)
	return append(out, s.notServedWarnings()...)
}

// overlaps reports whether some namespace sees both.
func overlaps(a, b Visibility) bool {
	switch {
	case a.public:
		return b.public || len(b.namespaces) > 0
	case b.public:
		return len(a.namespaces) > 0
	}
	for ns := range a.namespaces {
		if b.namespaces[ns] {
			return true
		}
	}
	return false
}
