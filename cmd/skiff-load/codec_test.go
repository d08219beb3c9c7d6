package main

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
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
