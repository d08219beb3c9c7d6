package translate

import (
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"github.com/skiffmesh/skiff/pkg/model"
)

// outboundListeners builds the sidecar's outbound side: one listener per HTTP port (an HTTP
// connection manager on route configuration "PORT"), a TCP proxy listener per TCP service port,
// a sniffing listener (both, chosen per connection, see sniffing.go) per port whose protocol
// nothing declares, and, when traffic is captured, virtualOutbound on 15001 that hands each
// connection to the listener of its original destination.
//
// Captured listeners are `0.0.0.0_PORT` and do not bind: connections arrive through
// virtualOutbound. Without capture they bind, on 127.0.0.1 as Istio's Sidecar egress listeners
// do for captureMode NONE: the application calls its sidecar on localhost, and the sidecar is
// not an open proxy for the rest of the network.
func outboundListeners(snap *model.Snapshot, proxy *model.Proxy) []*listenerv3.Listener {
	captured := proxy.InterceptionMode == model.InterceptionRedirect
	tel := telemetryFor(snap, proxy)
	bindAddress := wildcardAddress
	if !captured {
		bindAddress = localhostAddress
	}
	byName := map[string]*listenerv3.Listener{}
	var names []string
	add := func(name string, build func() *listenerv3.Listener) {
		// The first service to claim an address and port keeps it; HTTP ports are added
		// first, so an HTTP listener is never replaced by a TCP one.
		if _, taken := byName[name]; taken {
			return
		}
		l := build()
		if !captured {
			l.BindToPort = nil // bind: applications connect to the listener directly
		} else {
			l.BindToPort = falseValue() // reached only through virtualOutbound
		}
		byName[name] = l
		names = append(names, name)
	}

	// Listeners a Sidecar declares for a port come first and claim that port.
	claimed := map[uint32]bool{}
	for _, l := range sidecarEgressListeners(snap, proxy, bindAddress) {
		claimed[l.Address.GetSocketAddress().GetPortValue()] = true
		add(l.Name, func() *listenerv3.Listener { return l })
	}
	// TCP, TLS, HTTPS and sniffed ports, grouped by the listener they share and routed by
	// their VirtualServices' tcp and tls routes (tcproute.go, tlsroute.go).
	l4 := map[string]*l4Listener{}
	var l4Names []string
	services := snap.ServicesFor(proxy)
	for _, svc := range services {
		for _, port := range svc.Ports {
			if claimed[port.Number] || port.Protocol.IsHTTP() || port.Protocol == model.UDP {
				continue
			}
			g := &l4Listener{address: bindAddress, shared: true}
			if address, own := ownListenerAddress(proxy, svc); own {
				g = &l4Listener{address: address}
			}
			name := ListenerName(g.address, port.Number)
			if l4[name] == nil {
				l4[name] = g
				l4Names = append(l4Names, name)
			}
			l4[name].ports = append(l4[name].ports, l4ServicePort{svc, port})
		}
	}
	// A listener with a sniffed port is a TCP one with HTTP chains ahead, routed by the port's
	// shared route configuration when its address is shared, by the service's own otherwise.
	build := func(g *l4Listener) *listenerv3.Listener {
		l := g.build(snap, proxy)
		for _, p := range g.ports {
			if p.port.Protocol.IsSniffed() {
				routeConfig := RouteConfigName(p.port.Number)
				if !g.shared {
					routeConfig = SniffedRouteConfigName(p.svc.Hostname, p.port.Number)
				}
				sniffListener(l, routeConfig, tel)
				break
			}
		}
		return l
	}
	for _, svc := range services {
		for _, port := range svc.Ports {
			if claimed[port.Number] || !port.Protocol.IsHTTP() {
				continue
			}
			name := ListenerName(bindAddress, port.Number)
			add(name, func() *listenerv3.Listener {
				if g := l4[name]; g != nil && g.sniffs() {
					// HTTP and sniffed services share the address: the sniffing listener
					// serves both, its HTTP chains on the shared route configuration.
					return build(g)
				}
				return httpOutboundListener(bindAddress, port.Number, tel)
			})
		}
	}
	for _, name := range l4Names {
		add(name, func() *listenerv3.Listener { return build(l4[name]) })
	}
	slices.Sort(names)
	out := make([]*listenerv3.Listener, 0, len(names)+1)
	for _, n := range names {
		out = append(out, byName[n])
	}
	if captured {
		out = append(out, virtualOutboundListener(snap.RegistryOnly(proxy), tel))
	}
	return out
}

