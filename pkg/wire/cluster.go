package wire

import (
	"fmt"
	"maps"
	"math"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Clusters carry maps (Istio's metadata struct, transport socket matches, protocol options),
// so the generated encoder cannot encode them whole: it writes map entries in random order.
// protobuf-go's deterministic encoder, which sorts them, took two thirds of a sidecar's
// cluster generation, most of it in those maps. So a cluster is encoded in two parts: the
// generated encoder's bytes for every top-level field under which no map can be reached (and
// the EDS configuration when it names ADS, as pilot's always does, which reaches none), and
// the fields under which one can (clusterMapFields) encoded here with map keys sorted (the
// three pilot sets: metadata, typed_extension_protocol_options, transport_socket_matches) or
// by protobuf-go's deterministic encoder (the rest, rarely set). A protobuf parser merges the
// fields of concatenated encodings, and the parts have no field in common, so the bytes are
// the cluster, the same every time.

// clusterMapFields are the fields of Cluster under which a map can be reached (the wire tests
// derive the list from the descriptor, so a new one fails them), by number.
var clusterMapFields = map[protowire.Number]string{
	3:  "eds_cluster_config",
	8:  "health_checks",
	22: "lb_subset_config",
	25: "metadata",
	33: "load_assignment",
	36: "typed_extension_protocol_options",
	40: "filters",
	42: "lrs_server",
	43: "transport_socket_matches",
	59: "transport_socket_matcher",
}

// edsOverADS: c's EDS configuration is nil or names ADS and nothing else that could hold a map
// (an API config source's gRPC services could), so the generated encoder may write it.
func edsOverADS(c *clusterv3.Cluster) bool {
	cs := c.GetEdsClusterConfig().GetEdsConfig()
	return cs == nil || (cs.GetAds() != nil && len(cs.Authorities) == 0)
}

// Field numbers written by hand below.
const (
	clusterEDS                                                             = 3
	clusterMetadata                                                        = 25
	clusterProtocolOptions                                                 = 36
	clusterTransportSocketMatches                                          = 43
	matchName, matchStruct, matchSocket                                    = 1, 2, 3
	metadataFilter, metadataTyped                                          = 1, 2
	entryKey, entryValue                                                   = 1, 2
	structFields                                                           = 1
	valueNull, valueNumber, valueString, valueBool, valueStruct, valueList = 1, 2, 3, 4, 5, 6
	listValues                                                             = 1
)

// restPart is a cluster holding c's fields of clusterMapFields that are not written by hand
// (shared, not copied), for protobuf-go; nil when it has none.
func restPart(c *clusterv3.Cluster) *clusterv3.Cluster {
	if edsOverADS(c) && len(c.HealthChecks) == 0 && c.LbSubsetConfig == nil && c.LoadAssignment == nil &&
		len(c.Filters) == 0 && c.LrsServer == nil && c.TransportSocketMatcher == nil {
		return nil
	}
	eds := c.EdsClusterConfig
	if edsOverADS(c) {
		eds = nil // left in the generated encoder's part
	}
	return &clusterv3.Cluster{
		EdsClusterConfig:       eds,
		HealthChecks:           c.HealthChecks,
		LbSubsetConfig:         c.LbSubsetConfig,
		LoadAssignment:         c.LoadAssignment,
		Filters:                c.Filters,
		LrsServer:              c.LrsServer,
		TransportSocketMatcher: c.TransportSocketMatcher,
	}
}

// marshalCluster encodes c as described above. The generated encoder writes the map fields
// too, and their bytes are skipped: building a cluster without them would mean copying a
// message of sixty fields (or clearing them in one that other encoders may be reading), and
// encoding them is the cheap part; sorting is what protobuf-go was slow at.
func marshalCluster(c *clusterv3.Cluster, vt vtMarshaler) ([]byte, error) {
	whole, err := vt.MarshalVTStrict()
	if err != nil {
		return nil, err
	}
	var rest []byte
	if part := restPart(c); part != nil {
		if rest, err = deterministic.Marshal(part); err != nil {
			return nil, err
		}
	}
	out := make([]byte, 0, len(whole)+len(rest))
	for b := whole; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("re-reading an encoded cluster: %w", protowire.ParseError(n))
		}
		size := protowire.ConsumeFieldValue(num, typ, b[n:])
		if size < 0 {
			return nil, fmt.Errorf("re-reading an encoded cluster: %w", protowire.ParseError(size))
		}
		if _, inMaps := clusterMapFields[num]; !inMaps || (num == clusterEDS && edsOverADS(c)) {
			out = append(out, b[:n+size]...)
		}
		b = b[n+size:]
	}
	out = append(out, rest...)
	if c.Metadata != nil {
		out = appendMessage(out, clusterMetadata, appendMetadata(nil, c.Metadata))
	}
	for _, k := range slices.Sorted(maps.Keys(c.TypedExtensionProtocolOptions)) {
		out = appendEntry(out, clusterProtocolOptions, k, anyValue(c.TypedExtensionProtocolOptions[k]))
	}
	for _, m := range c.TransportSocketMatches {
		var e []byte
		if m.Name != "" {
			e = protowire.AppendTag(e, matchName, protowire.BytesType)
			e = protowire.AppendString(e, m.Name)
		}
		if m.Match != nil {
			e = appendMessage(e, matchStruct, appendStruct(nil, m.Match))
		}
		if m.TransportSocket != nil {
			ts, err := marshalMapless(m.TransportSocket) // a name and an Any
			if err != nil {
				return nil, err
			}
			e = appendMessage(e, matchSocket, ts)
		}
		out = appendMessage(out, clusterTransportSocketMatches, e)
	}
	return out, nil
}

