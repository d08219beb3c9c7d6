// Package translate turns the mesh model into Envoy configuration. It is pure: the same
// snapshot and proxy always give the same resources, with no I/O, clocks or globals, so it is
// tested with golden files and shared between every proxy of one class. One file per concern:
// clusters, endpoints, listeners, routes, VirtualService rules, matches, retries.
package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Resources is the per-proxy-class part of a proxy's configuration. Endpoints are shared by the
// whole mesh and built by Endpoints.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	// ExtensionConfigs are the filter configurations the listeners' filters fetch by name
	// (ECDS): a sidecar's inbound RBAC rules.
	ExtensionConfigs []*corev3.TypedExtensionConfig
}

// ForProxy builds the listeners, route configurations, clusters and extension configurations
// of one proxy. A proxy
// whose node ID names a Pod is seen with the Pod's labels (Snapshot.ResolveProxy).
func ForProxy(snap *model.Snapshot, proxy *model.Proxy) *Resources {
	proxy = snap.ResolveProxy(proxy)
	return &Resources{
		Listeners: Listeners(snap, proxy),
		Routes:    Routes(snap, proxy),
		Clusters:  Clusters(snap, proxy),

		ExtensionConfigs: ExtensionConfigs(snap, proxy),
	}
}

// ExtensionConfigs builds the filter configurations the proxy's listeners fetch over ADS: the
// RBAC rules of a sidecar's inbound chains (authz_ecds.go), for a sidecar that has any
// (virtualInbound when captured, Sidecar ingress listeners otherwise). Gateways have none.
func ExtensionConfigs(snap *model.Snapshot, proxy *model.Proxy) []*corev3.TypedExtensionConfig {
	if proxy.Type != model.SidecarProxy || (!capturedSidecar(proxy) && len(sidecarIngresses(snap, proxy)) == 0) {
		return nil
	}
	return AuthorizationExtensionConfigs(snap, proxy)
}

// Clusters builds the proxy's clusters: outbound ones for the services it sees, inbound ones
// for the application ports a Sidecar declares, and, when traffic is captured, those of
// virtualInbound (inbound.go) and of the application probes (appprobe.go), and those its
// tracing providers report to (tracing.go).
func Clusters(snap *model.Snapshot, proxy *model.Proxy) []*clusterv3.Cluster {
	ingresses := sidecarIngresses(snap, proxy)
	out := append(outboundClusters(snap, proxy), inboundClusters(ingresses)...)
	if capturedSidecar(proxy) {
		out = append(out, virtualInboundClusters(snap, proxy, ingresses)...)
		out = append(out, appHealthClusters(appHealthProbes(snap, proxy))...)
	}
	return withTracerClusters(snap, proxy, out)
}

// capturedSidecar reports whether the proxy gets virtualInbound: a sidecar whose inbound
// traffic iptables redirects to 15006.
func capturedSidecar(proxy *model.Proxy) bool {
	return proxy.Type == model.SidecarProxy && proxy.InterceptionMode == model.InterceptionRedirect
}

// Listeners builds the proxy's listeners: a sidecar's from the services it sees, a gateway's
// from the Gateways that select it.
func Listeners(snap *model.Snapshot, proxy *model.Proxy) []*listenerv3.Listener {
	if proxy.Type == model.Router {
		return gatewayListeners(snap, proxy)
	}
	ingresses := sidecarIngresses(snap, proxy)
	out := outboundListeners(snap, proxy)
	if capturedSidecar(proxy) {
		// Captured, the Sidecar's ingress ports are chains of virtualInbound, as in istiod: a
		// listener of their own would never see captured traffic, and its name 0.0.0.0_PORT
		// would clash with the outbound listener of a service on the same port.
		inbound := virtualInboundListener(snap, proxy, ingresses)
		markTCPChains([]*listenerv3.Listener{inbound}, tcpRulesMark(snap, proxy))
		out = append(out, inbound)
		if l := appHealthListener(appHealthProbes(snap, proxy)); l != nil {
			out = append(out, l)
		}
		return out
	}
	inbound := inboundListeners(snap, proxy, ingresses)
	markTCPChains(inbound, tcpRulesMark(snap, proxy))
	return withInbound(out, inbound)
}

// withInbound adds a Sidecar's ingress listeners to the outbound ones. Without capture both
// bind, and an ingress port on the proxy's own address can be the same address and port as
// an outbound listener (a proxy on 127.0.0.1, where outbound listeners bind, with a Sidecar
// whose ingress names a service port): the listener the Sidecar declares for the workload
// wins, and the outbound one is left out rather than sent under the same name.
func withInbound(outbound, inbound []*listenerv3.Listener) []*listenerv3.Listener {
	if len(inbound) == 0 {
		return outbound
	}
	taken := make(map[string]bool, len(inbound))
	for _, l := range inbound {
		taken[l.GetName()] = true
	}
	out := make([]*listenerv3.Listener, 0, len(outbound)+len(inbound))
	for _, l := range outbound {
		if !taken[l.GetName()] {
			out = append(out, l)
		}
	}
	return append(out, inbound...)
}

// Routes builds the proxy's route configurations.
func Routes(snap *model.Snapshot, proxy *model.Proxy) []*routev3.RouteConfiguration {
	if proxy.Type == model.Router {
		return gatewayRoutes(snap, proxy)
	}
	return outboundRouteConfigs(snap, proxy)
}
