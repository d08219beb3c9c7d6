// Package wire encodes the resources pilot sends, once each: deterministically (the same
// message always yields the same bytes, so equal hashes mean equal content), and as fast as the
// libraries allow. go-control-plane ships generated vtprotobuf encoders for every Envoy type,
// compiled in with the vtprotobuf build tag (the Makefile sets it, as istiod is built); they
// are several times faster than protobuf-go's table-driven encoder, but write map entries in
// Go's random order. Marshal uses them where that cannot happen and where it pays: for route
// configurations whose maps have one entry each, HTTP connection managers that set none, and
// clusters with their map-holding fields encoded apart (cluster.go). A build without the tag
// encodes everything through protobuf-go, with the same behaviour, only slower.
package wire

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
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
	if c, ok := msg.(*clusterv3.Cluster); ok {
		if vt, ok := msg.(vtMarshaler); ok {
			return marshalCluster(c, vt) // cluster.go
		}
	}
	if vt, ok := msg.(vtMarshaler); ok && stableUnderVT(msg) {
		if b, err := vt.MarshalVTStrict(); err == nil {
			return b, nil
		}
	}
	return deterministic.Marshal(msg)
}

// stableUnderVT reports whether the generated encoder gives msg one encoding: no map in it
// holds more than one entry. Only route configurations (singleEntryMaps) and HTTP connection
// managers (hcmWithoutMaps) are checked, field by field: they are most of a sidecar's bytes
// and of what a change re-encodes, and a gateway's filter chains. A
// generic check (walking a message's set fields by reflection) cost more than the faster
// encoder saved on listeners, which carry multi-entry metadata anyway; clusters are split
// instead (marshalCluster).
func stableUnderVT(msg proto.Message) bool {
	switch m := msg.(type) {
	case *routev3.RouteConfiguration:
		return singleEntryMaps(m)
	case *routev3.VirtualHost:
		return singleEntryVirtualHost(m)
	case *hcmv3.HttpConnectionManager:
		return hcmWithoutMaps(m)
	}
	return false
}

// hcmMapFields are the fields of HttpConnectionManager under which a map can be reached (the
// wire tests derive the list from the descriptor, so a new one fails them). A gateway with a
// thousand servers packs a connection manager per filter chain.
var hcmMapFields = []string{"route_config", "scoped_routes", "rds", "http_filters", "upgrade_configs", "local_reply_config", "forward_client_cert_matcher"}

// hcmWithoutMaps reports whether no map is set under h: none of the fields in hcmMapFields
// holds anything that can carry one (an inline route configuration is checked like any other).
func hcmWithoutMaps(h *hcmv3.HttpConnectionManager) bool {
	if h.GetScopedRoutes() != nil || h.LocalReplyConfig != nil || h.ForwardClientCertMatcher != nil {
		return false
	}
	if rc := h.GetRouteConfig(); rc != nil && !singleEntryMaps(rc) {
		return false
	}
	// ADS, as pilot always names it, carries no map; an API config source's gRPC services may.
	if cs := h.GetRds().GetConfigSource(); cs != nil && cs.GetAds() == nil {
		return false
	}
	for _, f := range h.HttpFilters {
		if f.GetConfigDiscovery() != nil {
			return false
		}
	}
	for _, u := range h.UpgradeConfigs {
		if len(u.Filters) > 0 {
			return false
		}
	}
	return true
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
		if !singleEntryVirtualHost(vh) {
			return false
		}
	}
	return true
}

// singleEntryVirtualHost is singleEntryMaps for one virtual host.
func singleEntryVirtualHost(vh *routev3.VirtualHost) bool {
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
	return true
}

// singleEntryMetadata checks a metadata message's maps, and those of the structs in it.
func singleEntryMetadata(m *corev3.Metadata) bool {
	if len(m.GetFilterMetadata()) > 1 || len(m.GetTypedFilterMetadata()) > 1 {
		return false
	}
	if istioConfigOnly(m) {
		return true
	}
	for _, s := range m.GetFilterMetadata() {
		if !singleEntryStruct(s) {
			return false
		}
	}
	return true
}

// istioConfigOnly recognises, by two lookups, the metadata nearly every route carries:
// istio: {config: "..."}, where the route came from. Iterating its two maps to check them
// costs more (Go randomises where each iteration starts), and a sidecar checks a route or two
// per service on every push.
func istioConfigOnly(m *corev3.Metadata) bool {
	if len(m.GetFilterMetadata()) != 1 {
		return false
	}
	istio := m.FilterMetadata["istio"]
	if len(istio.GetFields()) != 1 {
		return false
	}
	_, isString := istio.Fields["config"].GetKind().(*structpb.Value_StringValue)
	return isString
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
