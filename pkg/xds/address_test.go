package xds

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffmesh/skiff/pkg/model"
)

// A captured sidecar that names no workload serves the endpoints at its IP. A change that only
// moves an endpoint translates nothing, yet moving one onto that IP gives the proxy an inbound
// port: its key is computed again, its stream ends with Unavailable, and the stream it opens
// next gets the inbound cluster.
func TestEndpointMovedToAProxysAddressGivesItInboundPorts(t *testing.T) {
	const vm = "sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local" // captured: no INTERCEPTION_MODE
	s, conn := startServer(t)
	before, after := meshSnapshot("10.0.0.9"), meshSnapshot("10.0.0.5")
	if !model.EndpointsOnly(before, after) {
		t.Fatal("moving the endpoint is not an endpoints-only change; the test would prove nothing")
	}
	s.Push(before, time.Now())
	stream := openADS(t, conn)
	if err := stream.Send(cdsRequest(vm)); err != nil {
		t.Fatal(err)
	}
	if names := recvClusterNames(t, stream); names["inbound|80||"] {
		t.Fatalf("clusters %v hold inbound|80|| before any endpoint is at the proxy's IP", names)
	}

	s.Push(after, time.Now())
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after the endpoint moved to the proxy's IP the stream got %v, want it ended with Unavailable", err)
	}
	again := openADS(t, conn)
	if err := again.Send(cdsRequest(vm)); err != nil {
		t.Fatal(err)
	}
	if names := recvClusterNames(t, again); !names["inbound|80||"] {
		t.Errorf("clusters %v lack inbound|80|| once the endpoint is at the proxy's IP", names)
	}
}
