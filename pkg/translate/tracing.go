package translate

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshconfig "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Tracing follows istiod (pilot/pkg/networking/core/tracing.go): every HTTP connection manager
// of a side with a tracing provider gets `tracing` with the provider (OpenTelemetry over gRPC,
// or Zipkin's JSON v2 API), 100% client and overall sampling and the random sampling asked
// for, and Istio's tags (istio.canonical_service, istio.canonical_revision, istio.namespace,
// istio.mesh_id, istio.cluster_id) with the Telemetry's custom tags. Gateways spawn an
// upstream span, as istiod's do. Envoy generates x-request-id and propagates the tracer's
// context headers (W3C traceparent for OpenTelemetry, B3 for Zipkin) itself.
//
// Spans are named as Envoy names them without route decorators ("ingress", "egress HOST"):
// istiod decorates every route with HOST:PORT/PATH, which would grow every route
// configuration by a decorator per route whether tracing is on or not.

// tracingIdentity is what a span says about the proxy that reported it.
type tracingIdentity struct {
	// serviceName is the OpenTelemetry service.name, istio-agent's node cluster: the app
	// label "." namespace, else the workload name "." namespace.
	serviceName                         string
	canonicalService, canonicalRevision string
	namespace                           string
}

// tracingIdentityOf derives the identity from the resolved proxy's labels and name, as
// istio-agent and istiod do.
func tracingIdentityOf(proxy *model.Proxy) tracingIdentity {
	workload := model.WorkloadNameOf(proxy.Name)
	app := firstLabel(proxy.Labels, "app.kubernetes.io/name", "app")
	id := tracingIdentity{namespace: proxy.Namespace}
	if app != "" {
		id.serviceName = app + "." + proxy.Namespace
	} else {
		id.serviceName = workload + "." + proxy.Namespace
	}
	id.canonicalService = firstLabel(proxy.Labels, "service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
	if id.canonicalService == "" {
		id.canonicalService = workload
	}
	id.canonicalRevision = firstLabel(proxy.Labels, "service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
	if id.canonicalRevision == "" {
		id.canonicalRevision = "latest"
	}
	return id
}

func firstLabel(labels map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}

// tracerCluster is the cluster a tracing provider reports to: the registry's outbound cluster
// of the provider's service when it is one (svc set), else one of its own for a DNS name or
// an IP address outside the registry.
type tracerCluster struct {
	name, hostname string
	port           uint32
	svc            *model.Service
	grpc           bool // OpenTelemetry's OTLP/gRPC: the cluster speaks HTTP/2
}

// providerCluster looks up a provider's service as istiod's LookupCluster does: HOSTNAME, or
// NAMESPACE/HOSTNAME when several namespaces declare the host.
func providerCluster(snap *model.Snapshot, service string, port uint32) tracerCluster {
	host, ns := service, ""
	if i := strings.IndexByte(service, '/'); i >= 0 {
		ns, host = service[:i], service[i+1:]
	}
	c := tracerCluster{name: OutboundClusterName(port, "", host), hostname: host, port: port}
	for _, svc := range snap.Services {
		if svc.Hostname == host && (ns == "" || svc.Namespace == ns) {
			if _, ok := svc.Port(port); ok {
				c.svc = svc
				break
			}
		}
	}
	return c
}

// hcmTracing builds a side's tracing from its spec.
func hcmTracing(snap *model.Snapshot, proxy *model.Proxy, spec *model.TracingSpec, id tracingIdentity) (*hcmv3.HttpConnectionManager_Tracing, *hcmv3.RequestIDExtension, tracerCluster) {
	var (
		provider *tracev3.Tracing_Http
		cluster  tracerCluster
	)
	switch p := spec.Provider.GetProvider().(type) {
	case *meshconfig.MeshConfig_ExtensionProvider_Opentelemetry:
		cluster = providerCluster(snap, p.Opentelemetry.GetService(), p.Opentelemetry.GetPort())
		cluster.grpc = true
		grpc := &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
			ClusterName: cluster.name, Authority: cluster.hostname,
		}}}
		if t := p.Opentelemetry.GetGrpc().GetTimeout(); t != nil {
			grpc.Timeout = t
		}
		provider = &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{
			TypedConfig: MustAny(&tracev3.OpenTelemetryConfig{GrpcService: grpc, ServiceName: id.serviceName}),
		}}
	case *meshconfig.MeshConfig_ExtensionProvider_Zipkin:
		cluster = providerCluster(snap, p.Zipkin.GetService(), p.Zipkin.GetPort())
		path := p.Zipkin.GetPath()
		if path == "" {
			path = "/api/v2/spans"
		}
		// Zipkin names spans' service by the node's cluster (the bootstrap's --service-cluster).
		provider = &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin", ConfigType: &tracev3.Tracing_Http_TypedConfig{
			TypedConfig: MustAny(&tracev3.ZipkinConfig{
				CollectorCluster:         cluster.name,
				CollectorEndpoint:        path,
				CollectorHostname:        cluster.hostname,
				CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
				TraceId_128Bit:           !p.Zipkin.GetEnable_64BitTraceId(),
				SharedSpanContext:        wrapperspb.Bool(false),
			}),
		}}
	default:
		return nil, nil, tracerCluster{}
	}
	tr := &hcmv3.HttpConnectionManager_Tracing{
		ClientSampling:       &typev3.Percent{Value: 100},
		OverallSampling:      &typev3.Percent{Value: 100},
		RandomSampling:       &typev3.Percent{Value: spec.RandomSamplingPercentage},
		Provider:             provider,
		CustomTags:           customTags(spec.CustomTags, id),
		NoContextPropagation: spec.DisableContextPropagation,
	}
	if proxy.Type == model.Router {
		tr.SpawnUpstreamSpan = wrapperspb.Bool(true)
	}
	var requestID *hcmv3.RequestIDExtension
	if !spec.UseRequestIDForTraceSampling {
		requestID = &hcmv3.RequestIDExtension{TypedConfig: MustAny(&uuidv3.UuidRequestIdConfig{
			UseRequestIdForTraceSampling: wrapperspb.Bool(false),
		})}
	}
	return tr, requestID, cluster
}

