package translate

import (
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/pkg/model"
)

// Mutual TLS between sidecars with the mesh's own certificates: each proxy's SPIFFE
// certificate (SDS secret `default`) and the mesh's trust bundle (`ROOTCA`), both served by
// pilot over ADS after its identity check (see pkg/xds/sds.go). Server side: the inbound
// filter chains of a Sidecar's ingress listeners, per the PeerAuthentication mode
// (peerauthentication.go; with no policy, istiod's PERMISSIVE). Client side: DestinationRule
// ISTIO_MUTUAL, and auto-mTLS, which sends mTLS only to endpoints that declare a sidecar
// (label security.istio.io/tlsMode: istio) and whose PeerAuthentication terminates mTLS (no
// policy counts as PERMISSIVE). A proxy that can never hold a workload certificate gets
// neither default: no mTLS chain, no auto-mTLS (model.Snapshot.MayHoldIdentity).

const (
	workloadCertSecret = "default"
	rootCASecret       = "ROOTCA"

	// tlsModeLabel marks an endpoint whose workload runs a sidecar that accepts mTLS; istiod
	// copies it into the endpoint's metadata under transportSocketMatchKey.
	tlsModeLabel            = "security.istio.io/tlsMode"
	tlsModeIstio            = "istio"
	transportSocketMatchKey = "envoy.transport_socket_match"
)

// ALPN for mesh traffic. Clients offer istiod's istio-peer-exchange and istio (so a server
// knows the peer is a sidecar), and h2 too when the cluster speaks HTTP/2, as istiod's
// ALPNInMeshH2WithMxc does. The server lists h2 and http/1.1 first, unlike istiod: Envoy's
// server picks the first of its own protocols the client offers, and the inbound connection
// manager (codec AUTO) speaks HTTP/2 only when the negotiated protocol is h2, so with
// istio-peer-exchange first an HTTP/2 client would be read as HTTP/1 (tested: requests fail).
var (
	meshClientALPN   = []string{"istio-peer-exchange", "istio"}
	meshClientH2ALPN = []string{"istio-peer-exchange", "istio", "h2"}
	meshServerALPN   = []string{"h2", "http/1.1", "istio-peer-exchange", "istio"}
)

// meshTLSParams are istiod's mesh defaults: TLS 1.2 to 1.3.
func meshTLSParams() *tlsv3.TlsParameters {
	return &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
	}
}

// meshCommonTLSContext presents the workload certificate and verifies the peer against the
// mesh root; both come from pilot over ADS, so Envoy holds no files.
func meshCommonTLSContext(alpn []string, sans []*tlsv3.SubjectAltNameMatcher) *tlsv3.CommonTlsContext {
	common := &tlsv3.CommonTlsContext{
		TlsParams:                      meshTLSParams(),
		AlpnProtocols:                  alpn,
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecretConfig(workloadCertSecret)},
	}
	if len(sans) == 0 {
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: sdsSecretConfig(rootCASecret),
		}
	} else {
		// The SAN check is per cluster while the root is shared: a combined context joins them.
		common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: sdsSecretConfig(rootCASecret),
			},
		}
	}
	return common
}

// inboundMTLSSocket requires a client certificate signed by the mesh root. Any mesh identity
// is accepted here: which ones may do what is AuthorizationPolicy's business (RBAC principals).
func inboundMTLSSocket() *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name: wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: MustAny(&tlsv3.DownstreamTlsContext{
			CommonTlsContext:         meshCommonTLSContext(meshServerALPN, nil),
			RequireClientCertificate: trueValue(),
		})},
	}
}

// tlsInspectorFilter tells TLS from plaintext so that PERMISSIVE listeners can pick a chain by
// transport protocol.
func tlsInspectorFilter() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{
		Name:       wellknown.TlsInspector,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: MustAny(&tlsinspectorv3.TlsInspector{})},
	}
}

// inboundFilterChains lays out an inbound listener for the mode (inboundMTLSMode's, never
// UNSET): STRICT one mTLS chain (a plaintext client fails the handshake), DISABLE one
// plaintext chain, PERMISSIVE both, chosen by the TLS inspector's transport protocol. filters
// builds a chain's network filters; mtls says whether the chain terminates mTLS (so the HCM
// may forward the peer's identity).
func inboundFilterChains(mode security.PeerAuthentication_MutualTLS_Mode, filters func(mtls bool) []*listenerv3.Filter) ([]*listenerv3.FilterChain, []*listenerv3.ListenerFilter) {
	switch mode {
	case security.PeerAuthentication_MutualTLS_STRICT:
		return []*listenerv3.FilterChain{{Filters: filters(true), TransportSocket: inboundMTLSSocket()}}, nil
	case security.PeerAuthentication_MutualTLS_DISABLE:
		return []*listenerv3.FilterChain{{Filters: filters(false)}}, nil
	default: // PERMISSIVE
		return []*listenerv3.FilterChain{
			{
				FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls"},
				Filters:          filters(true),
				TransportSocket:  inboundMTLSSocket(),
			},
			{
				FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"},
				Filters:          filters(false),
			},
		}, []*listenerv3.ListenerFilter{tlsInspectorFilter()}
	}
}

