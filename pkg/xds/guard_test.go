package xds

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/xds/fanout"
	"github.com/skiffmesh/skiff/test/framework"
)

const (
	sotwMethod  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	deltaMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)

// manyServices is a mesh of n HTTP services: with 1,500 its clusters are hundreds of kB, more
// than a client's 64 kB flow-control window and grpc-go's 64 kB write quota together.
func manyServices(n int, endpoint string) *model.Snapshot {
	set := &config.Set{}
	for i := range n {
		host := fmt.Sprintf("svc-%d.default.svc.cluster.local", i)
		set.ServiceEntries = append(set.ServiceEntries, &networkingv1.ServiceEntry{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: "default"},
			Spec: networking.ServiceEntry{
				Hosts:      []string{host},
				Ports:      []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
				Resolution: networking.ServiceEntry_STATIC,
				Endpoints:  []*networking.WorkloadEntry{{Address: endpoint}},
			},
		})
	}
	return model.Build(set)
}

// rawCodec sends []byte as the message itself, so a test can send what no client library
// would; everything else is proto.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	b, err := proto.Marshal(v.(proto.Message))
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

var _ encoding.CodecV2 = rawCodec{}

// sendRaw opens a stream of method, sends msg (bytes or a message) and returns the status
// the stream ends with, reading and dropping any responses until then.
func sendRaw(t *testing.T, conn *grpc.ClientConn, method string, msgs ...any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), framework.Patience)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method,
		grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallSendMsgSize(256<<20))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := cs.SendMsg(m); err != nil {
			break // the stream already ended: its status is read below
		}
	}
	for {
		var resp discoveryv3.DiscoveryResponse
		if err := cs.RecvMsg(&resp); err != nil {
			return err
		}
	}
}

func wantStatus(t *testing.T, what string, err error, code codes.Code, msgPart string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), msgPart) {
		t.Errorf("%s: stream ended with %v, want %v with a message containing %q", what, err, code, msgPart)
	}
}

func closedStreams(t *testing.T, s *Server, reason string) float64 {
	t.Helper()
	return counterValue(t, s.guard.closed.WithLabelValues(reason))
}

// A proxy that never reads its stream is closed after the send timeout (ResourceExhausted if a
// Send blocked, DeadlineExceeded if its last response fitted its windows and went unanswered),
// and while it is stuck another proxy's push goes through at once.
func TestNeverReadingStreamIsClosedWhileOthersGetPushes(t *testing.T) {
	const sendTimeout = 10 * time.Second // long enough that the other proxy's push lands first
	s, conn := serve(t, Options{Registry: prometheus.NewRegistry(), SendTimeout: sendTimeout})
	s.Push(manyServices(1500, "10.0.0.1"), time.Now())

	// The hostile client: a connection whose windows stay at 64 kB (fixed windows turn off
	// grpc-go's window growth) and a stream it never reads.
	stuckConn, err := grpc.NewClient(conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stuckConn.Close() })
	const stuckNode = "sidecar~127.0.0.2~stuck-1.default~default.svc.cluster.local"
	stuck := subscribe(t, stuckConn, stuckNode)

	normal := subscribe(t, conn, testNode)
	clusters := make(chan int, 16)
	go func() {
		for {
			resp, err := normal.Recv()
			if err != nil {
				close(clusters)
				return
			}
			if resp.TypeUrl == resourcev3.ClusterType {
				clusters <- len(resp.Resources)
			}
			_ = normal.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce, VersionInfo: resp.VersionInfo})
		}
	}()
	waitCluster := func(want int) {
		t.Helper()
		deadline := time.After(framework.Patience)
		for {
			select {
			case n, ok := <-clusters:
				if !ok {
					t.Fatal("the normal proxy's stream ended")
				}
				if n == want {
					return
				}
			case <-deadline:
				t.Fatalf("the normal proxy got no CDS response of %d clusters within %v", want, framework.Patience)
			}
		}
	}
	waitCluster(1500 + 3)
	// The stuck stream was sent its clusters and is blocked sending its listeners.
	waitFor(t, "the stuck proxy to be sent its listeners", func() bool {
		for _, st := range s.Statuses() {
			if st.NodeID == stuckNode && st.Types["lds"] != nil && st.Types["lds"].Sent != "" {
				return true
			}
		}
		return false
	})

	// Its Send blocks (send_timeout), or its clusters go unanswered (unanswered): whichever
	// timer fires first closes it.
	stuckClosed := func() float64 {
		return closedStreams(t, s, closeSendTimeout) + closedStreams(t, s, closeUnanswered)
	}
	s.Push(manyServices(1501, "10.0.0.1"), time.Now())
	waitCluster(1501 + 3)
	if n := stuckClosed(); n != 0 {
		t.Fatalf("the stuck stream was closed (%v) before the other proxy's push arrived: the push waited for it", n)
	}

	waitFor(t, "the stuck stream to be closed", func() bool { return stuckClosed() == 1 })
	waitFor(t, "the stuck proxy to leave the proxy status", func() bool {
		for _, st := range s.Statuses() {
			if st.NodeID == stuckNode {
				return false
			}
		}
		return true
	})
	if !slices.ContainsFunc(s.Statuses(), func(st ProxyStatus) bool { return st.NodeID == testNode }) {
		t.Error("the normal proxy, which answers everything, was disconnected")
	}
	// HTTP/2 delivers the status after the data queued before it: once the client reads, it
	// sees why its stream ended.
	for {
		if _, err = stuck.Recv(); err != nil {
			break
		}
	}
	if code := status.Code(err); code != codes.ResourceExhausted && code != codes.DeadlineExceeded || !strings.Contains(err.Error(), "not reading its ADS stream") {
		t.Errorf("never-reading stream ended with %v, want ResourceExhausted or DeadlineExceeded saying it is not reading", err)
	}
}

