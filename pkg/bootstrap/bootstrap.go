// Package bootstrap builds the Envoy bootstrap with which a plain upstream Envoy (no Istio agent)
// joins a Skiff pilot over ADS.
//
// The bootstrap is deliberately the minimum: who the proxy is (node), where its admin interface
// listens, one static cluster that reaches pilot, and "get listeners and clusters from ADS".
// Routes and endpoints then arrive over that same stream. Istio's agent-generated bootstrap
// carries much more (stats sinks, tracing, SDS, overload manager); none of it is needed for
// Envoy to talk to pilot, and each extra line is one more thing a reader has to rule out when a
// proxy does not connect.
//
// A few options serve an Envoy injected into a pod with no agent beside it: the trust bundle for
// pilot's TLS port can be a file Envoy reads (XDSRootCertFile), the node ID can come from
// Envoy's --service-node flag (NodeIDFromCommandLine), and two static listeners, like Istio's,
// answer the readiness probe (15021) and Prometheus (15090) from the admin interface.
package bootstrap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiffmesh/skiff/pkg/render"
)

const (
	// XDSClusterName is the static cluster that reaches pilot. Istio uses the same name, so
	// Envoy stats and logs read the same as in an Istio mesh.
	XDSClusterName = "xds-grpc"

	// Version is sent as node metadata SKIFF_BOOTSTRAP_VERSION. Bump it when the bootstrap
	// changes in a way pilot could need to tell apart.
	Version = "1"

	// interceptionModeKey is the node metadata field pilot reads to decide whether service
	// listeners bind (NONE) or traffic arrives through captured virtual listeners (REDIRECT).
	interceptionModeKey = "INTERCEPTION_MODE"
	// labelsKey carries the workload's labels, as in Istio's node metadata.
	labelsKey  = "LABELS"
	versionKey = "SKIFF_BOOTSTRAP_VERSION"

	// A refused or unroutable pilot should fail fast so Envoy retries soon; 1s is ample on a
	// cluster network.
	connectTimeout = time.Second
	// HTTP/2 PINGs on the ADS connection. Without them a pilot that vanished without closing
	// the TCP connection (node lost, network partition) goes unnoticed until the kernel gives
	// up, which takes many minutes; with them Envoy reconnects within interval+timeout.
	keepaliveInterval = 30 * time.Second
	keepaliveTimeout  = 10 * time.Second
	// TCP keepalive probe start, in seconds, as Istio sets it: it keeps NAT and conntrack
	// entries along the path from expiring on a quiet stream. Dead-peer detection is the
	// HTTP/2 PING's job, so this need not be short.
	tcpKeepaliveTime = 300
)

// Build returns the bootstrap for o. The error, if any, names the offending Options field. A
// returned bootstrap always passes Validate.
func Build(o Options) (*bootstrapv3.Bootstrap, error) {
	r, err := o.resolve()
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	b := &bootstrapv3.Bootstrap{
		Node:             node(r),
		Admin:            admin(r),
		StaticResources:  &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{xdsCluster(r)}},
		DynamicResources: dynamicResources(r),
	}
	addAdminListeners(r, b.StaticResources)
	if r.upstreamBind != "" {
		// For every cluster that names no bind of its own, xds-grpc included: pilot's identity
		// check compares the ADS connection's source with the workload's address.
		b.ClusterManager = &bootstrapv3.ClusterManager{UpstreamBindConfig: &corev3.BindConfig{
			SourceAddress: &corev3.SocketAddress{
				Address:       r.upstreamBind,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
			},
		}}
	}
	// The protos carry Envoy's own validation rules; checking them here turns a mistake in this
	// file into a test failure instead of an Envoy refusing to start.
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: built an invalid bootstrap (a bug in package bootstrap): %w", err)
	}
	return b, nil
}

// YAML returns Build's bootstrap as YAML for `envoy -c`. Field names are the proto names
// (snake_case) that Envoy's documentation uses, and keys are sorted, so the output is stable
// and can be diffed and kept in golden files.
func YAML(o Options) ([]byte, error) {
	b, err := Build(o)
	if err != nil {
		return nil, err
	}
	return render.YAML(b)
}

// JSON renders the bootstrap as indented JSON. JSON is also YAML, and it is the form Envoy
// parses from a path without a .yaml extension, such as `envoy -c <(pilot bootstrap ...)`.
func JSON(o Options) ([]byte, error) {
	b, err := Build(o)
	if err != nil {
		return nil, err
	}
	return render.JSON(b)
}

// CompactJSON renders the bootstrap as JSON on one line, for Envoy's --config-yaml argument
// (JSON is YAML), as the sidecar injector passes it. It is as stable as JSON's output.
func CompactJSON(o Options) ([]byte, error) {
	js, err := JSON(o)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, js); err != nil {
		return nil, fmt.Errorf("bootstrap: compacting JSON: %w", err)
	}
	return out.Bytes(), nil
}