// marshalMapless encodes a message in which no map can be set, with the faster encoder when
// it is compiled in.
func marshalMapless(msg proto.Message) ([]byte, error) {
	if vt, ok := msg.(vtMarshaler); ok {
		return vt.MarshalVTStrict()
	}
	return deterministic.Marshal(msg)
}

func appendMessage(b []byte, field protowire.Number, encoded []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, encoded)
}

// appendEntry appends, as field, a map entry: key, then value's encoding unless value is nil
// (a nil message, which a map entry leaves out).
func appendEntry(b []byte, field protowire.Number, key string, value []byte) []byte {
	var e []byte
	e = protowire.AppendTag(e, entryKey, protowire.BytesType)
	e = protowire.AppendString(e, key)
	if value != nil {
		e = appendMessage(e, entryValue, value)
	}
	return appendMessage(b, field, e)
}

// appendMetadata encodes m's two maps, entries by key.
func appendMetadata(b []byte, m *corev3.Metadata) []byte {
	for _, k := range slices.Sorted(maps.Keys(m.FilterMetadata)) {
		var value []byte
		if s := m.FilterMetadata[k]; s != nil {
			value = appendStruct([]byte{}, s)
		}
		b = appendEntry(b, metadataFilter, k, value)
	}
	for _, k := range slices.Sorted(maps.Keys(m.TypedFilterMetadata)) {
		b = appendEntry(b, metadataTyped, k, anyValue(m.TypedFilterMetadata[k]))
	}
	return b
}

// anyValue encodes an Any (nil for nil).
func anyValue(a *anypb.Any) []byte {
	if a == nil {
		return nil
	}
	v := []byte{}
	if a.TypeUrl != "" {
		v = protowire.AppendTag(v, 1, protowire.BytesType)
		v = protowire.AppendString(v, a.TypeUrl)
	}
	if len(a.Value) > 0 {
		v = protowire.AppendTag(v, 2, protowire.BytesType)
		v = protowire.AppendBytes(v, a.Value)
	}
	return v
}

// appendStruct encodes s's fields, entries by key.
func appendStruct(b []byte, s *structpb.Struct) []byte {
	for _, k := range slices.Sorted(maps.Keys(s.Fields)) {
		var value []byte
		if v := s.Fields[k]; v != nil {
			value = appendValue([]byte{}, v)
		}
		b = appendEntry(b, structFields, k, value)
	}
	return b
}

// appendValue encodes a Value: its one kind.
func appendValue(b []byte, v *structpb.Value) []byte {
	switch k := v.Kind.(type) {
	case *structpb.Value_NullValue:
		b = protowire.AppendTag(b, valueNull, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(k.NullValue))
	case *structpb.Value_NumberValue:
		b = protowire.AppendTag(b, valueNumber, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(k.NumberValue))
	case *structpb.Value_StringValue:
		b = protowire.AppendTag(b, valueString, protowire.BytesType)
		b = protowire.AppendString(b, k.StringValue)
	case *structpb.Value_BoolValue:
		b = protowire.AppendTag(b, valueBool, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(k.BoolValue))
	case *structpb.Value_StructValue:
		var s []byte
		if k.StructValue != nil {
			s = appendStruct(nil, k.StructValue)
		}
		b = appendMessage(b, valueStruct, s)
	case *structpb.Value_ListValue:
		var l []byte
		for _, e := range k.ListValue.GetValues() {
			l = appendMessage(l, listValues, appendValue(nil, e))
		}
		b = appendMessage(b, valueList, l)
	}
	return b
}
