package translate

import (
	"maps"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiffmesh/skiff/pkg/wire"
)

// Small constructors for the protos every file here needs. Tests use them too, so expected
// values read the same way as the code that builds them.

// MustAny packs a message into an Any, encoded by wire.Marshal: always to the same bytes (map
// entries in one order), since pilot decides whether a resource changed by comparing hashes,
// and packed bytes that differ only in map order would look like a change and make Envoy
// rebuild a listener on every push. Packing a message we built ourselves cannot fail, so a
// failure is a programming error.
func MustAny(m proto.Message) *anypb.Any {
	b, err := wire.Marshal(m)
	if err != nil {
		panic("translate: packing " + string(proto.MessageName(m)) + ": " + err.Error())
	}
	return &anypb.Any{TypeUrl: "type.googleapis.com/" + string(proto.MessageName(m)), Value: b}
}

// Duration converts a Go duration to its proto form.
func Duration(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// noTimeout is the zero route timeout Istio sets to turn off Envoy's 15 s default. Nearly
// every route carries it, so one immutable value is shared, like previousHostsAny: generated
// protos are never modified after construction (code that needs another timeout replaces the
// pointer, never the value).
var noTimeout = durationpb.New(0)

// ADSConfigSource says "fetch this resource over the same ADS stream".
func ADSConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// SocketAddress is an Envoy TCP address.
func SocketAddress(address string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       address,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// TCPProxy is a network filter that sends the connection to one cluster, with the proxy's
// access logs for its side (tel may be nil: none).
func TCPProxy(statPrefix, cluster string, tel *listenerTelemetry) *listenerv3.Filter {
	return &listenerv3.Filter{
		Name: wellknown.TCPProxy,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: MustAny(&tcpproxyv3.TcpProxy{
			StatPrefix:       statPrefix,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
			AccessLog:        tel.tcpAccessLog(cluster),
			AccessLogOptions: tel.tcpAccessLogOptions(cluster),
		})},
	}
}

// IstioMetadata is the filter metadata Istio attaches to generated resources, naming the
// configuration object they came from, so a config dump leads back to the YAML.
func IstioMetadata(fields map[string]string) *corev3.Metadata {
	s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(fields))}
	for k, v := range fields {
		s.Fields[k] = structpb.NewStringValue(v)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": s}}
}

// metadataParts are the messages of istioMetadata with up to two fields, allocated at once:
// every route and cluster carries such metadata, and allocation is most of its cost.
type metadataParts struct {
	metadata corev3.Metadata
	istio    structpb.Struct
	values   [2]structpb.Value
	strings  [2]structpb.Value_StringValue
}

// istioMetadata is IstioMetadata with one field.
func istioMetadata(key, value string) *corev3.Metadata {
	return newMetadataParts(1).set(0, key, value).done()
}

// istioMetadata2 is IstioMetadata with two fields.
func istioMetadata2(k1, v1, k2, v2 string) *corev3.Metadata {
	return newMetadataParts(2).set(0, k1, v1).set(1, k2, v2).done()
}

func newMetadataParts(n int) *metadataParts {
	return &metadataParts{istio: structpb.Struct{Fields: make(map[string]*structpb.Value, n)}}
}

func (p *metadataParts) set(i int, k, v string) *metadataParts {
	p.strings[i].StringValue = v
	p.values[i].Kind = &p.strings[i]
	p.istio.Fields[k] = &p.values[i]
	return p
}

func (p *metadataParts) done() *corev3.Metadata {
	p.metadata.FilterMetadata = map[string]*structpb.Struct{"istio": &p.istio}
	return &p.metadata
}

func falseValue() *wrapperspb.BoolValue { return wrapperspb.Bool(false) }

func uint32Value(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// sortedKeys gives map-driven output a stable order, so goldens and versions do not churn.
// Most maps it sees (a match's headers, a rule's header operations) are empty, for which the
// iterator would still be allocated.
func sortedKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

// previousHostsAny is the packed (empty) previous_hosts predicate config. It is built once
// because nearly every route carries it; generated protos are never modified after
// construction, so sharing one immutable value between resources is safe.
var previousHostsAny = MustAny(&previoushostsv3.PreviousHostsPredicate{})

// previousHostsPredicate makes a retry pick a host it has not tried yet.
func previousHostsPredicate() *routev3.RetryPolicy_RetryHostPredicate {
	return &routev3.RetryPolicy_RetryHostPredicate{
		Name:       "envoy.retry_host_predicates.previous_hosts",
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: previousHostsAny},
	}
}

func trueValue() *wrapperspb.BoolValue { return wrapperspb.Bool(true) }
