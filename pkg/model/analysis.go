package model

import (
	"fmt"
	"maps"
	"slices"
)

// Warning is a problem in configuration that loads but will not do what its author expects,
// with the code of the istioctl analyze message that reports the same thing, or, where
// istioctl has none, a code of Skiff's own (SKF...).
type Warning struct {
	Code      string `json:"code"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Message   string `json:"message"`
}

func (w Warning) String() string {
	return fmt.Sprintf("%s %s %s/%s: %s", w.Code, w.Kind, w.Namespace, w.Name, w.Message)
}

// Warnings analyses the snapshot: IST0101 for VirtualService destinations that do not exist
// (analysis_refs.go), IST0109 for two VirtualServices for the mesh that name the same host
// and are visible in a common namespace (a sidecar applies only one of them, Istio picks the
// oldest, so the other's rules silently do nothing there), and SKF0001 for application probes
// a sidecar cannot answer (appprobes.go).
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
						Code: "IST0109", Kind: "VirtualService", Namespace: vs.Namespace, Name: vs.Name,
						Message: fmt.Sprintf("host %s is also routed for sidecars by VirtualService %s; a sidecar applies only one of them (merge them, or scope them with exportTo)", host, other),
					})
					break
				}
			}
			seen = append(seen, vs.Namespace+"/"+vs.Name)
			seenVisibility = append(seenVisibility, v)
		}
	}
	return append(out, s.appProbeWarnings()...)
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
