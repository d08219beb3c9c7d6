package main

import (
	"bytes"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The probe finds a service's virtual host in the encoded route configuration without
// decoding it; what it finds must be exactly that virtual host's encoding, whatever fields
// surround it.
func TestVirtualHostBytes(t *testing.T) {
	rc := &routev3.RouteConfiguration{
		Name:                     "8080",
		IgnorePortInHostMatching: true,
		ValidateClusters:         wrapperspb.Bool(false),
	}
	for i := range 3 {
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    virtualHostName(i),
			Domains: []string{serviceHost(i)},
			Routes: []*routev3.Route{{Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
					Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: subsetCluster(i, "v1"), Weight: wrapperspb.UInt32(80)},
						{Name: subsetCluster(i, "v2"), Weight: wrapperspb.UInt32(20)},
					},
				}},
			}}}},
		})
	}
	encoded, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(rc.VirtualHosts[1])
	// As gRPC hands it over: in one piece, or in pieces of any size (a varint, a name, the
	// virtual host itself across a boundary).
	for _, size := range []int{len(encoded), 16, 7, 1} {
		pieces := inPieces(encoded, size)
		if got := virtualHostBytes(pieces, virtualHostName(1)); !bytes.Equal(got, want) {
			t.Errorf("pieces of %d: virtual host 1: got %d bytes, want its %d", size, len(got), len(want))
		}
		if got := virtualHostBytes(pieces, virtualHostName(7)); got != nil {
			t.Errorf("pieces of %d: absent virtual host: got %d bytes", size, len(got))
		}
	}
	if got := virtualHostBytes(chunks{encoded[:len(encoded)/2]}, virtualHostName(2)); got != nil {
		t.Errorf("truncated configuration: got %d bytes", len(got))
	}
	m := weightsMatcher(1, 80, 20)
	if !m.holds(m.part(chunks{encoded})) {
		t.Error("weightsMatcher(1, 80, 20) does not match its own weights")
	}
	if m := weightsMatcher(1, 90, 10); m.holds(m.part(chunks{encoded})) {
		t.Error("weightsMatcher(1, 90, 10) matches 80/20")
	}
}

// inPieces cuts b into pieces of size bytes (the last one shorter).
func inPieces(b []byte, size int) chunks {
	var out chunks
	for len(b) > size {
		out, b = append(out, b[:size]), b[size:]
	}
	return append(out, b)
}

// The probe's walk through a 1,000-service route configuration as gRPC hands it over, in
// 16 kB pieces (the fleet does this once per proxy per change).
func BenchmarkVirtualHostBytes(b *testing.B) {
	rc := &routev3.RouteConfiguration{Name: "8080"}
	for i := range 1000 {
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    virtualHostName(i),
			Domains: []string{serviceHost(i)},
			Routes: []*routev3.Route{{Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: subsetCluster(i, "v1")},
			}}}},
		})
	}
	encoded, err := proto.Marshal(rc)
	if err != nil {
		b.Fatal(err)
	}
	pieces := inPieces(encoded, 16<<10)
	b.SetBytes(int64(len(encoded)))
	for b.Loop() {
		if virtualHostBytes(pieces, virtualHostName(999)) == nil {
			b.Fatal("not found")
		}
	}
}
