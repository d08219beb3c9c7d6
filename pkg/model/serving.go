package model

import "net/netip"

// The endpoints a proxy serves. They give a captured sidecar its inbound ports (the chains of
// virtualInbound and the `inbound|PORT||` clusters), so they are part of its configuration.
// istiod finds them by the proxy's IP (its "service targets"); Skiff first by the workload the
// node ID names, which is exact where names are known (a Pod, a WorkloadEntry), and by IP only
// for a proxy that names none: a VM or a hand-started Envoy that a ServiceEntry lists as an
// endpoint, or whose address an EndpointSlice holds.

// indexByAddress adds the endpoint to the by-IP index. Endpoints whose address is a DNS name
// (DNS-resolved ServiceEntries, ExternalName Services) are no proxy's and are left out.
func (s *Snapshot) indexByAddress(svc *Service, ep *Endpoint) {
	ip, err := netip.ParseAddr(ep.Address)
	if err != nil {
		return
	}
	if s.endpointsByAddress == nil {
		s.endpointsByAddress = map[netip.Addr][]ServiceEndpoint{}
	}
	ip = ip.Unmap()
	s.endpointsByAddress[ip] = append(s.endpointsByAddress[ip], ServiceEndpoint{svc, ep})
}

// ServedEndpoints returns the service endpoints the proxy serves, in service order: those of
// the workload its node ID names (Workload) when there is one, whatever its address; otherwise,
// as istiod finds a proxy's service targets, the endpoints whose address is the proxy's IP
// among the services of the proxy's own namespace.
func (s *Snapshot) ServedEndpoints(p *Proxy) []ServiceEndpoint {
	if w := s.Workload(p.Namespace, p.Name); w != nil {
		return s.EndpointsFrom(w.Source())
	}
	var out []ServiceEndpoint
	for _, se := range s.endpointsByAddress[p.IP.Unmap()] {
		if se.Service.Namespace == p.Namespace {
			out = append(out, se)
		}
	}
	return out
}

// ServesByAddress reports whether ServedEndpoints finds the proxy's endpoints by its IP,
// because its node ID names no workload. Only for such a proxy do endpoint addresses decide
// what it serves, so only its configuration can change with a change that moves endpoints and
// nothing else (EndpointsOnly).
func (s *Snapshot) ServesByAddress(p *Proxy) bool {
	key := p.Namespace + "/" + p.Name
	return s.pods[key] == nil && s.workloads[key] == nil
}
