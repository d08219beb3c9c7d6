package wire

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// A route configuration with a map of two entries (a route with both fault injection and CORS)
// must not reach the encoder that writes maps in random order.
func TestMarshalMultiEntryMapsStable(t *testing.T) {
	route := &routev3.Route{
		Name: "both",
		TypedPerFilterConfig: map[string]*anypb.Any{
			"envoy.filters.http.fault": {TypeUrl: "type.googleapis.com/x.Fault"},
			"envoy.filters.http.cors":  {TypeUrl: "type.googleapis.com/x.Cors"},
		},
	}
	rc := &routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "a", Domains: []string{"a"}, Routes: []*routev3.Route{route}}}}
	if singleEntryMaps(rc) {
		t.Fatal("singleEntryMaps: a route with two per-filter configurations passed")
	}
	first, err := Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if again, _ := Marshal(rc); !bytes.Equal(again, first) {
			t.Fatal("two encodings of one route configuration differ")
		}
	}

	// Metadata nested in metadata counts too.
	route.TypedPerFilterConfig = nil
	inner, _ := structpb.NewStruct(map[string]any{"a": "1", "b": "2"})
	route.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{"nested": structpb.NewStructValue(inner)}},
	}}
	if singleEntryMaps(rc) {
		t.Error("singleEntryMaps: a two-field struct inside route metadata passed")
	}
	route.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{"config": structpb.NewStringValue("/apis/x")}},
	}}
	if !singleEntryMaps(rc) {
		t.Error("singleEntryMaps: Istio's one-entry route metadata refused")
	}
}
