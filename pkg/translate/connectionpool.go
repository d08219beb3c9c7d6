package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// The connectionPool part of a traffic policy, and the cluster's upstream HTTP protocol
// options, which the connection pool, TLS and outlier detection all contribute to.
// http2KeepAlive is not translated (istiod does not either).

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// http2OptionsAny is the protocol options of an HTTP/2 port with nothing else to say, the
// common case for GRPC and HTTP2 ports. Built once and shared like previousHostsAny: it is
// never modified.
var http2OptionsAny = MustAny(&upstreamhttpv3.HttpProtocolOptions{
	UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
	}},
})

// applyConnectionPool sets the cluster-level limits of a connection pool as istiod's
// applyConnectionPool does: circuit breaker thresholds for the limits that are set (the others
// keep Istio's "unlimited" defaults), the connect timeout and TCP keepalive. Zero means "not
// set" for every limit, as in istiod, which cannot tell the two apart either.
func applyConnectionPool(c *clusterv3.Cluster, cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	tcp, http := cp.GetTcp(), cp.GetHttp()
	if d := tcp.GetConnectTimeout(); d != nil {
		c.ConnectTimeout = d
	}
	if ka := tcp.GetTcpKeepalive(); ka != nil {
		c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: tcpKeepalive(ka)}
	}
	if tcp.GetMaxConnections() <= 0 && http.GetHttp1MaxPendingRequests() <= 0 && http.GetHttp2MaxRequests() <= 0 && http.GetMaxRetries() <= 0 {
		return // cluster.go's defaults stand
	}
	cb := defaultCircuitBreakers()
	t := cb.Thresholds[0]
	if n := tcp.GetMaxConnections(); n > 0 {
		t.MaxConnections = uint32Value(uint32(n))
	}
	// Envoy applies max_pending_requests to HTTP/1.1 pools and max_requests to HTTP/2 ones;
	// Istio's names say which.
	if n := http.GetHttp1MaxPendingRequests(); n > 0 {
		t.MaxPendingRequests = uint32Value(uint32(n))
	}
	if n := http.GetHttp2MaxRequests(); n > 0 {
		t.MaxRequests = uint32Value(uint32(n))
	}
	if n := http.GetMaxRetries(); n > 0 {
		t.MaxRetries = uint32Value(uint32(n))
	}
	c.CircuitBreakers = cb
}

// tcpKeepalive turns on SO_KEEPALIVE, with the OS defaults for what is not set. Envoy takes
// whole seconds: istiod truncates, which turns a sub-second value into 0, an invalid socket
// option; Skiff rounds up instead.
func tcpKeepalive(ka *networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive) *corev3.TcpKeepalive {
	out := &corev3.TcpKeepalive{}
	if ka.GetProbes() > 0 {
		out.KeepaliveProbes = uint32Value(ka.GetProbes())
	}
	if d := ka.GetTime(); d != nil {
		out.KeepaliveTime = uint32Value(wholeSeconds(d))
	}
	if d := ka.GetInterval(); d != nil {
		out.KeepaliveInterval = uint32Value(wholeSeconds(d))
	}
	return out
}

// wholeSeconds rounds a positive duration up to whole seconds, at least 1.
func wholeSeconds(d *durationpb.Duration) uint32 {
	s := (d.AsDuration() + time.Second - 1) / time.Second
	return uint32(max(s, 1))
}

// usesHTTP2 reports whether the cluster speaks HTTP/2 upstream: HTTP2 and GRPC ports do, and
// an HTTP port whose policy asks for h2UpgradePolicy UPGRADE. DO_NOT_UPGRADE is the mesh
// default, so it changes nothing.
func usesHTTP2(port model.Port, cp *networking.ConnectionPoolSettings) bool {
	if port.Protocol.IsHTTP2() {
		return true
	}
	return port.Protocol.IsHTTP() && cp.GetHttp().GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE
}

// protocolOptions gathers what the parts of a traffic policy put in the cluster's
// HttpProtocolOptions extension, so that it is built and packed once.
type protocolOptions struct {
	h2         bool // speak HTTP/2 upstream
	downstream bool // useClientProtocol: speak whatever the client spoke

	common               *corev3.HttpProtocolOptions
	upstream             *corev3.UpstreamHttpProtocolOptions
	maxConcurrentStreams uint32
	outlier              *upstreamhttpv3.HttpProtocolOptions_OutlierDetection
}

// applyConnectionPool takes the connection pool's per-connection settings, as istiod does:
// the idle timeout (http's, else tcp's), the requests per connection, the connection's
// lifetime and the HTTP/2 concurrent streams.
func (o *protocolOptions) applyConnectionPool(cp *networking.ConnectionPoolSettings) {
	tcp, http := cp.GetTcp(), cp.GetHttp()
	idle := http.GetIdleTimeout()
	if idle == nil {
		idle = tcp.GetIdleTimeout()
	}
	perConnection := http.GetMaxRequestsPerConnection()
	lifetime := tcp.GetMaxConnectionDuration()
	if idle != nil || perConnection > 0 || lifetime != nil {
		o.common = &corev3.HttpProtocolOptions{IdleTimeout: idle, MaxConnectionDuration: lifetime}
		if perConnection > 0 {
			o.common.MaxRequestsPerConnection = uint32Value(uint32(perConnection))
		}
	}
	// An HTTP/1.1 connection has one stream: the limit only means something on HTTP/2.
	if n := http.GetMaxConcurrentStreams(); n > 0 && (o.h2 || o.downstream) {
		o.maxConcurrentStreams = uint32(n)
	}
}

// upstreamOptions returns the upstream_http_protocol_options, created on first use.
func (o *protocolOptions) upstreamOptions() *corev3.UpstreamHttpProtocolOptions {
	if o.upstream == nil {
		o.upstream = &corev3.UpstreamHttpProtocolOptions{}
	}
	return o.upstream
}

// setOn attaches the options to the cluster, if there are any. Envoy requires the protocol to
// be chosen whenever the extension is present: HTTP/1.1 unless HTTP/2 or the client's.
func (o *protocolOptions) setOn(c *clusterv3.Cluster) {
	custom := o.common != nil || o.upstream != nil || o.outlier != nil || o.maxConcurrentStreams > 0
	switch {
	case !custom && !o.h2 && !o.downstream:
		return
	case !custom && o.h2 && !o.downstream:
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: http2OptionsAny}
		return
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions:   o.common,
		UpstreamHttpProtocolOptions: o.upstream,
		OutlierDetection:            o.outlier,
	}
	var h2 *corev3.Http2ProtocolOptions
	if o.h2 || o.downstream {
		h2 = &corev3.Http2ProtocolOptions{}
		if o.maxConcurrentStreams > 0 {
			h2.MaxConcurrentStreams = uint32Value(o.maxConcurrentStreams)
		}
	}
	switch {
	case o.downstream:
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: h2,
			},
		}
	case o.h2:
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
		}}
	default:
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}}
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: MustAny(opts)}
}