// customTags are Istio's tags of the proxy, then the Telemetry's, sorted by name as istiod
// sorts them.
func customTags(tags map[string]*telemetry.Tracing_CustomTag, id tracingIdentity) []*tracingv3.CustomTag {
	literal := func(name, value string) *tracingv3.CustomTag {
		return &tracingv3.CustomTag{Tag: name, Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: value}}}
	}
	out := []*tracingv3.CustomTag{
		literal("istio.canonical_revision", id.canonicalRevision),
		literal("istio.canonical_service", id.canonicalService),
		literal("istio.cluster_id", "Kubernetes"),
		literal("istio.mesh_id", "cluster.local"),
		literal("istio.namespace", id.namespace),
	}
	for name, tag := range tags {
		t := &tracingv3.CustomTag{Tag: name}
		switch typ := tag.GetType().(type) {
		case *telemetry.Tracing_CustomTag_Literal:
			t.Type = &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: typ.Literal.GetValue()}}
		case *telemetry.Tracing_CustomTag_Environment:
			t.Type = &tracingv3.CustomTag_Environment_{Environment: &tracingv3.CustomTag_Environment{
				Name: typ.Environment.GetName(), DefaultValue: typ.Environment.GetDefaultValue()}}
		case *telemetry.Tracing_CustomTag_Header:
			t.Type = &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{
				Name: typ.Header.GetName(), DefaultValue: typ.Header.GetDefaultValue()}}
		case *telemetry.Tracing_CustomTag_Formatter:
			t.Type = &tracingv3.CustomTag_Value{Value: typ.Formatter.GetValue()}
		default:
			continue
		}
		out = slices.DeleteFunc(out, func(o *tracingv3.CustomTag) bool { return o.Tag == name })
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *tracingv3.CustomTag) int { return strings.Compare(a.Tag, b.Tag) })
	return out
}

// tracerConnectTimeout bounds a connection to a tracing collector outside the registry.
const tracerConnectTimeout = 5 * time.Second

// withTracerClusters adds the clusters of the proxy's tracing providers that out lacks: the
// registry's outbound cluster when a Sidecar's egress hides the service from the proxy, or
// one of Skiff's own (STATIC for an IP address, STRICT_DNS for a name) for a collector
// outside the registry.
func withTracerClusters(snap *model.Snapshot, proxy *model.Proxy, out []*clusterv3.Cluster) []*clusterv3.Cluster {
	tracers := telemetryFor(snap, proxy).tracers
	if len(tracers) == 0 {
		return out
	}
	have := make(map[string]bool, len(out))
	for _, c := range out {
		have[c.Name] = true
	}
	for _, t := range tracers {
		if have[t.name] {
			continue
		}
		have[t.name] = true
		if t.svc != nil {
			port, _ := t.svc.Port(t.port)
			ctx := clusterContext{autoMTLS: snap.MayHoldIdentity(proxy), sidecar: proxy.Type == model.SidecarProxy}
			out = append(out, outboundCluster(snap, t.svc, port, snap.DestinationRuleFor(t.svc.Hostname, proxy.Namespace), nil, ctx))
			continue
		}
		out = append(out, collectorCluster(t))
	}
	return out
}

// collectorCluster reaches a collector outside the registry.
func collectorCluster(t tracerCluster) *clusterv3.Cluster {
	typ := clusterv3.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(t.hostname); err == nil {
		typ = clusterv3.Cluster_STATIC
	}
	c := &clusterv3.Cluster{
		Name:                 t.name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       Duration(tracerConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: t.name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(t.hostname, t.port, 0)},
		}}},
	}
	if typ == clusterv3.Cluster_STRICT_DNS {
		c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
	}
	if t.grpc {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": MustAny(&upstreamhttpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
				}},
			}),
		}
	}
	return c
}