func httpOutboundListener(address string, port uint32, tel *listenerTelemetry) *listenerv3.Listener {
	name := ListenerName(address, port)
	return &listenerv3.Listener{
		Name:             name,
		Address:          SocketAddress(address, port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{httpConnectionManager("outbound_"+name, RouteConfigName(port), tel)},
		}},
	}
}

func tcpOutboundListener(address string, port uint32, cluster string, tel *listenerTelemetry) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             ListenerName(address, port),
		Address:          SocketAddress(address, port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{TCPProxy(cluster, cluster, tel)}}},
	}
}

// virtualOutboundListener receives every captured outbound connection. use_original_dst hands
// it to the listener for its original address and port; what no listener claims goes to
// PassthroughCluster (ALLOW_ANY), or BlackHoleCluster under REGISTRY_ONLY. A connection to
// 15001 itself would loop, so it is dropped.
func virtualOutboundListener(registryOnly bool, tel *listenerTelemetry) *listenerv3.Listener {
	exit := PassthroughCluster
	if registryOnly {
		exit = BlackHoleCluster
	}
	return &listenerv3.Listener{
		Name:             VirtualOutbound,
		Address:          SocketAddress(wildcardAddress, VirtualOutboundPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		UseOriginalDst:   trueValue(),
		FilterChains: []*listenerv3.FilterChain{{
			Name: VirtualOutbound + "-blackhole",
			FilterChainMatch: &listenerv3.FilterChainMatch{
				DestinationPort: uint32Value(VirtualOutboundPort),
			},
			Filters: []*listenerv3.Filter{TCPProxy(BlackHoleCluster, BlackHoleCluster, tel)},
		}},
		DefaultFilterChain: &listenerv3.FilterChain{
			Name:    exit,
			Filters: []*listenerv3.Filter{TCPProxy(exit, exit, tel)},
		},
	}
}

// httpConnectionManager terminates HTTP and routes by the named route configuration, fetched
// over ADS.
func httpConnectionManager(statPrefix, routeConfig string, tel *listenerTelemetry) *listenerv3.Filter {
	hcm := newHTTPConnectionManager(statPrefix, tel)
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		ConfigSource:    ADSConfigSource(),
		RouteConfigName: routeConfig,
	}}
	return hcmFilter(hcm)
}

// httpConnectionManagerFor terminates HTTP and routes by an inline route configuration.
func httpConnectionManagerFor(statPrefix string, route *routev3.RouteConfiguration, tel *listenerTelemetry) *listenerv3.Filter {
	hcm := newHTTPConnectionManager(statPrefix, tel)
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: route}
	return hcmFilter(hcm)
}

// routerHTTPFilter is the router, last in every connection manager; shared like the fault and
// CORS filters, as generated protos are never modified once built.
var routerHTTPFilter = &hcmv3.HttpFilter{
	Name:       wellknown.Router,
	ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: MustAny(&routerv3.Router{})},
}

// newHTTPConnectionManager is the connection manager every HTTP listener shares, without its
// routes, with the proxy's access logs and tracing for its side (telemetry.go).
func newHTTPConnectionManager(statPrefix string, tel *listenerTelemetry) *hcmv3.HttpConnectionManager {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		// Fault and CORS before the router, in istiod's order: they act only where a route's
		// typed_per_filter_config asks (see fault.go, cors.go).
		HttpFilters: []*hcmv3.HttpFilter{faultHTTPFilter, corsHTTPFilter, routerHTTPFilter},
		// Istio's defaults: normalise paths before matching, and allow WebSocket upgrades.
		NormalizePath:  trueValue(),
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
	}
	tel.applyHTTP(hcm)
	return hcm
}

func hcmFilter(hcm *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: MustAny(hcm)},
	}
}
