// Package telemetry turns the access logs sidecars stream to pilot into Istio's standard
// metrics (istio_requests_total, istio_request_duration_milliseconds, istio_request_bytes,
// istio_response_bytes, istio_tcp_*), with Istio's label names, values and buckets, so Kiali's
// graph and Istio's Grafana dashboards read them unchanged.
//
// Istio counts in each Envoy with its stats filter, after the two sidecars exchange metadata
// about themselves. Upstream Envoy has neither, so pilot counts instead: every listener logs
// over gRPC (envoy.service.accesslog.v3, configured by package translate on pilot's own ADS
// cluster), and here the reporting proxy is named by its stream's node ID, its peer by the
// connection's address (the Pod or WorkloadEntry at that IP in the current snapshot) and, on
// the destination side, by the SPIFFE ID of the client certificate mTLS proved.
//
// Past one pilot: each Envoy logs to the pilot it holds its ADS stream with (the same
// xds-grpc cluster), so each pilot counts its own proxies' traffic. The series of two pilots
// differ only in Prometheus' instance label, and Kiali's and Istio's dashboards' queries all
// sum over it, so they add up. A proxy that moves to another pilot starts its counters there
// from zero (the old pilot's series go idle and expire), which rate() and increase() read as
// a counter reset. The cost follows the traffic, not the mesh's size: one entry per request per
// reporter, about 0.07 of a core per 1,000 requests/s on the test VM (test/e2e's BenchmarkMetricsCost).
package telemetry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/pkg/model"
)

// Log names the translated listeners use (translate.AccessLogSource, AccessLogDestination);
// repeated here so this package does not import translation.
const (
	logSource      = "skiff-source"
	logDestination = "skiff-destination"
)

// Defaults for Options.
const (
	DefaultIdleSeries = 10 * time.Minute
	DefaultMaxSeries  = 100000
)

// Options configure a Service.
type Options struct {
	// Snapshot returns the configuration peers are resolved against.
	Snapshot func() *model.Snapshot
	Registry prometheus.Registerer
	Logger   *slog.Logger
	// TrustDomain of the principals of workloads named by address; ca.DefaultTrustDomain if
	// empty.
	TrustDomain string
	// IdleSeries is how long a series no entry updates is kept (DefaultIdleSeries if zero);
	// MaxSeries bounds the label sets of each kind (DefaultMaxSeries if zero).
	IdleSeries time.Duration
	MaxSeries  int
	// GraphWindow is the span of traffic the mesh graph shows (DefaultGraphWindow if zero).
	GraphWindow time.Duration
}

// Service is the access log service.
type Service struct {
	accesslogv3.UnimplementedAccessLogServiceServer
	opts    Options
	metrics *metrics
	graph   *window
	log     *slog.Logger
	now     func() time.Time
}

// New builds the service; Register it on a gRPC server and Run its expiry.
func New(opts Options) *Service {
	if opts.TrustDomain == "" {
		opts.TrustDomain = ca.DefaultTrustDomain
	}
	if opts.IdleSeries <= 0 {
		opts.IdleSeries = DefaultIdleSeries
	}
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.GraphWindow <= 0 {
		opts.GraphWindow = DefaultGraphWindow
	}
	graph := newWindow(opts.GraphWindow, time.Now())
	return &Service{opts: opts, metrics: newMetrics(opts.Registry, opts.MaxSeries, graph), graph: graph, log: log, now: time.Now}
}

// Register adds the service to a gRPC server.
func (s *Service) Register(g grpc.ServiceRegistrar) { accesslogv3.RegisterAccessLogServiceServer(g, s) }

// Run deletes idle series until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.IdleSeries / 10)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.metrics.expire(now.Add(-s.opts.IdleSeries))
		}
	}
}

// StreamAccessLogs reads one proxy's logs. The first message names the proxy and the log;
// Envoy sends neither again on that stream.
func (s *Service) StreamAccessLogs(stream grpc.ClientStreamingServer[accesslogv3.StreamAccessLogsMessage, accesslogv3.StreamAccessLogsResponse]) error {
	var st *streamState
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		if st == nil {
			st, err = s.newStream(msg.GetIdentifier())
			if err != nil {
				s.log.Warn("access log stream refused", "err", err)
				return err
			}
		}
		snap := s.opts.Snapshot()
		if snap == nil {
			continue
		}
		now := s.now()
		for _, e := range msg.GetHttpLogs().GetLogEntry() {
			st.http(s, snap, e, now)
		}
		for _, e := range msg.GetTcpLogs().GetLogEntry() {
			st.tcp(s, snap, e, now)
		}
	}
}

// streamState is what one stream's entries share: the reporting proxy and the bytes already
// counted of each open TCP connection.
type streamState struct {
	proxy       *model.Proxy
	destination bool // reporter=destination
	// tcpConns are the open connections: Envoy's periodic and final entries carry totals, so
	// what was counted is kept until the last. A connection's entries all come from one
	// worker's logger, so one stream; they go with the stream if it breaks.
	tcpConns map[tcpConn]*tcpState
}

// tcpConn names a connection: by its stream ID, else by its downstream address and start.
type tcpConn struct {
	id     string
	remote netip.AddrPort
	start  int64
}

// tcpState is an open connection's labels and the bytes counted so far.
type tcpState struct {
	values         []string
	sent, received uint64
}

func (s *Service) newStream(id *accesslogv3.StreamAccessLogsMessage_Identifier) (*streamState, error) {
	proxy, err := model.ParseNodeID(id.GetNode().GetId())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "access log stream: %v", err)
	}
	st := &streamState{proxy: proxy, tcpConns: map[tcpConn]*tcpState{}}
	switch id.GetLogName() {
	case logSource:
	case logDestination:
		st.destination = true
	default:
		return nil, status.Errorf(codes.InvalidArgument, "access log stream from %s: unknown log name %q", proxy.NodeID, id.GetLogName())
	}
	return st, nil
}
