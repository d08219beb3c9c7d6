package telemetry

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
)

// The mesh: a Deployment's Pod (reviews-v1-abc, owned by ReplicaSet reviews-v1-7d9f) calling
// a WorkloadEntry (ratings-vm) behind ratings.prod.svc.cluster.local.
const meshYAML = `apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-abc
  namespace: bookinfo
  labels: {app: reviews, version: v1, pod-template-hash: 7d9f}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v1-7d9f, uid: "1", controller: true}
spec:
  serviceAccountName: bookinfo-reviews
  containers: [{name: app, image: reviews}]
status: {podIP: 10.0.0.1, phase: Running}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-vm, namespace: prod}
spec:
  address: 10.0.0.2
  serviceAccount: ratings
  labels: {app: ratings, service.istio.io/canonical-revision: "2024"}
  ports: {http: 9080}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: prod}
spec:
  hosts: [ratings.prod.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
`

func testService(t *testing.T) (*Service, *model.Snapshot, *prometheus.Registry) {
	t.Helper()
	objects, err := config.Parse("mesh.yaml", []byte(meshYAML))
	if err != nil {
		t.Fatal(err)
	}
	snap := model.Build(config.NewSet(objects...))
	reg := prometheus.NewRegistry()
	s := New(Options{Snapshot: func() *model.Snapshot { return snap }, Registry: reg})
	return s, snap, reg
}

func stream(t *testing.T, s *Service, nodeID, logName string) *streamState {
	t.Helper()
	st, err := s.newStream(accesslogv3Identifier{nodeID, logName}.proto())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func address(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// labelsOf returns the labels of the only series of a metric, or fails.
func labelsOf(t *testing.T, reg *prometheus.Registry, metric string) map[string]string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		if len(f.GetMetric()) != 1 {
			t.Fatalf("%s: %d series, want 1", metric, len(f.GetMetric()))
		}
		out := map[string]string{}
		for _, l := range f.GetMetric()[0].GetLabel() {
			out[l.GetName()] = l.GetValue()
		}
		return out
	}
	t.Fatalf("no %s", metric)
	return nil
}

func wantLabels(t *testing.T, got map[string]string, want string) {
	t.Helper()
	for _, kv := range strings.Split(want, " ") {
		k, v, _ := strings.Cut(kv, "=")
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestSourceReporterHTTP(t *testing.T) {
	s, snap, reg := testService(t)
	st := stream(t, s, "sidecar~10.0.0.1~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local", logSource)
	st.http(s, snap, &accesslogdatav3.HTTPAccessLogEntry{
		CommonProperties: &accesslogdatav3.AccessLogCommon{
			UpstreamRemoteAddress:      address("10.0.0.2", 9080),
			UpstreamCluster:            "outbound|80||ratings.prod.svc.cluster.local",
			TimeToLastDownstreamTxByte: durationpb.New(12 * time.Millisecond),
			ResponseFlags:              &accesslogdatav3.ResponseFlags{UpstreamRetryLimitExceeded: true, UpstreamRemoteReset: true},
		},
		Request:  &accesslogdatav3.HTTPRequestProperties{RequestHeadersBytes: 100, RequestBodyBytes: 20},
		Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(503), ResponseTrailers: map[string]string{"grpc-status": "14"}},
	}, time.Now())
	got := labelsOf(t, reg, "istio_requests_total")
	wantLabels(t, got, "reporter=source source_workload=reviews-v1 source_workload_namespace=bookinfo "+
		"source_principal=spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews source_app=reviews source_version=v1 "+
		"source_canonical_service=reviews source_canonical_revision=v1 source_cluster=Kubernetes "+
		"destination_workload=ratings-vm destination_workload_namespace=prod destination_principal=spiffe://cluster.local/ns/prod/sa/ratings "+
		"destination_app=ratings destination_version=unknown destination_canonical_service=ratings destination_canonical_revision=2024 "+
		"destination_cluster=Kubernetes destination_service=ratings.prod.svc.cluster.local destination_service_name=ratings "+
		"destination_service_namespace=prod request_protocol=grpc response_code=503 grpc_response_status=14 "+
		"response_flags=UR,URX connection_security_policy=unknown")
	if n := seriesOf(s.metrics.duration); n != 1 {
		t.Errorf("duration series: %d", n)
	}
	if got := sumOf(s.metrics.requests); got != 1 {
		t.Errorf("requests: %v", got)
	}
}

func TestDestinationReporterSecurity(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  *accesslogdatav3.TLSProperties
		want string
	}{
		{"mtls", &accesslogdatav3.TLSProperties{PeerCertificateProperties: &accesslogdatav3.TLSProperties_CertificateProperties{
			SubjectAltName: []*accesslogdatav3.TLSProperties_CertificateProperties_SubjectAltName{{San: &accesslogdatav3.TLSProperties_CertificateProperties_SubjectAltName_Uri{Uri: "spiffe://cluster.local/ns/bookinfo/sa/other"}}}}},
			"connection_security_policy=mutual_tls source_principal=spiffe://cluster.local/ns/bookinfo/sa/other"},
		{"plaintext", nil, "connection_security_policy=none source_principal=unknown"},
		{"resumed", &accesslogdatav3.TLSProperties{}, "connection_security_policy=mutual_tls source_principal=spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, snap, reg := testService(t)
			st := stream(t, s, "sidecar~10.0.0.2~ratings-vm.prod~prod.svc.cluster.local", logDestination)
			st.http(s, snap, &accesslogdatav3.HTTPAccessLogEntry{
				CommonProperties: &accesslogdatav3.AccessLogCommon{
					DownstreamRemoteAddress: address("10.0.0.1", 40000),
					UpstreamCluster:         "inbound|9080||",
					TlsProperties:           tc.tls,
				},
				Request:  &accesslogdatav3.HTTPRequestProperties{Authority: "whatever:80"},
				Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)},
			}, time.Now())
			wantLabels(t, labelsOf(t, reg, "istio_requests_total"), tc.want+" reporter=destination source_workload=reviews-v1 "+
				"destination_workload=ratings-vm destination_service=ratings.prod.svc.cluster.local request_protocol=http "+
				"response_flags=- response_code=200 grpc_response_status=")
		})
	}
}

