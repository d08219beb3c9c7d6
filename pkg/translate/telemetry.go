package translate

import (
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// A proxy's telemetry (Istio's standard metrics, access logs, tracing) is configuration like
// any other: the mesh configuration and the Telemetry objects that apply to the proxy
// (model.Snapshot.TelemetryFor) say what its listeners carry. listenerTelemetry is that,
// built once per snapshot for every proxy with the same applicable Telemetry objects, type and
// tracing identity, and read by every connection manager and TCP proxy the proxy's listeners
// have: inbound ones (the server side) by their stat prefix `inbound_` or cluster `inbound|`,
// everything else, gateways included, as the client side, as istiod classes them.
type listenerTelemetry struct {
	client, server sideTelemetry
	// router: a gateway's listeners are all the client side, whatever their names.
	router bool
	// tracers are the tracing providers' clusters the proxy needs (tracing.go).
	tracers []tracerCluster
}

// sideTelemetry is what the listeners of one side carry.
type sideTelemetry struct {
	httpLogs, tcpLogs []*accesslogv3.AccessLog
	// tcpOptions flush TCP access logs as pilot's metrics need them; nil without metrics.
	tcpOptions *tcpproxyv3.TcpProxy_TcpAccessLogOptions
	// tracing and requestID go into every connection manager of the side; nil without tracing.
	tracing   *hcmv3.HttpConnectionManager_Tracing
	requestID *hcmv3.RequestIDExtension
}

// listenerTelemetryKey is the Derived key of a proxy's listenerTelemetry: the merged Telemetry
// (one per applicable objects and type) and the proxy's tracing identity.
type listenerTelemetryKey struct {
	telemetry *model.Telemetry
	identity  tracingIdentity
}

// telemetryFor is the telemetry of the proxy's listeners; proxy must be resolved.
func telemetryFor(snap *model.Snapshot, proxy *model.Proxy) *listenerTelemetry {
	t := snap.TelemetryFor(proxy)
	key := listenerTelemetryKey{telemetry: t}
	if t.Client.Tracing != nil || t.Server.Tracing != nil {
		key.identity = tracingIdentityOf(proxy)
	}
	return snap.Derived(key, func() any {
		lt := &listenerTelemetry{router: proxy.Type == model.Router}
		mesh := snap.Mesh()
		build := func(side *sideTelemetry, mode model.TelemetryMode, source bool) {
			if mode.Metrics {
				if source {
					side.httpLogs, side.tcpLogs = httpSourceAccessLog, tcpSourceAccessLog
				} else {
					side.httpLogs, side.tcpLogs = httpDestinationAccessLog, tcpDestinationAccessLog
				}
				side.tcpOptions = tcpAccessLogOptions
			}
			if len(mode.AccessLogs) > 0 {
				side.httpLogs = append([]*accesslogv3.AccessLog(nil), side.httpLogs...)
				side.tcpLogs = append([]*accesslogv3.AccessLog(nil), side.tcpLogs...)
				for _, al := range mode.AccessLogs {
					log := fileAccessLog(al.Provider, mesh, al.Filter)
					side.httpLogs = append(side.httpLogs, log)
					side.tcpLogs = append(side.tcpLogs, log)
				}
			} else if len(t.Key) == 0 && len(mesh.GetDefaultProviders().GetAccessLogging()) == 0 && mesh.GetAccessLogFile() != "" {
				// No Telemetry and no default provider: the mesh configuration's accessLogFile,
				// as istiod falls back to it.
				log := meshFileAccessLog(mesh.GetAccessLogFile(), mesh, "")
				side.httpLogs = append(append([]*accesslogv3.AccessLog(nil), side.httpLogs...), log)
				side.tcpLogs = append(append([]*accesslogv3.AccessLog(nil), side.tcpLogs...), log)
			}
			if mode.Tracing != nil {
				var cluster tracerCluster
				side.tracing, side.requestID, cluster = hcmTracing(snap, proxy, mode.Tracing, key.identity)
				if cluster.name != "" && !containsTracer(lt.tracers, cluster.name) {
					lt.tracers = append(lt.tracers, cluster)
				}
			}
		}
		build(&lt.client, t.Client, true)
		build(&lt.server, t.Server, false)
		return lt
	}).(*listenerTelemetry)
}

func containsTracer(list []tracerCluster, name string) bool {
	for _, c := range list {
		if c.name == name {
			return true
		}
	}
	return false
}

// side is the server side for inbound listeners, the client side otherwise.
func (t *listenerTelemetry) side(inbound bool) *sideTelemetry {
	if t == nil {
		return &sideTelemetry{}
	}
	if inbound && !t.router {
		return &t.server
	}
	return &t.client
}

// httpAccessLog is the access log of a connection manager, by its stat prefix: inbound ones
// report as the destination.
func (t *listenerTelemetry) httpAccessLog(statPrefix string) []*accesslogv3.AccessLog {
	return t.side(strings.HasPrefix(statPrefix, "inbound_")).httpLogs
}

// tcpAccessLog is the access log of a TCP proxy to cluster: inbound clusters report as the
// destination.
func (t *listenerTelemetry) tcpAccessLog(cluster string) []*accesslogv3.AccessLog {
	return t.side(strings.HasPrefix(cluster, "inbound|")).tcpLogs
}

// tcpAccessLogOptions are a TCP proxy's flush options, none without metrics.
func (t *listenerTelemetry) tcpAccessLogOptions(cluster string) *tcpproxyv3.TcpProxy_TcpAccessLogOptions {
	return t.side(strings.HasPrefix(cluster, "inbound|")).tcpOptions
}

// applyHTTP sets a connection manager's access logs and tracing, by its stat prefix.
func (t *listenerTelemetry) applyHTTP(hcm *hcmv3.HttpConnectionManager) {
	side := t.side(strings.HasPrefix(hcm.StatPrefix, "inbound_"))
	hcm.AccessLog = side.httpLogs
	hcm.Tracing = side.tracing
	hcm.RequestIdExtension = side.requestID
}

// configKey is what a proxy's telemetry adds to its configuration key: the Telemetry objects
// that apply follow from the namespace and the selected labels already in it, but the
// tracing identity (the span service name and Istio's canonical service tags) comes from
// labels no selector names.
func telemetryConfigKey(snap *model.Snapshot, proxy *model.Proxy) string {
	t := snap.TelemetryFor(proxy)
	if t.Client.Tracing == nil && t.Server.Tracing == nil {
		return ""
	}
	id := tracingIdentityOf(proxy)
	return "/trace=" + strconv.Quote(id.serviceName+"|"+id.canonicalService+"|"+id.canonicalRevision)
}