// A proxy that reads its response but never answers it (no ACK, no NACK) has stopped
// reading as far as the protocol goes: its stream is closed with DeadlineExceeded.
func TestUnansweredResponseClosesTheStream(t *testing.T) {
	s, conn := serve(t, Options{Registry: prometheus.NewRegistry(), SendTimeout: time.Second})
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	stream := openADS(t, conn)
	if err := stream.Send(cdsRequest(testNode)); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	_, err := stream.Recv() // no ACK: the next thing is the end
	wantStatus(t, "a stream that never answers", err, codes.DeadlineExceeded, "has not answered (ACK or NACK) its cds response")
	if n := closedStreams(t, s, closeUnanswered); n != 1 {
		t.Errorf("skiff_xds_streams_closed_total{reason=unanswered} = %v, want 1", n)
	}
}

// Bytes that are no discovery request, and a message of another kind, end the stream with a
// status that says so rather than a bare end.
func TestGarbageRequestsAreInvalidArgument(t *testing.T) {
	s, conn := startServer(t)
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	garbage := []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02}
	for _, method := range []string{sotwMethod, deltaMethod} {
		wantStatus(t, "garbage on "+method, sendRaw(t, conn, method, garbage), codes.InvalidArgument, "ADS request is not a valid")
	}
	// A delta request on the state-of-the-world method: its node (field 1) reads as a
	// version string, its type URL (field 2) as a node.
	delta, err := proto.Marshal(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: testNode}, TypeUrl: resourcev3.ClusterType})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "delta request on the SotW method", sendRaw(t, conn, sotwMethod, delta), codes.InvalidArgument, "")
	// A request without a type URL, or without a node.
	wantStatus(t, "no type URL", sendRaw(t, conn, sotwMethod, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: testNode}}),
		codes.InvalidArgument, "type URL is required")
	wantStatus(t, "no node", sendRaw(t, conn, sotwMethod, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType}),
		codes.InvalidArgument, "node")
	if n := closedStreams(t, s, closeUndecodable); n < 2 {
		t.Errorf("skiff_xds_streams_closed_total{reason=undecodable} = %v, want at least 2", n)
	}
}

func TestUnknownTypeIsUnimplemented(t *testing.T) {
	s, conn := startServer(t)
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	const unknown = "type.googleapis.com/skiff.test.NoSuchType"
	wantStatus(t, "SotW", sendRaw(t, conn, sotwMethod, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: testNode}, TypeUrl: unknown}),
		codes.Unimplemented, unknown)
	wantStatus(t, "delta", sendRaw(t, conn, deltaMethod, &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: testNode}, TypeUrl: unknown}),
		codes.Unimplemented, unknown)
}

// edsRequestBytes is a state-of-the-world EDS request naming n distinct resources, encoded
// by hand: a million names is quicker to write than to build as a message.
func edsRequestBytes(n int) []byte {
	b, _ := proto.Marshal(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: testNode}, TypeUrl: resourcev3.EndpointType})
	for i := range n {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, fmt.Sprintf("c%d", i))
	}
	return b
}

