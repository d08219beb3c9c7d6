package translate

import (
	"encoding/json"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/structpb"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"github.com/skiffmesh/skiff/pkg/config"
)

// Istio's standard metrics (istio_requests_total and friends) are not counted in Envoy: every
// sidecar streams an access log entry per request and per TCP connection to pilot over gRPC
// (envoy.access_loggers.http_grpc / tcp_grpc), on the cluster that already reaches pilot for
// ADS, and pilot resolves both ends to workloads and counts (package telemetry). Envoy has no
// Wasm or Istio stats filter here, and this keeps the sidecar's configuration plain. These
// access logs are the `prometheus` metrics provider of the mesh configuration: a side of a proxy
// has them when the provider applies to it (Istio's default, defaultProviders.metrics) and no
// Telemetry turns its metrics off (model.Snapshot.TelemetryFor, telemetry.go).
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

// Access logs written by Envoy itself (Istio's `envoy` provider, envoyFileAccessLog providers,
// and the mesh configuration's accessLogFile) use Istio's formats, so that tools and habits
// built on istio-proxy's logs work unchanged.
const (
	// istioTextLogFormat is Istio's EnvoyTextLogFormat: time, request line, response code and
	// flags, the details of why Envoy answered as it did, bytes, durations, the client's
	// address chain, user agent, request ID, authority, the upstream host and cluster, the
	// local and remote addresses, SNI and the route's name.
	istioTextLogFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% " +
		"%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% " +
		"%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% " +
		"\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% " +
		"%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" " +
		"\"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" " +
		"%UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% " +
		"%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
	fileAccessLogName = "envoy.access_loggers.file"
	celFilterName     = "envoy.access_loggers.extension_filters.cel"
)

// istioJSONLogFormat is Istio's EnvoyJSONLogFormatIstio: the text format's fields under
// Istio's keys.
var istioJSONLogFormat = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER_RAW%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

// fileAccessLog is an envoyFileAccessLog provider's access log, istiod's: the built-in `envoy`
// provider without a format of its own takes the mesh configuration's encoding and format;
// any other provider its own text or labels, Istio's text format by default.
func fileAccessLog(p *meshconfig.MeshConfig_ExtensionProvider, mesh *meshconfig.MeshConfig, filter string) *accesslogv3.AccessLog {
	prov := p.GetEnvoyFileAccessLog()
	path := prov.GetPath()
	if path == "" {
		path = "/dev/stdout"
	}
	var format *corev3.SubstitutionFormatString
	switch lf := prov.GetLogFormat(); {
	case lf == nil && p.GetName() == config.EnvoyProvider && !prov.GetOmitEmptyValues():
		return meshFileAccessLog(path, mesh, filter)
	case lf.GetLabels() != nil:
		format = jsonLogFormat(lf.GetLabels())
	default:
		format = textLogFormat(lf.GetText())
	}
	format.OmitEmptyValues = prov.GetOmitEmptyValues()
	return newFileAccessLog(path, format, filter)
}

// meshFileAccessLog is the access log of the mesh configuration's accessLogFile (or of the
// `envoy` provider): accessLogEncoding TEXT or JSON, accessLogFormat or Istio's.
func meshFileAccessLog(path string, mesh *meshconfig.MeshConfig, filter string) *accesslogv3.AccessLog {
	if mesh.GetAccessLogEncoding() == meshconfig.MeshConfig_JSON {
		labels := &structpb.Struct{}
		if f := mesh.GetAccessLogFormat(); f != "" {
			// Validated when the mesh configuration was read.
			var fields map[string]any
			if json.Unmarshal([]byte(f), &fields) == nil {
				if s, err := structpb.NewStruct(fields); err == nil {
					labels = s
				}
			}
		}
		return newFileAccessLog(path, jsonLogFormat(labels), filter)
	}
	return newFileAccessLog(path, textLogFormat(mesh.GetAccessLogFormat()), filter)
}

// textLogFormat is a text format, Istio's when empty; Istio ends every format with a newline.
func textLogFormat(text string) *corev3.SubstitutionFormatString {
	if text == "" {
		text = istioTextLogFormat
	} else if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
		TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: text}},
	}}
}

// jsonLogFormat is a JSON format with the given labels, Istio's when there are none.
func jsonLogFormat(labels *structpb.Struct) *corev3.SubstitutionFormatString {
	if len(labels.GetFields()) == 0 {
		labels = &structpb.Struct{Fields: make(map[string]*structpb.Value, len(istioJSONLogFormat))}
		for k, v := range istioJSONLogFormat {
			labels.Fields[k] = structpb.NewStringValue(v)
		}
	}
	return &corev3.SubstitutionFormatString{
		Format:            &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: labels},
		JsonFormatOptions: &corev3.JsonFormatOptions{SortProperties: false},
	}
}

func newFileAccessLog(path string, format *corev3.SubstitutionFormatString, filter string) *accesslogv3.AccessLog {
	al := &accesslogv3.AccessLog{
		Name: fileAccessLogName,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: MustAny(&filev3.FileAccessLog{
			Path:            path,
			AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: format},
		})},
	}
	if filter != "" {
		// A Telemetry's filter expression, evaluated by Envoy's CEL access log filter.
		al.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{
			ExtensionFilter: &accesslogv3.ExtensionFilter{
				Name:       celFilterName,
				ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: MustAny(&celv3.ExpressionFilter{Expression: filter})},
			},
		}}
	}
	return al
}
