package translate

import (
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	healthcheckv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiffmesh/skiff/pkg/appprobe"
	"github.com/skiffmesh/skiff/pkg/model"
)

// Application probes under mTLS, without an agent. The injector rewrites a pod's httpGet,
// tcpSocket and grpc probes into httpGet probes on the status port, 15020, at
// /app-health/CONTAINER/KIND, and keeps the originals in the Pod (package appprobe). Where
// Istio's pilot-agent answers that port, a captured sidecar here gets a listener of its own,
// app-health, whose answer is the application's, reached in plaintext and around the inbound
// mTLS chains (the capture exempts 15020 and the sidecar's own connections):
//
//   - an httpGet probe is forwarded by a route: to the address the kubelet called, which is
//     the pod's own IP, on the original port (an ORIGINAL_DST cluster whose destination the
//     route sets from %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%), with the original path, host
//     and headers, from 127.0.0.6 as InboundPassthroughCluster (the capture would otherwise
//     send the sidecar's call to its own pod IP through virtualInbound). The application's
//     status is the answer, as from Istio's agent; a redirect loses its Location, so that the
//     kubelet takes the 3xx as success instead of following it past the sidecar.
//   - a tcpSocket or grpc probe cannot be forwarded as a request: a cluster of its own checks
//     the application with Envoy's active TCP (connect) or gRPC (grpc.health.v1) health check,
//     and a health_check filter for the probe's path answers 200 while that cluster is
//     healthy, 503 otherwise.
//
// Nothing here names the pod's IP, so the replicas of a Deployment, whose probes are equal,
// still share their configuration (ConfigKey holds the probes, not the pod). That is why the
// health-checked clusters reach the application on 127.0.0.1, as the inbound clusters do
// (inbound.go), rather than on the pod IP as Istio's agent does: an active health check needs
// its address in the cluster. An application listening only on its pod IP fails its tcpSocket
// and grpc probes; its httpGet probes, like the kubelet's own, reach it.

// Names and ports of the application probe listener and its clusters.
const (
	// AppHealthListener answers the kubelet's rewritten probes on AppHealthPort.
	AppHealthListener = "app-health"
	// AppHealthPort is Istio's status port.
	AppHealthPort = appprobe.StatusPort
	// AppHealthHTTPCluster and AppHealthHTTPSCluster take httpGet probes to the application.
	AppHealthHTTPCluster  = "app-health|http"
	AppHealthHTTPSCluster = "app-health|https"
)

// originalDstHostHeader is the header an ORIGINAL_DST cluster with use_http_header connects to
// (Envoy's default name). Routes set it, replacing whatever a client sent.
const originalDstHostHeader = "x-envoy-original-dst-host"

// appHealthCheckInterval is how often a tcpSocket or grpc probe's cluster checks the
// application, whatever the probe's own period (which the injector does not keep, as Istio's
// does not): the answer the kubelet gets is at most this old.
const appHealthCheckInterval = 2 * time.Second

// AppHealthClusterName is the health-checked cluster of a tcpSocket or grpc probe:
// app-health|CONTAINER|KIND for the probe's path /app-health/CONTAINER/KIND.
func AppHealthClusterName(path string) string {
	return AppHealthListener + "|" + strings.ReplaceAll(strings.TrimPrefix(path, appprobe.PathPrefix), "/", "|")
}

// appHealthProbes are the probes a proxy answers for its Pod: nil unless it is a captured
// sidecar (only they are in a pod of their own, whose 15020 is free) whose Pod has any.
func appHealthProbes(snap *model.Snapshot, proxy *model.Proxy) *model.AppProbes {
	if !capturedSidecar(proxy) {
		return nil
	}
	return snap.AppProbes(proxy.Namespace, proxy.Name)
}

// appHealthListener is 0.0.0.0:15020: routes for the httpGet probes, a health_check filter
// for each of the others, in path order. Nil when the proxy answers no probes.
func appHealthListener(probes *model.AppProbes) *listenerv3.Listener {
	if probes == nil {
		return nil
	}
	var routes []*routev3.Route
	var filters []*hcmv3.HttpFilter
	for _, path := range probes.Probers.Paths() {
		if p := probes.Probers[path]; p.HTTPGet != nil {
			routes = append(routes, appHealthRoute(path, p))
		} else {
			filters = append(filters, appHealthCheckFilter(path))
		}
	}
	filters = append(filters, &hcmv3.HttpFilter{
		Name: wellknown.Router,
		// The application sees the kubelet's request, without Envoy's x-envoy-* headers.
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: MustAny(&routerv3.Router{SuppressEnvoyHeaders: true})},
	})
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: AppHealthListener,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: AppHealthListener,
			// An inline route configuration's clusters are checked when the listener arrives
			// (Envoy's default for inline ones): a listener computed from a newer snapshot than
			// the clusters Envoy holds (a Pod's probes seen between its CDS and LDS answers)
			// would be rejected. Unchecked, a probe answers 503 for that moment instead.
			ValidateClusters: falseValue(),
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    AppHealthListener,
				Domains: []string{"*"},
				Routes:  routes,
			}},
		}},
		HttpFilters:       filters,
		GenerateRequestId: falseValue(),
	}
	return &listenerv3.Listener{
		Name:             AppHealthListener,
		Address:          SocketAddress(wildcardAddress, AppHealthPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains:     []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcmFilter(hcm)}}},
	}
}