// A request over gRPC's 4 MB receive limit, and one under it that names more than
// fanout.MaxRequestNames resources, are refused with ResourceExhausted; a delta stream that
// piles up subscriptions is closed the same way. A normal stream keeps working throughout.
func TestHugeRequestsAreResourceExhausted(t *testing.T) {
	s, conn := startServer(t)
	s.Push(meshSnapshot("10.0.0.1"), time.Now())

	million := edsRequestBytes(1_000_000)
	wantStatus(t, fmt.Sprintf("a %d-byte request", len(million)), sendRaw(t, conn, sotwMethod, million),
		codes.ResourceExhausted, "larger than max")
	over := edsRequestBytes(fanout.MaxRequestNames + 1)
	if len(over) >= 4<<20 {
		t.Fatalf("the request over the name limit is %d bytes: it must fit gRPC's limit to test the name limit", len(over))
	}
	wantStatus(t, "a request over the name limit", sendRaw(t, conn, sotwMethod, over),
		codes.ResourceExhausted, fmt.Sprintf("more than %d resources", fanout.MaxRequestNames))

	half := func(from int) *discoveryv3.DeltaDiscoveryRequest {
		r := &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: testNode}, TypeUrl: resourcev3.EndpointType}
		for i := range fanout.MaxRequestNames/2 + 1 {
			r.ResourceNamesSubscribe = append(r.ResourceNamesSubscribe, fmt.Sprintf("c%d", from+i))
		}
		return r
	}
	wantStatus(t, "a delta stream subscribing past the limit", sendRaw(t, conn, deltaMethod, half(0), half(fanout.MaxRequestNames)),
		codes.ResourceExhausted, fmt.Sprintf("more than %d eds resources", fanout.MaxRequestNames))

	if got := closedStreams(t, s, closeTooLarge) + closedStreams(t, s, closeTooManyNames); got != 3 {
		t.Errorf("streams closed as too_large or too_many_names: %v, want 3", got)
	}
	normal := openADS(t, conn)
	if err := normal.Send(cdsRequest(testNode)); err != nil {
		t.Fatal(err)
	}
	if _, err := normal.Recv(); err != nil {
		t.Fatalf("a normal stream after the huge requests: %v", err)
	}
}

// Streams beyond MaxStreams are refused with ResourceExhausted; once one ends, another is
// admitted.
func TestStreamsBeyondTheLimitAreRefused(t *testing.T) {
	const limit = 5
	s, conn := serve(t, Options{Registry: prometheus.NewRegistry(), MaxStreams: limit})
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	var cancels []context.CancelFunc
	for i := range limit {
		ctx, cancel := context.WithCancel(t.Context())
		cancels = append(cancels, cancel)
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(cdsRequest(fmt.Sprintf("sidecar~127.0.0.1~app-%d.default~default.svc.cluster.local", i))); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, limit, err)
		}
	}
	wantStatus(t, "one stream over the limit", sendRaw(t, conn, sotwMethod, cdsRequest(testNode)),
		codes.ResourceExhausted, fmt.Sprintf("at most %d ADS streams", limit))
	if n := closedStreams(t, s, closeTooManyStreams); n != 1 {
		t.Errorf("skiff_xds_streams_closed_total{reason=too_many_streams} = %v, want 1", n)
	}
	cancels[0]()
	waitFor(t, "a stream to be admitted after one ended", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), framework.Patience)
		defer cancel()
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			return false
		}
		if stream.Send(cdsRequest(testNode)) != nil {
			return false
		}
		_, err = stream.Recv()
		return err == nil
	})
}

// A proxy that claims another workload's node ID is served that workload's configuration but
// never its certificate, while the real workload, connecting from its own address, gets its
// certificate as before.
func TestSpoofedNodeGetsConfigurationButNoCertificate(t *testing.T) {
	s, conn, _ := startSDSServer(t, 0)
	// The real ratings-v1 connects from its address, 127.0.0.9.
	realConn, err := grpc.NewClient(conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9)}}
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { realConn.Close() })
	real := openADS(t, realConn)
	if err := real.Send(sdsRequest(impostorNode, "default")); err != nil {
		t.Fatal(err)
	}
	secrets, _ := recvSecrets(t, real.Recv)
	if secrets["default"] == nil {
		t.Fatal("the real ratings-v1 got no default secret")
	}

	spoof := openADS(t, conn) // from 127.0.0.1
	if err := spoof.Send(cdsRequest(impostorNode)); err != nil {
		t.Fatal(err)
	}
	if resp, err := spoof.Recv(); err != nil || resp.TypeUrl != resourcev3.ClusterType {
		t.Fatalf("the spoofing proxy's clusters: %v, %v", resp, err)
	}
	if err := spoof.Send(sdsRequest(impostorNode, "default")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the spoofing proxy to be refused", func() bool {
		return counterValue(t, s.sds.refusals.WithLabelValues(refuseAddressMismatch)) == 1
	})
	for _, st := range s.Statuses() {
		if st.Address == "127.0.0.9" && st.Identity != "spiffe://cluster.local/ns/default/sa/ratings" {
			t.Errorf("the real proxy's identity is %q", st.Identity)
		}
		if st.Address == "127.0.0.1" && st.Identity != "refused: "+refuseAddressMismatch {
			t.Errorf("the spoofing proxy's identity is %q", st.Identity)
		}
	}
}
