package translate

import (
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// The TLS side of gateway listeners: the DownstreamTlsContext of servers that terminate TLS,
// the HTTP connection manager gateways use, and the tcp_proxy chains of TCP and TLS servers.

// gatewayALPN is what istiod offers clients of a server that terminates TLS.
var gatewayALPN = []string{"h2", "http/1.1"}

// downstreamTLSSocket terminates TLS with the server's settings.
func downstreamTLSSocket(tls *networking.ServerTLSSettings) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: MustAny(downstreamTLSContext(tls))},
	}
}

// tlsSocketCache shares the transport socket of ISTIO_MUTUAL servers with the same settings
// between a gateway proxy's filter chains (generated protos are never modified once built):
// their context depends on a few fields only, and a gateway with a thousand such servers
// (istiod's gateways benchmark) would otherwise build and encode a thousand equal ones.
type tlsSocketCache map[string]*corev3.TransportSocket

func (c tlsSocketCache) socket(tls *networking.ServerTLSSettings) *corev3.TransportSocket {
	if tls.GetMode() != networking.ServerTLSSettings_ISTIO_MUTUAL {
		return downstreamTLSSocket(tls)
	}
	// Exactly what istioMutualTLSContext reads; NUL separates, as no name contains it.
	key := strings.Join(tls.GetSubjectAltNames(), "\x00") + "\x00\x00" + tls.GetCaCrl() + "\x00" + strconv.FormatBool(tls.GetInsecureSkipVerify().GetValue())
	if s, ok := c[key]; ok {
		return s
	}
	s := downstreamTLSSocket(tls)
	c[key] = s
	return s
}

// downstreamTLSContext is istiod's BuildListenerTLSContext for SIMPLE, MUTUAL and
// OPTIONAL_MUTUAL: certificates over SDS from credentialName(s), or read by Envoy from the
// files the settings name; client certificates required for MUTUAL and verified (when sent)
// for OPTIONAL_MUTUAL; TLS versions and cipher suites as set. ISTIO_MUTUAL is
// istioMutualTLSContext's.
func downstreamTLSContext(tls *networking.ServerTLSSettings) *tlsv3.DownstreamTlsContext {
	if tls.GetMode() == networking.ServerTLSSettings_ISTIO_MUTUAL {
		return istioMutualTLSContext(tls)
	}
	common := &tlsv3.CommonTlsContext{AlpnProtocols: gatewayALPN}
	ctx := &tlsv3.DownstreamTlsContext{
		CommonTlsContext:         common,
		RequireClientCertificate: wrapperspb.Bool(tls.GetMode() == networking.ServerTLSSettings_MUTUAL),
	}
	if refs := credentialRefs(tls); len(refs) > 0 {
		for _, ref := range refs {
			if ref.ca {
				common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
					CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
						DefaultValidationContext:         clientValidation(tls),
						ValidationContextSdsSecretConfig: sdsSecretConfig(ref.sdsName),
					},
				}
				continue
			}
			common.TlsCertificateSdsSecretConfigs = append(common.TlsCertificateSdsSecretConfigs, sdsSecretConfig(ref.sdsName))
		}
	} else {
		if tls.GetServerCertificate() != "" {
			common.TlsCertificates = append(common.TlsCertificates, fileCertificate(tls.GetServerCertificate(), tls.GetPrivateKey()))
		}
		for _, c := range tls.GetTlsCertificates() {
			common.TlsCertificates = append(common.TlsCertificates, fileCertificate(c.GetServerCertificate(), c.GetPrivateKey()))
		}
		if verifiesClients(tls) {
			v := clientValidation(tls)
			v.TrustedCa = fileSource(tls.GetCaCertificates())
			if tls.GetCaCrl() != "" {
				v.Crl = fileSource(tls.GetCaCrl())
			}
			common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: v}
		}
	}
	if p := tlsParams(tls); p != nil {
		common.TlsParams = p
	}
	return ctx
}