func TestUnknownPeerAndPassthrough(t *testing.T) {
	s, snap, reg := testService(t)
	st := stream(t, s, "sidecar~10.0.0.9~gone.ns~ns.svc.cluster.local", logSource)
	st.http(s, snap, &accesslogdatav3.HTTPAccessLogEntry{
		CommonProperties: &accesslogdatav3.AccessLogCommon{UpstreamRemoteAddress: address("192.0.2.1", 443), UpstreamCluster: "PassthroughCluster"},
		Response:         &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)},
	}, time.Now())
	wantLabels(t, labelsOf(t, reg, "istio_requests_total"), "source_workload=gone source_workload_namespace=ns source_app=unknown "+
		"destination_workload=unknown destination_workload_namespace=unknown destination_principal=unknown destination_cluster=unknown "+
		"destination_service=PassthroughCluster destination_service_name=PassthroughCluster destination_service_namespace=unknown")
}

func TestTCPConnectionLifecycle(t *testing.T) {
	s, snap, reg := testService(t)
	st := stream(t, s, "sidecar~10.0.0.2~ratings-vm.prod~prod.svc.cluster.local", logDestination)
	start := timestamppb.Now()
	entry := func(kind accesslogdatav3.AccessLogType, sent, received uint64, tls *accesslogdatav3.TLSProperties) {
		st.tcp(s, snap, &accesslogdatav3.TCPAccessLogEntry{
			CommonProperties: &accesslogdatav3.AccessLogCommon{
				StreamId: "c1", AccessLogType: kind, IntermediateLogEntry: kind != accesslogdatav3.AccessLogType_TcpConnectionEnd,
				StartTime: start, DownstreamRemoteAddress: address("10.0.0.1", 40000), UpstreamCluster: "inbound|9080||", TlsProperties: tls,
			},
			ConnectionProperties: &accesslogdatav3.ConnectionProperties{SentBytes: sent, ReceivedBytes: received},
		}, time.Now())
	}
	entry(accesslogdatav3.AccessLogType_TcpUpstreamConnected, 0, 0, nil)
	entry(accesslogdatav3.AccessLogType_TcpPeriodic, 100, 10, nil)
	// The last entry's different TLS view must not split the connection over two series.
	entry(accesslogdatav3.AccessLogType_TcpConnectionEnd, 150, 30, &accesslogdatav3.TLSProperties{})
	for metric, want := range map[*prometheus.CounterVec]float64{s.metrics.tcpOpened: 1, s.metrics.tcpClosed: 1, s.metrics.tcpSent: 150, s.metrics.tcpReceived: 30} {
		if n := seriesOf(metric); n != 1 {
			t.Errorf("%d series, want 1", n)
		}
		if got := sumOf(metric); got != want {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	wantLabels(t, labelsOf(t, reg, "istio_tcp_connections_opened_total"), "request_protocol=tcp connection_security_policy=none source_workload=reviews-v1")
	if len(st.tcpConns) != 0 {
		t.Errorf("%d connections still held after their last entry", len(st.tcpConns))
	}
}

func TestSeriesExpireAndAreBounded(t *testing.T) {
	s, snap, _ := testService(t)
	s.metrics.maxSeries = 1
	st := stream(t, s, "sidecar~10.0.0.1~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local", logSource)
	t0 := time.Now()
	for _, code := range []uint32{200, 500} {
		st.http(s, snap, &accesslogdatav3.HTTPAccessLogEntry{Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code)}}, t0)
	}
	if n, dropped := seriesOf(s.metrics.requests), sumOf(s.metrics.dropped); n != 1 || dropped != 1 {
		t.Errorf("over the limit: %d series, %v dropped; want 1 and 1", n, dropped)
	}
	s.metrics.expire(t0.Add(time.Minute))
	if n := seriesOf(s.metrics.requests) + seriesOf(s.metrics.duration); n != 0 {
		t.Errorf("after expiry: %d series", n)
	}
}

func TestStreamRefusesUnknownLogsAndNodes(t *testing.T) {
	s, _, _ := testService(t)
	for _, id := range []accesslogv3Identifier{{"not-a-node", logSource}, {"sidecar~10.0.0.1~a.b~b.svc.cluster.local", "other"}} {
		if _, err := s.newStream(id.proto()); err == nil {
			t.Errorf("%v accepted", id)
		}
	}
}

// seriesOf counts a collector's series; sumOf adds their values (counters) or counts
// (histograms). (prometheus/testutil would need a module go.mod does not have.)
func seriesOf(c prometheus.Collector) int { return len(collect(c)) }

func sumOf(c prometheus.Collector) float64 {
	var sum float64
	for _, m := range collect(c) {
		sum += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
	}
	return sum
}

func collect(c prometheus.Collector) []*dto.Metric {
	ch := make(chan prometheus.Metric, 1000)
	c.Collect(ch)
	close(ch)
	var out []*dto.Metric
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			panic(err)
		}
		out = append(out, &d)
	}
	return out
}