// meshSNI is istiod's SNI for mesh traffic, `outbound_.PORT_.SUBSET_.HOST`: the cluster name
// with '|' replaced, which lets a server tell the original destination apart.
func meshSNI(port uint32, subset, host string) string {
	return "outbound_." + strconv.FormatUint(uint64(port), 10) + "_." + subset + "_." + host
}

// serviceSANs are the SPIFFE IDs a mesh server of svc may present: those of its endpoints'
// service accounts (in the service's namespace, where WorkloadEntries select), as istiod
// verifies them. Empty when no endpoint names a service account: then any mesh certificate is
// accepted, as istiod does.
func serviceSANs(svc *model.Service) []*tlsv3.SubjectAltNameMatcher {
	var ids []string
	for _, ep := range svc.Endpoints {
		if ep.ServiceAccount == "" {
			continue
		}
		id := "spiffe://" + ca.DefaultTrustDomain + "/ns/" + svc.Namespace + "/sa/" + ep.ServiceAccount
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := make([]*tlsv3.SubjectAltNameMatcher, 0, len(ids))
	for _, id := range ids {
		out = append(out, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}})
	}
	return out
}

// meshMTLSSocket is the client side of mesh mTLS to one service port (and subset); h2 says
// the cluster speaks HTTP/2.
func meshMTLSSocket(svc *model.Service, port uint32, subset string, h2 bool) *corev3.TransportSocket {
	alpn := meshClientALPN
	if h2 {
		alpn = meshClientH2ALPN
	}
	return &corev3.TransportSocket{
		Name: wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: MustAny(&tlsv3.UpstreamTlsContext{
			CommonTlsContext: meshCommonTLSContext(alpn, serviceSANs(svc)),
			Sni:              meshSNI(port, subset, svc.Hostname),
		})},
	}
}

// applyMeshTLS sets the mesh's mTLS on an outbound cluster where the DestinationRule asks for
// it (ISTIO_MUTUAL) or says nothing about TLS (auto-mTLS, when autoMTLS: the proxy may hold a
// workload certificate, model.Snapshot.MayHoldIdentity). Other modes are applyUpstreamTLS's.
func applyMeshTLS(c *clusterv3.Cluster, snap *model.Snapshot, svc *model.Service, port uint32, subset string, tls *networking.ClientTLSSettings, h2, autoMTLS bool) {
	switch {
	case tls.GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL:
		c.TransportSocket = meshMTLSSocket(svc, port, subset, h2)
	case tls == nil && autoMTLS:
		// Auto-mTLS picks the socket per endpoint from its metadata, which ORIGINAL_DST
		// clusters (resolution NONE) do not have.
		// istiod adds the matches to every mesh-internal cluster of every proxy, all of which
		// have certificates. Skiff adds them only for a proxy that may hold one (a proxy that
		// never gets `default` would hold the cluster warming for it, then offer no
		// certificate to a server that requires one: plaintext is what a PERMISSIVE server
		// accepts from it), and only where some endpoint accepts mTLS, so that clusters that
		// could only ever use the plaintext fallback stay as they were. This also stands in for
		// istiod's MESH_EXTERNAL exclusion, as Skiff's model does not keep a ServiceEntry's
		// location.
		if c.GetType() == clusterv3.Cluster_ORIGINAL_DST || !hasMTLSEndpoints(snap, svc) {
			return
		}
		c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
			{
				Name:            "tlsMode-" + tlsModeIstio,
				Match:           &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue(tlsModeIstio)}},
				TransportSocket: meshMTLSSocket(svc, port, subset, h2),
			},
			{
				Name:  "tlsMode-disabled",
				Match: &structpb.Struct{},
				TransportSocket: &corev3.TransportSocket{
					Name:       wellknown.TransportSocketRawBuffer,
					ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: MustAny(&rawbufferv3.RawBuffer{})},
				},
			},
		}
	}
}

// hasMTLSEndpoints reports whether any endpoint of svc accepts mesh mTLS.
func hasMTLSEndpoints(snap *model.Snapshot, svc *model.Service) bool {
	for _, ep := range svc.Endpoints {
		if acceptsMeshMTLS(snap, svc, ep) {
			return true
		}
	}
	return false
}

// endpointMetadata is an endpoint's metadata: istio's workload name, and the transport socket
// match auto-mTLS keys on when the endpoint accepts mTLS. istiod copies the tlsMode label
// as is and leaves the destination's PeerAuthentication to a per-service guess; deciding per
// endpoint keeps a DISABLE workload reachable in plaintext.
func endpointMetadata(snap *model.Snapshot, svc *model.Service, ep *model.Endpoint) *corev3.Metadata {
	md := IstioMetadata(map[string]string{"workload": ep.Source})
	if acceptsMeshMTLS(snap, svc, ep) {
		md.FilterMetadata[transportSocketMatchKey] = &structpb.Struct{Fields: map[string]*structpb.Value{
			"tlsMode": structpb.NewStringValue(tlsModeIstio),
		}}
	}
	return md
}