// istioMutualTLSContext is istiod's context for an ISTIO_MUTUAL server
// (BuildListenerTLSContext, then ApplyToCommonTLSContext): the gateway proxy's own workload
// certificate, SDS `default`; a client certificate required and verified against the mesh
// root, SDS `ROOTCA`, and against the server's subjectAltNames when it lists any (a client's
// SPIFFE ID, `spiffe://cluster.local/ns/NS/sa/SA`), with caCrl and insecureSkipVerify as
// istiod applies them. As in istiod, the settings' TLS versions and cipher suites do not
// apply to this mode. ALPN offers h2 and http/1.1, istiod's choice for HTTPS servers; for TLS
// servers istiod offers istio-peer-exchange first, for its metadata exchange filter, which
// Envoy does not have: an Istio client that negotiated it would send bytes no filter here
// removes, so Skiff offers what istiod offers with that exchange turned off
// (DISABLE_MX_ALPN).
func istioMutualTLSContext(tls *networking.ServerTLSSettings) *tlsv3.DownstreamTlsContext {
	v := &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: subjectAltNameMatchers(tls.GetSubjectAltNames())}
	if tls.GetCaCrl() != "" {
		v.Crl = fileSource(tls.GetCaCrl())
	}
	if tls.GetInsecureSkipVerify().GetValue() {
		v.TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
	}
	return &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  gatewayALPN,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecretConfig(workloadCertSecret)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         v,
					ValidationContextSdsSecretConfig: sdsSecretConfig(rootCASecret),
				},
			},
		},
		RequireClientCertificate: trueValue(),
	}
}

// clientValidation is what a client certificate must carry beyond the CA's signature.
func clientValidation(tls *networking.ServerTLSSettings) *tlsv3.CertificateValidationContext {
	return &tlsv3.CertificateValidationContext{
		VerifyCertificateSpki:     tls.GetVerifyCertificateSpki(),
		VerifyCertificateHash:     tls.GetVerifyCertificateHash(),
		MatchTypedSubjectAltNames: subjectAltNameMatchers(tls.GetSubjectAltNames()),
	}
}

// tlsParams maps the settings' protocol versions and cipher suites; nil when none is set.
func tlsParams(tls *networking.ServerTLSSettings) *tlsv3.TlsParameters {
	if tls.GetMinProtocolVersion() == networking.ServerTLSSettings_TLS_AUTO &&
		tls.GetMaxProtocolVersion() == networking.ServerTLSSettings_TLS_AUTO && len(tls.GetCipherSuites()) == 0 {
		return nil
	}
	// Istio's TLSProtocol enum has Envoy's numbering (TLS_AUTO, TLSV1_0 … TLSV1_3).
	return &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TlsProtocol(tls.GetMinProtocolVersion()),
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TlsProtocol(tls.GetMaxProtocolVersion()),
		CipherSuites:              tls.GetCipherSuites(),
	}
}

func sdsSecretConfig(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: ADSConfigSource()}
}

