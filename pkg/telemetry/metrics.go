package telemetry

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// peerLabels are the labels of each end, Istio's order.
var peerLabels = []string{"workload", "workload_namespace", "principal", "app", "version",
	"canonical_service", "canonical_revision", "cluster"}

// tcpLabels are the labels of Istio's TCP metrics; httpLabels add the response's.
var tcpLabels, httpLabels = func() ([]string, []string) {
	l := []string{"reporter"}
	for _, side := range []string{"source_", "destination_"} {
		for _, p := range peerLabels {
			l = append(l, side+p)
		}
	}
	l = append(l, "destination_service", "destination_service_name", "destination_service_namespace",
		"request_protocol", "response_flags", "connection_security_policy")
	return l, append(append([]string{}, l...), "response_code", "grpc_response_status")
}()

// Positions of the labels the graph reads, in httpLabels (tcpLabels is its prefix).
var (
	labelResponseCode   = slices.Index(httpLabels, "response_code")
	labelGRPCStatus     = slices.Index(httpLabels, "grpc_response_status")
	labelSecurityPolicy = slices.Index(httpLabels, "connection_security_policy")
)

// edgeLabels are the positions, in tcpLabels, of edgeKey's fields in its order.
var edgeLabels = func() (at [13]int) {
	for i, name := range []string{"reporter", "source_workload_namespace", "source_workload", "source_app",
		"source_version", "destination_service", "destination_service_name", "destination_service_namespace",
		"destination_workload_namespace", "destination_workload", "destination_app", "destination_version",
		"request_protocol"} {
		at[i] = slices.Index(tcpLabels, name)
	}
	return at
}()

// edgeKeyOf is the graph's key of a label set (HTTP or TCP).
func edgeKeyOf(v []string) edgeKey {
	at := &edgeLabels
	return edgeKey{
		reporter:     v[at[0]],
		srcNamespace: v[at[1]], srcWorkload: v[at[2]], srcApp: v[at[3]], srcVersion: v[at[4]],
		service: v[at[5]], serviceName: v[at[6]], serviceNamespace: v[at[7]],
		dstNamespace: v[at[8]], dstWorkload: v[at[9]], dstApp: v[at[10]], dstVersion: v[at[11]],
		protocol: v[at[12]],
	}
}

// Istio's default histogram buckets (its stats filter's): milliseconds for durations, and
// powers of ten for sizes.
var (
	durationBounds = [...]float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
		30000, 60000, 300000, 600000, 1800000, 3600000}
	durationBuckets = durationBounds[:]
	sizeBuckets     = prometheus.ExponentialBuckets(1, 10, 9)
)

// metrics are Istio's standard metrics. Series are deleted once no entry has touched them for
// the idle time (a workload gone, a peer that stopped calling): Prometheus reads a series that
// returns later as a counter reset, which rate() and increase() absorb. At most maxSeries label
// sets of each kind are kept; entries that would add more are dropped and counted.
type metrics struct {
	requests                 *prometheus.CounterVec
	duration, reqBytes, resp *prometheus.HistogramVec
	tcpSent, tcpReceived     *prometheus.CounterVec
	tcpOpened, tcpClosed     *prometheus.CounterVec
	entries                  *prometheus.CounterVec
	dropped                  prometheus.Counter
	series                   *prometheus.GaugeVec

	// graph is the last minute of the same entries, for the mesh graph page.
	graph *window

	maxSeries int
	mu        sync.Mutex
	httpSeen  map[labelKey]time.Time
	tcpSeen   map[labelKey]time.Time
}

// labelKey is a label set as a map key (the values joined by a separator no value contains).
type labelKey string

