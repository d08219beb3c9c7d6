package wire

import (
	"bytes"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestClusterMapFieldsComplete: the fields marshalCluster leaves to protobuf-go are exactly
// those of Cluster under which a map can be reached, and mapPart copies each of them.
func TestClusterMapFieldsComplete(t *testing.T) {
	md := (&clusterv3.Cluster{}).ProtoReflect().Descriptor()
	var got, want []string
	for i := range md.Fields().Len() {
		f := md.Fields().Get(i)
		if reachesMap(f, map[protoreflect.FullName]bool{}) {
			got = append(got, string(f.Name()))
			if clusterMapFields[f.Number()] != string(f.Name()) {
				t.Errorf("field %d is %s, clusterMapFields says %q", f.Number(), f.Name(), clusterMapFields[f.Number()])
			}
		}
	}
	for _, name := range clusterMapFields {
		want = append(want, name)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Cluster fields that reach a map: %v; clusterMapFields: %v", got, want)
	}
	// Transport socket matches' sockets are encoded as maps-free.
	ts := (&corev3.TransportSocket{}).ProtoReflect().Descriptor()
	for i := range ts.Fields().Len() {
		if reachesMap(ts.Fields().Get(i), map[protoreflect.FullName]bool{}) {
			t.Errorf("TransportSocket.%s reaches a map: marshalCluster must not encode sockets with marshalMapless", ts.Fields().Get(i).Name())
		}
	}
	// The messages marshalCluster writes field by field have the fields it writes, no others.
	for msg, want := range map[proto.Message][]string{
		&clusterv3.Cluster_TransportSocketMatch{}: {"name", "match", "transport_socket"},
		&corev3.Metadata{}:                        {"filter_metadata", "typed_filter_metadata"},
		&structpb.Struct{}:                        {"fields"},
		&structpb.ListValue{}:                     {"values"},
		&structpb.Value{}:                         {"null_value", "number_value", "string_value", "bool_value", "struct_value", "list_value"},
		&anypb.Any{}:                              {"type_url", "value"},
	} {
		fields := msg.ProtoReflect().Descriptor().Fields()
		var got []string
		for i := range fields.Len() {
			got = append(got, string(fields.Get(i).Name()))
		}
		if slices.Sort(got); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			t.Errorf("%s has fields %v; marshalCluster writes %v", msg.ProtoReflect().Descriptor().FullName(), got, want)
		}
	}
	// An EDS configuration over ADS is left to the generated encoder (edsOverADS): no field of
	// it but the config source's other specifiers reaches a map.
	eds := (&clusterv3.Cluster_EdsClusterConfig{}).ProtoReflect().Descriptor()
	for i := range eds.Fields().Len() {
		if f := eds.Fields().Get(i); f.Name() != "eds_config" && reachesMap(f, map[protoreflect.FullName]bool{}) {
			t.Errorf("EdsClusterConfig.%s reaches a map: edsOverADS must check it", f.Name())
		}
	}
	cs := (&corev3.ConfigSource{}).ProtoReflect().Descriptor()
	for i := range cs.Fields().Len() {
		f := cs.Fields().Get(i)
		if f.ContainingOneof() == nil && f.Name() != "authorities" && reachesMap(f, map[protoreflect.FullName]bool{}) {
			t.Errorf("ConfigSource.%s reaches a map: edsOverADS must check it", f.Name())
		}
	}
	// Each such field is written, by hand or by restPart: set each on a cluster (an empty
	// message, or one element) and decode the encoding.
	full := &clusterv3.Cluster{Name: "c"}
	r := full.ProtoReflect()
	for i := range md.Fields().Len() {
		f := md.Fields().Get(i)
		if _, ok := clusterMapFields[f.Number()]; !ok {
			continue
		}
		switch {
		case f.IsMap():
			r.Mutable(f).Map().Set(protoreflect.ValueOfString("k").MapKey(), protoreflect.ValueOfMessage(r.Mutable(f).Map().NewValue().Message()))
		case f.IsList():
			l := r.Mutable(f).List()
			l.Append(l.NewElement())
		default:
			r.Set(f, protoreflect.ValueOfMessage(r.NewField(f).Message()))
		}
	}
	encoded, err := Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	decoded := &clusterv3.Cluster{}
	if err := proto.Unmarshal(encoded, decoded); err != nil || !proto.Equal(decoded, full) {
		t.Errorf("a cluster with every map-reaching field set does not survive encoding (%v):\n got %v\nwant %v", err, decoded, full)
	}
}

// A cluster with multi-entry maps (Istio's metadata, transport socket matches, protocol
// options) encodes to the same bytes every time, and they decode to the cluster.
func TestClusterEncodingStable(t *testing.T) {
	meta, _ := structpb.NewStruct(map[string]any{
		"services":              []any{map[string]any{"host": "a.default.svc.cluster.local", "name": "a", "namespace": "default"}},
		"default_original_port": 8080,
		"subset":                "v1",
	})
	c := &clusterv3.Cluster{
		Name:                 "outbound|8080|v1|a.default.svc.cluster.local",
		ConnectTimeout:       durationpb.New(10e9),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}},
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": meta, "other": meta}},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {TypeUrl: "type.googleapis.com/x.A", Value: []byte{1}},
			"envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions":   {TypeUrl: "type.googleapis.com/x.B", Value: []byte{2}},
		},
		TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{
			{Name: "tlsMode-istio", Match: &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio"), "b": structpb.NewStringValue("c")}}},
			{Name: "tlsMode-disabled", Match: &structpb.Struct{}},
		},
	}
	first, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	decoded := &clusterv3.Cluster{}
	if err := proto.Unmarshal(first, decoded); err != nil || !proto.Equal(decoded, c) {
		t.Fatalf("the encoding does not decode to the cluster (%v)", err)
	}
	for range 20 {
		if again, _ := Marshal(c); !bytes.Equal(again, first) {
			t.Fatal("two encodings of one cluster differ")
		}
	}
}