func fileCertificate(cert, key string) *tlsv3.TlsCertificate {
	return &tlsv3.TlsCertificate{CertificateChain: fileSource(cert), PrivateKey: fileSource(key)}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// gatewayTCPFilters forwards a TCP server (or a TLS server after termination) by the first tcp
// route, in the first VirtualService bound to the gateway with a host of the server, whose
// match takes this port and gateway (istiod's buildGatewayNetworkFiltersFromTCPRoutes). nil
// when nothing routes it.
func gatewayTCPFilters(snap *model.Snapshot, proxy *model.Proxy, gs *gatewayServer) []*listenerv3.Filter {
	for _, vs := range gatewayVirtualServices(snap, proxy, gs.gateway) {
		if len(overlappingHosts(gs, vs, nil)) == 0 {
			continue
		}
		for _, rule := range vs.Spec.Tcp {
			if len(rule.Route) > 0 && anyL4MatchApplies(rule.Match, proxy, gs, vs.Namespace) {
				return []*listenerv3.Filter{tcpRouteProxy(snap, proxy, vs, rule.Route, gs.port)}
			}
		}
	}
	return nil
}

// passthroughChains builds one filter chain per SNI match of the VirtualServices' tls routes
// bound to a PASSTHROUGH server, forwarding the still-encrypted connection. A match naming a
// host an earlier chain of the listener has is left out there (Envoy rejects two chains with
// one match), as istiod leaves it out.
func passthroughChains(snap *model.Snapshot, proxy *model.Proxy, gs *gatewayServer) []*listenerv3.FilterChain {
	var out []*listenerv3.FilterChain
	for _, vs := range gatewayVirtualServices(snap, proxy, gs.gateway) {
		if len(overlappingHosts(gs, vs, nil)) == 0 {
			continue
		}
		for _, rule := range vs.Spec.Tls {
			if len(rule.Route) == 0 {
				continue
			}
			for _, m := range rule.Match {
				if !l4MatchApplies(m.Port, m.Gateways, m.SourceLabels, m.SourceNamespace, vs.Namespace, proxy, gs.port.Number, []string{gs.gateway}) {
					continue
				}
				out = append(out, &listenerv3.FilterChain{
					FilterChainMatch: sniMatch(sortedUnique(m.SniHosts)),
					Filters:          []*listenerv3.Filter{tcpRouteProxy(snap, proxy, vs, rule.Route, gs.port)},
				})
			}
		}
	}
	return out
}

// anyL4MatchApplies reports whether any match (or no match at all) applies to the server's
// port and gateway, with the same static checks as HTTP matches.
func anyL4MatchApplies(matches []*networking.L4MatchAttributes, proxy *model.Proxy, gs *gatewayServer, vsNamespace string) bool {
	if len(matches) == 0 {
		return true
	}
	for _, m := range matches {
		if l4MatchApplies(m.Port, m.Gateways, m.SourceLabels, m.SourceNamespace, vsNamespace, proxy, gs.port.Number, []string{gs.gateway}) {
			return true
		}
	}
	return false
}

// tcpRouteProxy forwards to a route's destination, or splits by weight between several, named
// as istiod names them: the cluster, or VIRTUALSERVICE.NAMESPACE for a split.
func tcpRouteProxy(snap *model.Snapshot, proxy *model.Proxy, vs *networkingv1.VirtualService, dests []*networking.RouteDestination, port model.Port) *listenerv3.Filter {
	if len(dests) == 1 {
		cluster := destinationCluster(snap, proxy, vs.Namespace, dests[0].Destination, port)
		return TCPProxy(cluster, cluster, telemetryFor(snap, proxy))
	}
	weighted := &tcpproxyv3.TcpProxy_WeightedCluster{}
	for _, d := range dests {
		if d.Weight <= 0 {
			continue
		}
		weighted.Clusters = append(weighted.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{
			Name:   destinationCluster(snap, proxy, vs.Namespace, d.Destination, port),
			Weight: uint32(d.Weight),
		})
	}
	if len(weighted.Clusters) == 0 {
		// No weights at all: split evenly rather than send nowhere, as HTTP routes do.
		for _, d := range dests {
			weighted.Clusters = append(weighted.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{
				Name:   destinationCluster(snap, proxy, vs.Namespace, d.Destination, port),
				Weight: 1,
			})
		}
	}
	return &listenerv3.Filter{
		Name: wellknown.TCPProxy,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: MustAny(&tcpproxyv3.TcpProxy{
			StatPrefix:       vs.Name + "." + vs.Namespace,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: weighted},
			AccessLog:        telemetryFor(snap, proxy).tcpAccessLog(""),
			AccessLogOptions: telemetryFor(snap, proxy).tcpAccessLogOptions(""),
		})},
	}
}