// node is who the proxy is. Pilot parses the ID (type, IP, pod, namespace) and reads
// INTERCEPTION_MODE from the metadata; the cluster is only for humans and stats.
func node(r *resolved) *corev3.Node {
	n := &corev3.Node{
		Id:      r.nodeID,
		Cluster: r.cluster,
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			interceptionModeKey: structpb.NewStringValue(r.interception),
			versionKey:          structpb.NewStringValue(Version),
		}},
	}
	if len(r.labels) > 0 {
		labels := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for k, v := range r.labels {
			labels.Fields[k] = structpb.NewStringValue(v)
		}
		n.Metadata.Fields[labelsKey] = structpb.NewStructValue(labels)
	}
	return n
}

// admin is Envoy's admin interface: config_dump, clusters, stats. Debugging a proxy without it
// is guesswork, so it is always on (on loopback by default, see DefaultAdminAddress).
func admin(r *resolved) *bootstrapv3.Admin {
	return &bootstrapv3.Admin{Address: socketAddress(r.adminIP, r.adminPort)}
}

// xdsCluster is the one cluster Envoy knows before it has talked to pilot: how to reach pilot.
func xdsCluster(r *resolved) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:           XDSClusterName,
		ConnectTimeout: durationpb.New(connectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: XDSClusterName,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: xdsEndpoints(r)}},
		},
		// gRPC needs HTTP/2; Envoy speaks HTTP/1.1 upstream unless told otherwise.
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
					ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
						ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
							Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
								ConnectionKeepalive: &corev3.KeepaliveSettings{
									Interval: durationpb.New(keepaliveInterval),
									Timeout:  durationpb.New(keepaliveTimeout),
								},
							},
						},
					},
				},
			}),
		},
		UpstreamConnectionOptions: &clusterv3.UpstreamConnectionOptions{
			TcpKeepalive: &corev3.TcpKeepalive{KeepaliveTime: wrapperspb.UInt32(tcpKeepaliveTime)},
		},
	}
	if r.xdsSNI != "" { // a trust bundle was given, inline or as a file
		c.TransportSocket = xdsTLS(r)
	}
	if r.xdsIsIP {
		// An IP needs no resolver, and STATIC makes the cluster usable the moment Envoy starts.
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	} else {
		// STRICT_DNS re-resolves the name (every 5s by default), so a pilot that moves to a new
		// IP, e.g. a rescheduled pod behind a headless service, is followed.
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		// Envoy's default (AUTO) prefers IPv6, so "localhost" would become ::1 and miss a pilot
		// listening on 127.0.0.1 only. Prefer IPv4 but still work on IPv6-only networks.
		c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
	}
	return c
}

// xdsEndpoints are pilot's replicas. Envoy's ADS client picks one (round robin) for each
// stream it opens, so when the replica it is connected to goes away, its next attempt goes to
// another.
func xdsEndpoints(r *resolved) []*endpointv3.LbEndpoint {
	out := make([]*endpointv3.LbEndpoint, 0, len(r.xdsEndpoints))
	for _, e := range r.xdsEndpoints {
		out = append(out, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(e.host, e.port)}},
		})
	}
	return out
}

// xdsTLS verifies pilot against the mesh root, and that its certificate is for the SNI name:
// Envoy checks no name on its own, so without the SAN match any certificate from the mesh's
// CA, a workload's included, could pose as pilot.
func xdsTLS(r *resolved) *corev3.TransportSocket {
	trusted := &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(r.xdsRootCert)}}
	if r.xdsRootFile != "" {
		trusted = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: r.xdsRootFile}}
	}
	return &corev3.TransportSocket{
		Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{
			Sni: r.xdsSNI,
			CommonTlsContext: &tlsv3.CommonTlsContext{
				AlpnProtocols: []string{"h2"},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: trusted,
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_DNS,
						Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: r.xdsSNI}},
					}},
				}},
			},
		})},
	}
}

// dynamicResources tells Envoy to take listeners and clusters from one ADS stream to pilot;
// routes and endpoints then follow over the same stream because pilot's listeners and clusters
// point at ADS for them.
func dynamicResources(r *resolved) *bootstrapv3.Bootstrap_DynamicResources {
	apiType := corev3.ApiConfigSource_GRPC
	if r.delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	ads := func() *corev3.ConfigSource {
		cs := &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}
		if r.readiness != nil {
			// Ready must mean "configured by pilot". By default Envoy gives up waiting for the
			// first clusters and listeners after 15s and declares itself live without them; 0
			// waits for pilot forever, as Istio's bootstrap does, so the readiness probe fails
			// (and the pod gets no traffic) until pilot has answered.
			cs.InitialFetchTimeout = durationpb.New(0)
		}
		return cs
	}
	return &bootstrapv3.Bootstrap_DynamicResources{
		AdsConfig: &corev3.ApiConfigSource{
			ApiType:             apiType,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSClusterName}},
			}},
			// go-control-plane's server, which pilot is built on, copies the first request's
			// node into later ones, so resending it (metadata included) with every ACK is waste.
			SetNodeOnFirstMessageOnly: true,
		},
		LdsConfig: ads(),
		CdsConfig: ads(),
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// mustAny packs a message built in this file; that cannot fail, so failure is a bug.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic("bootstrap: packing " + string(proto.MessageName(m)) + ": " + err.Error())
	}
	return a
}
