package translate

import (
	"strings"
	"sync/atomic"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// Istio's standard metrics (istio_requests_total and friends) are not counted in Envoy: every
// sidecar streams an access log entry per request and per TCP connection to pilot over gRPC
// (envoy.access_loggers.http_grpc / tcp_grpc), on the cluster that already reaches pilot for
// ADS, and pilot resolves both ends to workloads and counts (package telemetry). Envoy has no
// Wasm or Istio stats filter here, and this keeps the sidecar's configuration plain.
//
// The log name says which end reports: outbound listeners and gateways report as the source
// (Istio's gateways do too), inbound listeners as the destination.
const (
	// AccessLogSource is the log name of entries reported by the calling side.
	AccessLogSource = "skiff-source"
	// AccessLogDestination is the log name of entries reported by the called side.
	AccessLogDestination = "skiff-destination"
	// accessLogCluster is pilot's ADS cluster in every bootstrap (bootstrap.XDSClusterName).
	accessLogCluster = "xds-grpc"
	// accessLogFlush bounds how long an entry waits in Envoy's buffer: metrics lag traffic by
	// at most this plus a scrape interval.
	accessLogFlush = time.Second
	// tcpAccessLogInterval reports the bytes of long-lived connections while they are open,
	// as Istio's stats filter does for istio_tcp_*_bytes_total.
	tcpAccessLogInterval = 15 * time.Second
)

// GrpcStatusTrailer is logged for gRPC's status, Istio's grpc_response_status label.
const GrpcStatusTrailer = "grpc-status"

// The four access logs are built once: every listener shares the same messages, and Envoy, which
// keys its gRPC loggers by configuration, shares one stream per log and worker.
var (
	httpSourceAccessLog      = httpAccessLog(AccessLogSource)
	httpDestinationAccessLog = httpAccessLog(AccessLogDestination)
	tcpSourceAccessLog       = tcpAccessLog(AccessLogSource)
	tcpDestinationAccessLog  = tcpAccessLog(AccessLogDestination)
	tcpAccessLogOptions      = &tcpproxyv3.TcpProxy_TcpAccessLogOptions{
		// Connections opened are counted when they open, not when they close.
		FlushAccessLogOnConnected: true,
		AccessLogFlushInterval:    Duration(tcpAccessLogInterval),
	}
)

func commonAccessLogConfig(logName string) *grpcalsv3.CommonGrpcAccessLogConfig {
	return &grpcalsv3.CommonGrpcAccessLogConfig{
		LogName: logName,
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: accessLogCluster},
		}},
		TransportApiVersion: corev3.ApiVersion_V3,
		BufferFlushInterval: Duration(accessLogFlush),
	}
}

func httpAccessLog(logName string) []*accesslogv3.AccessLog {
	return []*accesslogv3.AccessLog{{
		Name: "envoy.access_loggers.http_grpc",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: MustAny(&grpcalsv3.HttpGrpcAccessLogConfig{
			CommonConfig:                    commonAccessLogConfig(logName),
			AdditionalResponseTrailersToLog: []string{GrpcStatusTrailer},
			AdditionalResponseHeadersToLog:  []string{GrpcStatusTrailer}, // trailers-only responses
		})},
	}}
}

func tcpAccessLog(logName string) []*accesslogv3.AccessLog {
	return []*accesslogv3.AccessLog{{
		Name: "envoy.access_loggers.tcp_grpc",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: MustAny(&grpcalsv3.TcpGrpcAccessLogConfig{
			CommonConfig: commonAccessLogConfig(logName),
		})},
	}}
}

// accessLogsOff leaves the access logs out of every listener: pilot's --istio-metrics=false, set
// once at start, before any translation (it is process-wide, like the flag, so that the proxy
// class cache never holds listeners of both kinds).
var accessLogsOff atomic.Bool

// SetAccessLogs says whether listeners stream access logs to pilot (Istio's standard metrics);
// they do unless told otherwise. Call it before translating anything.
func SetAccessLogs(on bool) { accessLogsOff.Store(!on) }

// httpAccessLogFor is the access log of a connection manager, by its stat prefix: inbound ones
// report as the destination.
func httpAccessLogFor(statPrefix string) []*accesslogv3.AccessLog {
	if accessLogsOff.Load() {
		return nil
	}
	if strings.HasPrefix(statPrefix, "inbound_") {
		return httpDestinationAccessLog
	}
	return httpSourceAccessLog
}

// tcpAccessLogFor is the access log of a TCP proxy to cluster: inbound clusters report as the
// destination.
func tcpAccessLogFor(cluster string) []*accesslogv3.AccessLog {
	if accessLogsOff.Load() {
		return nil
	}
	if strings.HasPrefix(cluster, "inbound|") {
		return tcpDestinationAccessLog
	}
	return tcpSourceAccessLog
}

// tcpAccessLogOptionsFor are the TCP proxies' flush options, none without access logs.
func tcpAccessLogOptionsFor() *tcpproxyv3.TcpProxy_TcpAccessLogOptions {
	if accessLogsOff.Load() {
		return nil
	}
	return tcpAccessLogOptions
}
