package model

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// Protocol is an Istio port protocol, upper-cased.
type Protocol string

// The protocols Istio names on ports.
const (
	HTTP  Protocol = "HTTP"
	HTTP2 Protocol = "HTTP2"
	GRPC  Protocol = "GRPC"
	HTTPS Protocol = "HTTPS"
	TLS   Protocol = "TLS"
	TCP   Protocol = "TCP"
	Mongo Protocol = "MONGO"
	UDP   Protocol = "UDP"
	// Unsupported is a port whose protocol nothing declares (Istio's protocol.Unsupported,
	// spelled as istiod spells it): a ServiceEntry port without protocol, a Kubernetes port
	// whose appProtocol and name say nothing. Sidecars sniff it: Envoy's http_inspector tells
	// HTTP from anything else on each connection (IsSniffed).
	Unsupported Protocol = "UnsupportedProtocol"
)

// ParseProtocol upper-cases an Istio protocol name; an empty name is Unsupported, which
// sidecars sniff, as istiod does with a ServiceEntry port that names no protocol.
func ParseProtocol(s string) Protocol {
	if s == "" {
		return Unsupported
	}
	return Protocol(strings.ToUpper(s))
}

// IsHTTP reports whether Envoy should terminate the protocol with an HTTP connection manager.
func (p Protocol) IsHTTP() bool { return p == HTTP || p == HTTP2 || p == GRPC }

// IsSniffed reports whether the protocol is unknown, so that a sidecar detects HTTP on each
// connection (istiod's ListenerProtocolAuto) and forwards anything else as TCP.
func (p Protocol) IsSniffed() bool { return p == Unsupported }

// IsHTTP2 reports whether upstream connections must speak HTTP/2.
func (p Protocol) IsHTTP2() bool { return p == HTTP2 || p == GRPC }

// Port is one port of a service.
type Port struct {
	Name       string
	Number     uint32
	Protocol   Protocol
	TargetPort uint32
}

// Endpoint is one workload instance behind a service, from a ServiceEntry's inline endpoints or
// a WorkloadEntry its workloadSelector picks.
type Endpoint struct {
	Address        string
	Ports          map[string]uint32 // by service port name
	Labels         map[string]string
	ServiceAccount string
	Network        string
	Locality       string
	Weight         uint32
	// Source names the object that declared the endpoint, for debugging output.
	Source string
}

// PortFor is the port the endpoint listens on for a service port: its own mapping by port name,
// else the port's targetPort, else the service port number (ServiceEntry semantics).
func (e *Endpoint) PortFor(p Port) uint32 {
	if n, ok := e.Ports[p.Name]; ok && n != 0 {
		return n
	}
	if p.TargetPort != 0 {
		return p.TargetPort
	}
	return p.Number
}

// MatchesLabels reports whether every selector label is present with the same value.
func (e *Endpoint) MatchesLabels(selector map[string]string) bool {
	return labelsMatch(e.Labels, selector)
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Service is one host of a ServiceEntry (a ServiceEntry with several hosts yields several services).
type Service struct {
	Hostname   string
	Namespace  string
	Addresses  []string
	Ports      []Port
	Resolution networking.ServiceEntry_Resolution
	ExportTo   Visibility
	Endpoints  []*Endpoint
	// Source is KIND/NAMESPACE/NAME of the declaring object.
	Source string
}

// Port returns the service port with the given number.
func (s *Service) Port(number uint32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Number == number {
			return p, true
		}
	}
	return Port{}, false
}

// Visibility is a parsed exportTo list: "*" (or empty) is everyone, "." the object's own
// namespace, anything else a namespace name.
type Visibility struct {
	public     bool
	namespaces map[string]bool
}

// ParseVisibility resolves exportTo for an object in namespace ns.
func ParseVisibility(ns string, exportTo []string) Visibility {
	if len(exportTo) == 0 {
		return Visibility{public: true}
	}
	v := Visibility{namespaces: map[string]bool{}}
	for _, e := range exportTo {
		switch e {
		case "*":
			v.public = true
		case ".":
			v.namespaces[ns] = true
		case "~":
			// Exported to nobody.
		default:
			v.namespaces[e] = true
		}
	}
	return v
}

// VisibleTo reports whether a proxy in namespace ns may see the object.
func (v Visibility) VisibleTo(ns string) bool { return v.public || v.namespaces[ns] }

// String shows the visibility in exportTo form for debug output.
func (v Visibility) String() string {
	if v.public {
		return "*"
	}
	return fmt.Sprint(sortedKeys(v.namespaces))
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
