package wire

import (
	"bytes"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
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

// hcmWithoutMaps checks the fields of HttpConnectionManager under which a map can be reached;
// the list must be exactly those the descriptor has, or a go-control-plane upgrade could add
// one that the check misses (and one configuration would get two encodings).
func TestHCMMapFieldsComplete(t *testing.T) {
	md := (&hcmv3.HttpConnectionManager{}).ProtoReflect().Descriptor()
	var got []string
	for i := range md.Fields().Len() {
		f := md.Fields().Get(i)
		if reachesMap(f, map[protoreflect.FullName]bool{}) {
			got = append(got, string(f.Name()))
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(hcmMapFields))
	if !slices.Equal(got, want) {
		t.Errorf("HttpConnectionManager fields that reach a map: %v; hcmWithoutMaps checks %v", got, want)
	}
	if !hcmWithoutMaps(&hcmv3.HttpConnectionManager{StatPrefix: "x", UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}}) {
		t.Error("a connection manager without maps refused")
	}
	two, _ := structpb.NewStruct(map[string]any{"a": "1", "b": "2"})
	inline := &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Routes: []*routev3.Route{{Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": two}}}}}}}
	if hcmWithoutMaps(&hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: inline}}) {
		t.Error("an inline route configuration with a two-entry map passed")
	}
}

// reachesMap reports whether a map can be set at or below f (Any values are opaque bytes).
func reachesMap(f protoreflect.FieldDescriptor, seen map[protoreflect.FullName]bool) bool {
	if f.IsMap() {
		return true
	}
	md := f.Message()
	if md == nil || md.FullName() == "google.protobuf.Any" || seen[md.FullName()] {
		return false
	}
	seen[md.FullName()] = true
	for i := range md.Fields().Len() {
		if reachesMap(md.Fields().Get(i), seen) {
			return true
		}
	}
	return false
}
