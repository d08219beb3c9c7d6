package translate

import (
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Which VirtualServices a Gateway serves: those that name it in `gateways` (resolved as
// model.ResolveGatewayName does) and that are exported to the gateway proxy's namespace, as istiod's
// VirtualServicesForGateway. A route configuration of a gateway proxy may merge servers of a
// thousand Gateways; finding each one's VirtualServices by matching every VirtualService
// against it costs Gateways × VirtualServices name resolutions (most of the time spent on such
// a proxy before this index), so the route builder indexes them once per translation instead.

// gatewayBindings maps a Gateway (NAMESPACE/NAME) to the VirtualServices bound to it that one
// proxy may see, each once and in configuration order.
type gatewayBindings map[string][]*networkingv1.VirtualService

// gatewayBindingsKey keys the bindings of one namespace's gateway proxies in Snapshot.Derived.
type gatewayBindingsKey struct{ namespace string }

// bindGatewayVirtualServices indexes the VirtualServices of the snapshot by the Gateways they
// name, in one pass: the same lists gatewayVirtualServices gives gateway by gateway. The index
// depends on the proxy's namespace alone (exportTo), so it is built once per snapshot and
// namespace and shared: it must not be modified.
func bindGatewayVirtualServices(snap *model.Snapshot, proxy *model.Proxy) gatewayBindings {
	return snap.Derived(gatewayBindingsKey{proxy.Namespace}, func() any {
		return buildGatewayBindings(snap, proxy.Namespace)
	}).(gatewayBindings)
}

// buildGatewayBindings is bindGatewayVirtualServices for proxies in namespace ns.
func buildGatewayBindings(snap *model.Snapshot, ns string) gatewayBindings {
	out := gatewayBindings{}
	for _, vs := range snap.VirtualServices {
		if len(vs.Spec.Gateways) == 0 {
			continue // mesh only
		}
		if !model.ParseVisibility(vs.Namespace, vs.Spec.ExportTo).VisibleTo(ns) {
			continue
		}
		for _, ref := range vs.Spec.Gateways {
			gw := model.ResolveGatewayName(ref, vs.Namespace)
			if gw == model.MeshGateway {
				continue // no Gateway is called mesh: NAMESPACE/NAME always has a slash
			}
			list := out[gw]
			// One VirtualService may name a Gateway twice (`ingress` and `./ingress`); it is
			// bound once, as when it is matched against the Gateway. Its entries for one
			// Gateway are adjacent, since VirtualServices are visited one at a time.
			if n := len(list); n > 0 && list[n-1] == vs {
				continue
			}
			out[gw] = append(list, vs)
		}
	}
	return out
}

// gatewayVirtualServices lists the VirtualServices bound to gateway (NAMESPACE/NAME) that a
// proxy in its namespace may see (exportTo), in configuration order. It scans every
// VirtualService: for one server at a time (the TCP and TLS listener code); a caller visiting
// many Gateways uses bindGatewayVirtualServices.
func gatewayVirtualServices(snap *model.Snapshot, proxy *model.Proxy, gateway string) []*networkingv1.VirtualService {
	var out []*networkingv1.VirtualService
	for _, vs := range snap.VirtualServices {
		if matchesGateway(vs.Spec.Gateways, vs.Namespace, gateway) &&
			model.ParseVisibility(vs.Namespace, vs.Spec.ExportTo).VisibleTo(proxy.Namespace) {
			out = append(out, vs)
		}
	}
	return out
}