func newMetrics(reg prometheus.Registerer, maxSeries int, graph *window) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total",
			Help: "Requests, by the proxy that reported them (Istio's standard metric)."}, httpLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds",
			Help: "Request durations in milliseconds.", Buckets: durationBuckets}, httpLabels),
		reqBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_bytes",
			Help: "Request sizes (headers and body) in bytes.", Buckets: sizeBuckets}, httpLabels),
		resp: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_response_bytes",
			Help: "Response sizes (headers and body) in bytes.", Buckets: sizeBuckets}, httpLabels),
		tcpSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_sent_bytes_total",
			Help: "Bytes sent in responses on TCP connections."}, tcpLabels),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_received_bytes_total",
			Help: "Bytes received in requests on TCP connections."}, tcpLabels),
		tcpOpened: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_opened_total",
			Help: "TCP connections opened."}, tcpLabels),
		tcpClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_closed_total",
			Help: "TCP connections closed."}, tcpLabels),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_telemetry_access_log_entries_total",
			Help: "Access log entries received from proxies, by kind (http, tcp)."}, []string{"kind"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "skiff_telemetry_series_dropped_total",
			Help: "Access log entries not counted because their label set would exceed the series limit."}),
		series: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "skiff_telemetry_series",
			Help: "Label sets of Istio's metrics held, by kind (http, tcp)."}, []string{"kind"}),
		graph:     graph,
		maxSeries: maxSeries,
		httpSeen:  map[labelKey]time.Time{},
		tcpSeen:   map[labelKey]time.Time{},
	}
	reg.MustRegister(m.requests, m.duration, m.reqBytes, m.resp, m.tcpSent, m.tcpReceived,
		m.tcpOpened, m.tcpClosed, m.entries, m.dropped, m.series)
	return m
}

func keyOf(values []string) labelKey {
	n := 0
	for _, v := range values {
		n += len(v) + 1
	}
	b := make([]byte, 0, n)
	for _, v := range values {
		b = append(append(b, v...), 0)
	}
	return labelKey(b)
}

// admit records that the label set was used now, reporting false when it is new and the limit
// is reached. Callers hold mu until they have updated the series, so expire never deletes a
// series between its admission and its update.
func (m *metrics) admit(seen map[labelKey]time.Time, values []string, now time.Time) bool {
	k := keyOf(values)
	if _, ok := seen[k]; !ok && len(seen) >= m.maxSeries {
		m.dropped.Inc()
		return false
	}
	seen[k] = now
	return true
}

// request counts one HTTP request.
func (m *metrics) request(values []string, durationMS, requestBytes, responseBytes float64, now time.Time) {
	m.entries.WithLabelValues("http").Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.admit(m.httpSeen, values, now) {
		return
	}
	m.requests.WithLabelValues(values...).Inc()
	m.duration.WithLabelValues(values...).Observe(durationMS)
	m.reqBytes.WithLabelValues(values...).Observe(requestBytes)
	m.resp.WithLabelValues(values...).Observe(responseBytes)
	code, _ := strconv.Atoi(values[labelResponseCode])
	m.graph.request(edgeKeyOf(values), code, values[labelGRPCStatus], values[labelSecurityPolicy], durationMS, now)
}

// tcp adds a TCP entry's connections and bytes.
func (m *metrics) tcp(values []string, opened, closed bool, sent, received uint64, now time.Time) {
	m.entries.WithLabelValues("tcp").Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.admit(m.tcpSeen, values, now) {
		return
	}
	if opened {
		m.tcpOpened.WithLabelValues(values...).Inc()
	}
	if closed {
		m.tcpClosed.WithLabelValues(values...).Inc()
	}
	m.tcpSent.WithLabelValues(values...).Add(float64(sent))
	m.tcpReceived.WithLabelValues(values...).Add(float64(received))
	m.graph.tcp(edgeKeyOf(values), opened, closed, sent, received, values[labelSecurityPolicy], now)
}

// expire deletes the series no entry touched since before cutoff.
func (m *metrics) expire(cutoff time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, at := range m.httpSeen {
		if at.Before(cutoff) {
			values := splitKey(k)
			m.requests.DeleteLabelValues(values...)
			m.duration.DeleteLabelValues(values...)
			m.reqBytes.DeleteLabelValues(values...)
			m.resp.DeleteLabelValues(values...)
			delete(m.httpSeen, k)
		}
	}
	for k, at := range m.tcpSeen {
		if at.Before(cutoff) {
			values := splitKey(k)
			for _, v := range []*prometheus.CounterVec{m.tcpSent, m.tcpReceived, m.tcpOpened, m.tcpClosed} {
				v.DeleteLabelValues(values...)
			}
			delete(m.tcpSeen, k)
		}
	}
	m.series.WithLabelValues("http").Set(float64(len(m.httpSeen)))
	m.series.WithLabelValues("tcp").Set(float64(len(m.tcpSeen)))
}

func splitKey(k labelKey) []string {
	var out []string
	s := string(k)
	for len(s) > 0 {
		i := 0
		for s[i] != 0 {
			i++
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
	return out
}
