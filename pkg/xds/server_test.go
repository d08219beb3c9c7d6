package xds

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/test/framework"
)

const testNode = "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local"

// startServer runs a Server on a loopback port and returns a client connection to it.
func startServer(t *testing.T) (*Server, *grpc.ClientConn) {
	t.Helper()
	return serve(t, Options{Registry: prometheus.NewRegistry()})
}

// serve runs a Server with opts on a loopback port until the test ends.
func serve(t *testing.T, opts Options) (*Server, *grpc.ClientConn) {
	t.Helper()
	s := New(opts)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	go func() { _ = s.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); s.Stop(); cancel() })
	return s, conn
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func meshSnapshot(endpoint string) *model.Snapshot {
	return model.Build(&config.Set{ServiceEntries: []*networkingv1.ServiceEntry{{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"},
		Spec: networking.ServiceEntry{
			Hosts:      []string{"reviews.default.svc.cluster.local"},
			Ports:      []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
			Resolution: networking.ServiceEntry_STATIC,
			Endpoints:  []*networking.WorkloadEntry{{Address: endpoint}},
		},
	}}})
}

func openADS(t *testing.T, conn *grpc.ClientConn) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func cdsRequest(node string) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resourcev3.ClusterType}
}

// A request that arrives before the first configuration is parked, then answered by the first
// push, and a client that half-closes right after its request still gets the answer.
func TestParkedWatchAnsweredOnFirstPushBeforeHalfClose(t *testing.T) {
	s, conn := startServer(t)
	stream := openADS(t, conn)
	if err := stream.Send(cdsRequest(testNode)); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the request park before there is any configuration
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("half-closed stream ended without an answer: %v", err)
	}
	if got := len(resp.Resources); got != 4 {
		t.Errorf("got %d clusters, want 4 (reviews, PassthroughCluster, BlackHoleCluster, InboundPassthroughCluster)", got)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after the answer: %v, want EOF", err)
	}
}

func TestMalformedNodeIsInvalidArgument(t *testing.T) {
	s, conn := startServer(t)
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	for _, id := range []string{"", "sidecar~1.2.3.4", "proxy~1.2.3.4~a.b~b.svc.cluster.local", "sidecar~1.2.3.4~nonamespace~x"} {
		stream := openADS(t, conn)
		if err := stream.Send(cdsRequest(id)); err != nil {
			t.Fatal(err)
		}
		_, err := stream.Recv()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("node %q: got %v, want InvalidArgument", id, err)
		}
	}
	if got := counterValue(t, s.tracker.metrics.badNodes); got != 4 {
		t.Errorf("rejected streams = %v, want 4", got)
	}
}

// A NACK shows in syncz with Envoy's error_detail and in pilot_total_xds_rejects; an ACK
// records the acked version.
func TestNackAndAckAreTracked(t *testing.T) {
	s, conn := startServer(t)
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	stream := openADS(t, conn)
	if err := stream.Send(cdsRequest(testNode)); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	nack := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.Nonce,
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "cluster outbound|80||x: bad"}}
	if err := stream.Send(nack); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the NACK in the status", func() bool {
		st := s.Statuses()
		return len(st) == 1 && st[0].Types["cds"].LastNack != nil
	})
	st := s.Statuses()[0]
	if n := st.Types["cds"].LastNack; n.Error != "cluster outbound|80||x: bad" || n.Nonce != resp.Nonce || n.Version != "" {
		t.Errorf("last NACK = %+v", n)
	}
	if got := counterValue(t, s.tracker.metrics.rejects.WithLabelValues("cds")); got != 1 {
		t.Errorf("pilot_total_xds_rejects{type=cds} = %v, want 1", got)
	}

	// A push brings a new version, which the client ACKs.
	s.Push(meshSnapshot("10.0.0.2"), time.Now())
	s.Push(model.Build(&config.Set{}), time.Now())
	resp, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	ack := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.Nonce, VersionInfo: resp.VersionInfo}
	if err := stream.Send(ack); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the CDS ACK in the status", func() bool { return s.Statuses()[0].Types["cds"].Acked == resp.VersionInfo })
}

// Proxies of one class share one set of resources, and the class goes when its last proxy does.
func TestProxiesShareTheirClass(t *testing.T) {
	s, conn := startServer(t)
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	var streams []discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	// Two streams of one workload (a hot restart, or a reconnect racing the old stream's end).
	for _, id := range []string{testNode, testNode} {
		stream := openADS(t, conn)
		if err := stream.Send(cdsRequest(id)); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, stream)
	}
	if got := len(s.cache.Classes()); got != 1 {
		t.Errorf("%d classes for two identical proxies, want 1", got)
	}
	for _, st := range streams {
		_ = st.CloseSend()
		if _, err := st.Recv(); err != io.EOF {
			t.Errorf("closing: %v", err)
		}
	}
	waitFor(t, "the class to be dropped", func() bool { return len(s.cache.Classes()) == 0 })
}

// waitFor polls cond, for state the server reaches after answering; the bound only turns a
// condition that never holds into a failure (see framework.Patience).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(framework.Patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %v", what, framework.Patience)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// In Kubernetes mode (IgnoreNodeLabels) the LABELS a proxy sends are dropped: its Pod's labels
// are the ones that count, and a proxy must not choose the policies that apply to it.
func TestNodeLabelsTrustedOnlyOutsideKubernetes(t *testing.T) {
	labels, err := structpb.NewStruct(map[string]any{labelsKey: map[string]any{"app": "admin"}})
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: testNode, Metadata: labels}
	trusted, err := proxyFromNode(node, true)
	if err != nil || trusted.Labels["app"] != "admin" {
		t.Fatalf("folder mode: labels %v (%v), want the node's", trusted.Labels, err)
	}
	ignored, err := proxyFromNode(node, false)
	if err != nil || len(ignored.Labels) != 0 {
		t.Fatalf("Kubernetes mode: labels %v (%v), want none from the node", ignored.Labels, err)
	}
}

// The tracker and the caches must agree on a stream's class, labels or not: the tracker says
// which class config_dump reads and which class to forget when its last proxy leaves.
func TestTrackerAndCacheAgreeOnTheClass(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		s, conn := serve(t, Options{Registry: prometheus.NewRegistry(), IgnoreNodeLabels: ignore})
		s.Push(meshSnapshot("10.0.0.1"), time.Now())
		labels, err := structpb.NewStruct(map[string]any{labelsKey: map[string]any{"istio": "ingressgateway"}})
		if err != nil {
			t.Fatal(err)
		}
		stream := openADS(t, conn)
		req := cdsRequest(testNode)
		req.Node.Metadata = labels
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		_, class, ok := s.tracker.ClassOf(testNode)
		if _, cached := s.cache.Classes()[class]; !ok || !cached {
			t.Errorf("IgnoreNodeLabels=%v: the tracker's class %q is not the cache's %v", ignore, class, s.cache.Classes())
		}
		if _, source, err := s.ConfigDump(testNode); err != nil || source != "served" {
			t.Errorf("IgnoreNodeLabels=%v: config_dump source %q (%v), want served", ignore, source, err)
		}
	}
}
