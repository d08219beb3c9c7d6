package telemetry

import (
	"net/netip"
	"strconv"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// values are the TCP labels of an entry, in tcpLabels' order, with room for the two HTTP ones.
//
// The reporter's own end is its workload (the node ID's); the other end is the workload at the
// peer's address: the upstream host for the source reporter, the downstream connection for the
// destination reporter (each sidecar binds its upstream connections to its own address, so the
// address is the calling pod's). The destination reporter takes the caller's principal from its
// certificate, and says whether mTLS carried the request; the source reporter cannot see the
// upstream TLS, so its connection_security_policy is "unknown", as in Istio.
func (st *streamState) values(s *Service, snap *model.Snapshot, c *accesslogdatav3.AccessLogCommon, protocol, authority string) []string {
	self := snap.Workload(st.proxy.Namespace, st.proxy.Name)
	local := peerOf(snap, self, s.opts.TrustDomain)
	if self == nil {
		local.workload, local.namespace, local.cluster = st.proxy.Name, st.proxy.Namespace, Cluster
	}
	var src, dst peer
	var svc service
	policy := unknown
	if st.destination {
		dst = local
		src = peerOf(snap, workloadAt(snap, addressOf(c.GetDownstreamRemoteAddress())), s.opts.TrustDomain)
		switch tls := c.GetTlsProperties(); {
		case tls == nil:
			// Only mTLS proves who called: without it the principal is unknown, whatever
			// workload holds the address.
			src.principal, policy = unknown, "none"
		case peerPrincipal(tls) != "":
			src.principal, policy = peerPrincipal(tls), "mutual_tls"
		default:
			// Sidecars' inbound TLS always requires a client certificate, but Envoy logs none
			// for a resumed TLS session (seen on TCP connections, each its own session): the
			// session was established with one, so the policy is still mutual_tls, and the
			// principal the caller's workload's, as for the source reporter.
			policy = "mutual_tls"
		}
		svc = inboundService(snap, self, c.GetUpstreamCluster(), authority)
	} else {
		src = local
		dst = peerOf(snap, workloadAt(snap, addressOf(c.GetUpstreamRemoteAddress())), s.opts.TrustDomain)
		svc = outboundService(snap, c.GetUpstreamCluster(), st.proxy.Namespace)
	}
	reporter := "source"
	if st.destination {
		reporter = "destination"
	}
	v := make([]string, 0, len(httpLabels))
	v = append(v, reporter)
	for _, p := range []peer{src, dst} {
		v = append(v, p.workload, p.namespace, p.principal, p.app, p.version, p.canonicalService, p.canonicalRevision, p.cluster)
	}
	return append(v, svc.host, svc.name, svc.namespace, protocol, responseFlags(c.GetResponseFlags()), policy)
}

func workloadAt(snap *model.Snapshot, ip netip.Addr) *model.Workload {
	if !ip.IsValid() {
		return nil
	}
	return snap.WorkloadAt(ip)
}

// http counts a request. It is gRPC when the response carries grpc-status (as a trailer, or a
// header in a trailers-only response); its duration is until the last byte sent downstream,
// its sizes headers and body, as Istio's.
func (st *streamState) http(s *Service, snap *model.Snapshot, e *accesslogdatav3.HTTPAccessLogEntry, now time.Time) {
	c, req, resp := e.GetCommonProperties(), e.GetRequest(), e.GetResponse()
	grpcStatus := resp.GetResponseTrailers()["grpc-status"]
	if grpcStatus == "" {
		grpcStatus = resp.GetResponseHeaders()["grpc-status"]
	}
	protocol := "http"
	if grpcStatus != "" {
		protocol = "grpc"
	}
	v := st.values(s, snap, c, protocol, req.GetAuthority())
	v = append(v, strconv.FormatUint(uint64(resp.GetResponseCode().GetValue()), 10), grpcStatus)
	d := c.GetTimeToLastDownstreamTxByte()
	if d == nil {
		d = c.GetDuration()
	}
	ms := float64(d.AsDuration()) / float64(time.Millisecond)
	s.metrics.request(v, ms, float64(req.GetRequestHeadersBytes()+req.GetRequestBodyBytes()),
		float64(resp.GetResponseHeadersBytes()+resp.GetResponseBodyBytes()), now)
}

// tcp counts a TCP entry: the connection opened at its first entry (Envoy flushes one when the
// upstream connects), closed at its last, and the bytes since its previous entry. Its labels
// are resolved once, at the first entry, so every entry of a connection lands on one series
// even when a later one lacks what the first carried (Envoy may log the final entry after the
// TLS session is gone). Received bytes are the request's (from downstream), sent bytes the
// response's, for both reporters, as Istio's istio_tcp_received_bytes_total and
// istio_tcp_sent_bytes_total.
func (st *streamState) tcp(s *Service, snap *model.Snapshot, e *accesslogdatav3.TCPAccessLogEntry, now time.Time) {
	c := e.GetCommonProperties()
	key := tcpConn{id: c.GetStreamId()}
	if key.id == "" {
		key.start = c.GetStartTime().AsTime().UnixNano()
		if sa := c.GetDownstreamRemoteAddress().GetSocketAddress(); sa != nil {
			if ip, err := netip.ParseAddr(sa.GetAddress()); err == nil {
				key.remote = netip.AddrPortFrom(ip, uint16(sa.GetPortValue()))
			}
		}
	}
	conn, seen := st.tcpConns[key]
	if !seen {
		conn = &tcpState{values: st.values(s, snap, c, "tcp", "")}
	}
	closed := c.GetAccessLogType() == accesslogdatav3.AccessLogType_TcpConnectionEnd ||
		c.GetAccessLogType() == accesslogdatav3.AccessLogType_NotSet && !c.GetIntermediateLogEntry()
	sent, received := e.GetConnectionProperties().GetSentBytes(), e.GetConnectionProperties().GetReceivedBytes()
	// Totals never shrink; guard anyway, so a reordering never adds 2^64.
	dSent, dReceived := sent-min(sent, conn.sent), received-min(received, conn.received)
	conn.sent, conn.received = max(sent, conn.sent), max(received, conn.received)
	if closed {
		delete(st.tcpConns, key)
	} else if !seen {
		st.tcpConns[key] = conn
	}
	s.metrics.tcp(conn.values, !seen, closed, dSent, dReceived, now)
}
