package main

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestAliasCodecDecodesAsProto(t *testing.T) {
	c, err := anypb.New(&clusterv3.Cluster{Name: "outbound|8080||a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []proto.Message{
		&discoveryv3.DiscoveryResponse{VersionInfo: "v1", TypeUrl: resourcev3.ClusterType, Nonce: "3", Resources: []*anypb.Any{c, c}},
		&discoveryv3.DiscoveryResponse{VersionInfo: "v1", Canary: true}, // a field the aliasing decoder leaves to proto
		&discoveryv3.DeltaDiscoveryResponse{
			SystemVersionInfo: "7", TypeUrl: resourcev3.ClusterType, Nonce: "4", RemovedResources: []string{"b"},
			Resources: []*discoveryv3.Resource{{Name: "outbound|8080||a", Version: "abc", Resource: c}},
		},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := (aliasCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !proto.Equal(got, m) {
			t.Errorf("%T: decoded %v, want %v", m, got, m)
		}
	}
}

func TestAliasCodecWritesInternedRequests(t *testing.T) {
	names := requestLists.intern([]string{"outbound|8080||a", "outbound|8080||b"})
	if again := requestLists.intern([]string{"outbound|8080||a", "outbound|8080||b"}); &again[0] != &names[0] {
		t.Fatal("equal lists were not interned to one")
	}
	req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: "v1", ResponseNonce: "2", ResourceNames: names}
	out, err := (aliasCodec{}).Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 {
		t.Fatalf("%d buffers, want the request's fields and the list's shared encoding", len(out))
	}
	got := &discoveryv3.DiscoveryRequest{}
	if err := proto.Unmarshal(out.Materialize(), got); err != nil || !proto.Equal(got, req) {
		t.Fatalf("decoded %v (%v), want %v", got, err, req)
	}
}

// A route configuration gRPC read in several buffers is decoded without joining them: its
// value stays in the pieces until the response is released. Other responses are joined.
func TestAliasCodecDecodesRoutesInPieces(t *testing.T) {
	rc, err := anypb.New(&routev3.RouteConfiguration{Name: "8080", VirtualHosts: []*routev3.VirtualHost{{Name: "a", Domains: []string{"a.example"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := anypb.New(&clusterv3.Cluster{Name: "outbound|8080||a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*discoveryv3.DiscoveryResponse{
		{VersionInfo: "v1", TypeUrl: resourcev3.RouteType, Nonce: "3", Resources: []*anypb.Any{rc, rc}},
		{VersionInfo: "v1", TypeUrl: resourcev3.ClusterType, Nonce: "4", Resources: []*anypb.Any{c}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{5, 1} {
			var data mem.BufferSlice
			for _, p := range inPieces(b, size) {
				data = append(data, mem.SliceBuffer(p))
			}
			got := &discoveryv3.DiscoveryResponse{}
			if err := (aliasCodec{}).Unmarshal(data, got); err != nil {
				t.Fatal(err)
			}
			if responseSize(got) != int64(len(b)) {
				t.Errorf("%s in pieces of %d: size %d, want %d", m.TypeUrl, size, responseSize(got), len(b))
			}
			first := got.Resources[0]
			if spread := first.Value == nil; spread != (m.TypeUrl == resourcev3.RouteType) {
				t.Errorf("%s in pieces of %d: value left in the pieces %v", m.TypeUrl, size, spread)
			}
			values := make([][]byte, len(got.Resources))
			for i, a := range got.Resources { // as the probe reads them
				values[i] = valueOf(a).bytes()
			}
			release(got)
			if _, still := spreads.Load(first); still {
				t.Errorf("%s: released, and its value is still registered", m.TypeUrl)
			}
			for i, a := range got.Resources {
				a.Value = values[i]
			}
			if !proto.Equal(got, m) {
				t.Errorf("%s in pieces of %d: decoded %v, want %v", m.TypeUrl, size, got, m)
			}
		}
	}
}
