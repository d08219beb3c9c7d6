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
	if got := virtualHostBytes(encoded, virtualHostName(1)); !bytes.Equal(got, want) {
		t.Errorf("virtual host 1: got %d bytes, want its %d", len(got), len(want))
	}
	if got := virtualHostBytes(encoded, virtualHostName(7)); got != nil {
		t.Errorf("absent virtual host: got %d bytes", len(got))
	}
	if got := virtualHostBytes(encoded[:len(encoded)/2], virtualHostName(2)); got != nil {
		t.Errorf("truncated configuration: got %d bytes", len(got))
	}
	m := weightsMatcher(1, 80, 20)
	if !m.holds(m.part(encoded)) {
		t.Error("weightsMatcher(1, 80, 20) does not match its own weights")
	}
	if m := weightsMatcher(1, 90, 10); m.holds(m.part(encoded)) {
		t.Error("weightsMatcher(1, 90, 10) matches 80/20")
	}
}
