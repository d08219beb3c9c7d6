package fanout

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// deterministic is how every resource is encoded unless the fast path takes it: the same
// message always yields the same bytes, so equal hashes mean equal content.
var deterministic = proto.MarshalOptions{Deterministic: true}

// Marshal encodes a resource as pilot sends it: route configurations through go-control-plane's
// generated vtprotobuf code when pilot is built with the vtprotobuf tag (as the Makefile builds
// it, and as istiod is built), everything else, or without the tag, deterministically through
// protobuf-go. Each encoder gives one message the same bytes every time, which is what the
// hashes need (for the fast one, see singleEntryMaps); they differ from each other in where
// they put a oneof field, so the pilots of one mesh should be built alike for delta versions
// to agree between them.
func Marshal(msg proto.Message) ([]byte, error) {
	if rc, ok := msg.(*routev3.RouteConfiguration); ok && singleEntryMaps(rc) {
		if b, ok := marshalFast(rc); ok {
			return b, nil
		}
	}
	return deterministic.Marshal(msg)
}

// singleEntryMaps reports whether no map in the parts of rc that pilot fills has more than one
// entry. The generated encoder writes map entries in Go's random order: with two entries, one
// configuration would have two encodings and so look changed on every push. Route configurations are where a sidecar's
// bytes are (a 1,000-service mesh sends each proxy most of a megabyte of routes), and their
// maps are route metadata (istio → config) and per-filter configuration, one entry each
// unless a route has both fault injection and CORS. A map pilot starts filling later and this
// does not check still gives valid configuration, only extra pushes; the golden tests encode
// every golden resource several times and compare.
func singleEntryMaps(rc *routev3.RouteConfiguration) bool {
	if len(rc.TypedPerFilterConfig) > 1 {
		return false
	}
	for _, vh := range rc.VirtualHosts {
		if len(vh.TypedPerFilterConfig) > 1 || !singleEntryMetadata(vh.Metadata) {
			return false
		}
		for _, r := range vh.Routes {
			if len(r.TypedPerFilterConfig) > 1 || !singleEntryMetadata(r.Metadata) {
				return false
			}
			for _, c := range r.GetRoute().GetWeightedClusters().GetClusters() {
				if len(c.TypedPerFilterConfig) > 1 || !singleEntryMetadata(c.MetadataMatch) {
					return false
				}
			}
			if !singleEntryMetadata(r.GetRoute().GetMetadataMatch()) {
				return false
			}
		}
	}
	return true
}

// singleEntryMetadata checks a metadata message's maps, and those of the structs in it.
func singleEntryMetadata(m *corev3.Metadata) bool {
	if len(m.GetFilterMetadata()) > 1 || len(m.GetTypedFilterMetadata()) > 1 {
		return false
	}
	for _, s := range m.GetFilterMetadata() {
		if !singleEntryStruct(s) {
			return false
		}
	}
	return true
}

func singleEntryStruct(s *structpb.Struct) bool {
	if len(s.GetFields()) > 1 {
		return false
	}
	for _, v := range s.GetFields() {
		if !singleEntryValue(v) {
			return false
		}
	}
	return true
}

func singleEntryValue(v *structpb.Value) bool {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		return singleEntryStruct(k.StructValue)
	case *structpb.Value_ListValue:
		for _, e := range k.ListValue.GetValues() {
			if !singleEntryValue(e) {
				return false
			}
		}
	}
	return true
}