// appHealthRoute forwards the httpGet probe of path as the kubelet would have sent it.
func appHealthRoute(path string, p *appprobe.Prober) *routev3.Route {
	get := p.HTTPGet
	cluster := AppHealthHTTPCluster
	if get.Scheme == corev1.URISchemeHTTPS {
		cluster = AppHealthHTTPSCluster
	}
	target := get.Path
	if !strings.HasPrefix(target, "/") {
		target = "/" + target // the kubelet's URL always has one
	}
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
		PrefixRewrite:    target,
		// The kubelet gives up after the probe's timeout; Envoy answers by then.
		Timeout: Duration(time.Duration(p.Timeout()) * time.Second),
		// The kubelet's Host is the pod IP and the application's port: the destination.
		HostRewriteSpecifier: &routev3.RouteAction_HostRewriteHeader{HostRewriteHeader: originalDstHostHeader},
	}
	headers := []*corev3.HeaderValueOption{{
		Header: &corev3.HeaderValue{
			Key:   originalDstHostHeader,
			Value: "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%:" + strconv.Itoa(int(p.Port())),
		},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}}
	// The probe's own headers, which the kubelet sends too: set here as well, so that the
	// answer is the same for whoever asks. The first of a name replaces what came, the others
	// add to it, as a header repeated in httpHeaders is sent repeated.
	seen := map[string]bool{}
	for _, h := range get.HTTPHeaders {
		name := strings.ToLower(h.Name)
		switch name {
		case "host":
			action.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: h.Value}
			continue
		case originalDstHostHeader:
			continue // the destination is the pod's, whatever the probe says
		}
		appendAction := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		if seen[name] {
			appendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		}
		seen[name] = true
		headers = append(headers, &corev3.HeaderValueOption{
			// Header values are Envoy format strings: a literal % is written %%.
			Header:       &corev3.HeaderValue{Key: name, Value: strings.ReplaceAll(h.Value, "%", "%%")},
			AppendAction: appendAction,
		})
	}
	return &routev3.Route{
		Name:                    path,
		Match:                   &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}},
		Action:                  &routev3.Route_Route{Route: action},
		RequestHeadersToAdd:     headers,
		ResponseHeadersToRemove: []string{"location"},
	}
}

// appHealthCheckFilter answers path from the health of its probe's cluster.
func appHealthCheckFilter(path string) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name: wellknown.HealthCheck,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: MustAny(&healthcheckv3.HealthCheck{
			PassThroughMode: falseValue(),
			Headers: []*routev3.HeaderMatcher{{
				Name: ":path",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: path},
				}},
			}},
			ClusterMinHealthyPercentages: map[string]*typev3.Percent{AppHealthClusterName(path): {Value: 100}},
		})},
	}
}

// appHealthClusters are the clusters appHealthListener uses: the ORIGINAL_DST ones for the
// schemes of the httpGet probes, then a health-checked one per other probe, in path order.
func appHealthClusters(probes *model.AppProbes) []*clusterv3.Cluster {
	if probes == nil {
		return nil
	}
	var http, https bool
	var checked []*clusterv3.Cluster
	for _, path := range probes.Probers.Paths() {
		p := probes.Probers[path]
		switch {
		case p.HTTPGet != nil && p.HTTPGet.Scheme == corev1.URISchemeHTTPS:
			https = true
		case p.HTTPGet != nil:
			http = true
		default:
			checked = append(checked, appHealthCheckedCluster(path, p))
		}
	}
	var out []*clusterv3.Cluster
	if http {
		out = append(out, appHealthForwardCluster(AppHealthHTTPCluster, nil))
	}
	if https {
		// As the kubelet, which does not verify the application's certificate either.
		out = append(out, appHealthForwardCluster(AppHealthHTTPSCluster, &corev3.TransportSocket{
			Name:       wellknown.TransportSocketTLS,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: MustAny(&tlsv3.UpstreamTlsContext{})},
		}))
	}
	return append(out, checked...)
}

// appHealthForwardCluster connects to the address its route names in originalDstHostHeader,
// from 127.0.0.6 (see inboundPassthroughBindAddress).
func appHealthForwardCluster(name string, tls *corev3.TransportSocket) *clusterv3.Cluster {
	c := inboundPassthroughCluster()
	c.Name = name
	c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true}}
	c.TransportSocket = tls
	return c
}

// appHealthCheckedCluster is the application's port on 127.0.0.1, checked every
// appHealthCheckInterval the way the kubelet would probe it: a TCP connect, or a gRPC health
// check of the probe's service. One failure makes it unhealthy and one success healthy again
// (the kubelet applies the probe's own thresholds to the answers), and every check opens a
// new connection, as the kubelet does, so an application closing idle connections is not
// taken for a dead one.
func appHealthCheckedCluster(path string, p *appprobe.Prober) *clusterv3.Cluster {
	name := AppHealthClusterName(path)
	timeout := Duration(time.Duration(p.Timeout()) * time.Second)
	interval := Duration(appHealthCheckInterval)
	check := &corev3.HealthCheck{
		Timeout:  timeout,
		Interval: interval,
		// Envoy checks a cluster that has never had traffic only every 60 s by default, and
		// the health_check filter sends none: check it as often as any other.
		NoTrafficInterval:  interval,
		UnhealthyThreshold: uint32Value(1),
		HealthyThreshold:   uint32Value(1),
		ReuseConnection:    falseValue(),
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       timeout,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: SocketAddress(localhostAddress, p.Port()),
				}},
			}}}},
		},
		HealthChecks: []*corev3.HealthCheck{check},
	}
	if p.GRPC != nil {
		check.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{
			ServiceName: ptrValue(p.GRPC.Service),
			// What the kubelet's gRPC client sends: the address it dials.
			Authority: localhostAddress + ":" + strconv.Itoa(int(p.Port())),
		}}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: http2OptionsAny}
	} else {
		check.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
	}
	return c
}

func ptrValue(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
