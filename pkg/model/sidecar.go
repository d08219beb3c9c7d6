package model

import (
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// RootNamespace holds mesh-wide defaults, such as a Sidecar without selector that applies to
// namespaces that have none of their own (Istio's default root namespace).
const RootNamespace = "istio-system"

// SidecarFor returns the Sidecar resource that scopes a proxy, as Istio picks it: one in the
// proxy's namespace whose workloadSelector matches the proxy's labels, else the one in its
// namespace without a selector, else the root namespace's one without a selector. Gateways are
// not scoped by Sidecars.
func (s *Snapshot) SidecarFor(proxy *Proxy) *networkingv1.Sidecar {
	if proxy.Type != SidecarProxy {
		return nil
	}
	var namespaceWide, rootWide *networkingv1.Sidecar
	for _, sc := range s.Config.Sidecars {
		sel := sc.Spec.WorkloadSelector
		switch {
		case sc.Namespace == proxy.Namespace && sel != nil && len(sel.Labels) > 0:
			if labelsMatch(proxy.Labels, sel.Labels) {
				return sc // configuration order: the first by name wins, as the oldest does in Istio
			}
		case sc.Namespace == proxy.Namespace && namespaceWide == nil:
			namespaceWide = sc
		case sc.Namespace == RootNamespace && (sel == nil || len(sel.Labels) == 0) && rootWide == nil:
			rootWide = sc
		}
	}
	if namespaceWide != nil {
		return namespaceWide
	}
	return rootWide
}

// ServicesFor lists the services a proxy sees: those exported to its namespace and, when a
// Sidecar scopes it, imported by one of the Sidecar's egress listeners. This is Istio users'
// main defence against configuration bloat: a proxy's clusters, listeners and routes are built
// from this list only.
func (s *Snapshot) ServicesFor(proxy *Proxy) []*Service {
	visible := s.VisibleServices(proxy.Namespace)
	sc := s.SidecarFor(proxy)
	if sc == nil || len(sc.Spec.Egress) == 0 {
		return visible
	}
	out := visible[:0:0]
	for _, svc := range visible {
		for _, eg := range sc.Spec.Egress {
			if EgressImports(eg, svc, proxy.Namespace) {
				out = append(out, svc)
				break
			}
		}
	}
	return out
}

// EgressImports reports whether an egress listener's hosts (`namespace/host` patterns) import
// a service, for a proxy in namespace proxyNS. The namespace part is `*` (any), `.` (the
// proxy's own), `~` (none) or a name; the host part an exact host, `*`, or `*.suffix`.
func EgressImports(eg *networking.IstioEgressListener, svc *Service, proxyNS string) bool {
	for _, h := range eg.Hosts {
		ns, host, ok := strings.Cut(h, "/")
		if !ok {
			continue // validation requires the namespace part
		}
		switch ns {
		case "*":
		case ".":
			if svc.Namespace != proxyNS {
				continue
			}
		case "~":
			continue
		default:
			if svc.Namespace != ns {
				continue
			}
		}
		if HostMatches(host, svc.Hostname) {
			return true
		}
	}
	return false
}

// RegistryOnly reports whether the proxy may reach only services the mesh knows
// (outboundTrafficPolicy REGISTRY_ONLY), instead of Istio's default ALLOW_ANY.
func (s *Snapshot) RegistryOnly(proxy *Proxy) bool {
	sc := s.SidecarFor(proxy)
	return sc != nil && sc.Spec.OutboundTrafficPolicy.GetMode() == networking.OutboundTrafficPolicy_REGISTRY_ONLY
}
