// Package wire encodes the resources pilot sends, once each: deterministically (the same
// message always yields the same bytes, so equal hashes mean equal content), and as fast as the
// libraries allow. go-control-plane ships generated vtprotobuf encoders for every Envoy type,
// compiled in with the vtprotobuf build tag (the Makefile sets it, as istiod is built); they
// are several times faster than protobuf-go's table-driven encoder, but write map entries in
// Go's random order. Marshal uses them where that cannot happen and where it pays: for route
// configurations whose maps have one entry each. A build without
// the tag encodes everything through protobuf-go, with the same behaviour, only slower.
package wire

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// deterministic is protobuf-go's encoder with map keys sorted.
var deterministic = proto.MarshalOptions{Deterministic: true}

// vtMarshaler is what go-control-plane's generated encoders add to a message type when built
// with the vtprotobuf tag; without it, no type has the method.
type vtMarshaler interface {
	MarshalVTStrict() ([]byte, error)
}

// Marshal encodes a resource as pilot sends it. Each encoder gives one message the same bytes
// every time, which is what the hashes need; the two differ from each other in where they put
// a oneof field, so the pilots of one mesh should be built alike for delta versions to agree
// between them.
func Marshal(msg proto.Message) ([]byte, error) {
	if vt, ok := msg.(vtMarshaler); ok && stableUnderVT(msg) {
		if b, err := vt.MarshalVTStrict(); err == nil {
			return b, nil
		}
	}
	return deterministic.Marshal(msg)
}

// stableUnderVT reports whether the generated encoder gives msg one encoding: no map in it
// holds more than one entry. Only route configurations are checked, field by field
// (singleEntryMaps): they are most of a sidecar's bytes and of what a change re-encodes. A
// generic check (walking a message's set fields by reflection) cost more than the faster
// encoder saved on listeners and clusters, which carry multi-entry metadata anyway.
func stableUnderVT(msg proto.Message) bool {
	rc, ok := msg.(*routev3.RouteConfiguration)
	return ok && singleEntryMaps(rc)
}

// singleEntryMaps reports whether no map in the parts of rc that pilot fills has more than one
// entry: with two entries, one configuration would have two encodings under the generated
// encoder and so look changed on every push. Route configurations are where a sidecar's
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
