package bootstrap

import (
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// AdminClusterName is the static cluster through which the readiness and Prometheus listeners
// reach Envoy's own admin interface. (Istio has two such clusters, prometheus_stats to the admin
// and agent to its pilot-agent; with no agent, both listeners use this one.)
const AdminClusterName = "admin"

// The paths the static listeners serve. The readiness probe of an injected sidecar uses
// ReadyPath; /healthz/ready is Istio's path on 15021, accepted too so probes written for Istio
// keep working.
const (
	ReadyPath      = "/ready"
	IstioReadyPath = "/healthz/ready"
	PrometheusPath = "/stats/prometheus"
)

// addAdminListeners adds the listeners of Options.ReadinessAddress and PrometheusAddress, and
// the admin cluster they route to, to s. They are static, like Istio's, so they answer before
// pilot has sent anything: the readiness probe must be able to say "not ready yet".
func addAdminListeners(r *resolved, s *bootstrapv3.Bootstrap_StaticResources) {
	if r.readiness == nil && r.prometheus == nil {
		return
	}
	s.Clusters = append(s.Clusters, adminCluster(r))
	if r.readiness != nil {
		// Only GET, and only the readiness paths, rewritten to the admin's /ready: nothing else
		// of the admin interface (which can change Envoy's state) is reachable through it.
		var routes []*routev3.Route
		for _, path := range []string{ReadyPath, IstioReadyPath} {
			routes = append(routes, &routev3.Route{
				Match: &routev3.RouteMatch{
					PathSpecifier: &routev3.RouteMatch_Path{Path: path},
					Headers: []*routev3.HeaderMatcher{{
						Name: ":method",
						HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
							MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"},
						}},
					}},
				},
				Action: adminRoute(ReadyPath),
			})
		}
		s.Listeners = append(s.Listeners, adminListener(*r.readiness, "agent", routes))
	}
	if r.prometheus != nil {
		// Istio's prometheus listener: the prefix, so query parameters such as ?usedonly pass.
		s.Listeners = append(s.Listeners, adminListener(*r.prometheus, "stats", []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: PrometheusPath}},
			Action: adminRoute(""),
		}}))
	}
}

// adminCluster reaches the admin interface over plain HTTP/1.1 on loopback.
func adminCluster(r *resolved) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 AdminClusterName,
		ConnectTimeout:       durationpb.New(connectTimeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: AdminClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: socketAddress(r.adminTarget.ip, r.adminTarget.port),
					}},
				}},
			}},
		},
	}
}

// adminRoute forwards to the admin cluster, rewriting the path to rewrite if it is set.
func adminRoute(rewrite string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AdminClusterName},
		PrefixRewrite:    rewrite,
	}}
}

// adminListener is an HTTP listener on a with one catch-all virtual host of routes; any other
// request gets Envoy's 404. The name is Istio's IP_PORT form, as in Istio's config dumps.
func adminListener(a ipPort, statPrefix string, routes []*routev3.Route) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			VirtualHosts: []*routev3.VirtualHost{{Name: "admin", Domains: []string{"*"}, Routes: routes}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}},
	}
	return &listenerv3.Listener{
		Name:    fmt.Sprintf("%s_%d", a.ip, a.port),
		Address: socketAddress(a.ip, a.port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
			}},
		}},
	}
}
