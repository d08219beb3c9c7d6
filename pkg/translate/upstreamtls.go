package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	networking "istio.io/api/networking/v1alpha3"
)

// The tls part of a traffic policy: TLS origination with certificates Envoy reads from files.
// istiod serves those files to Envoy over SDS through its node agent; Skiff has no agent, so
// the paths must be valid where Envoy runs (Envoy rejects a cluster whose files it cannot read).

// systemCABundle is the trust store used when caCertificates is empty, istiod's "system": the
// path Debian, Ubuntu, Alpine and Envoy's own images keep it at. Elsewhere, name the CA file.
const systemCABundle = "/etc/ssl/certs/ca-certificates.crt"

// upstreamTLSParams are istiod's client defaults: TLS 1.2 to 1.3.
func upstreamTLSParams() *tlsv3.TlsParameters {
	return &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
	}
}

// applyUpstreamTLS originates TLS for modes SIMPLE and MUTUAL as istiod's constructUpstreamTLS
// does: the client certificate for MUTUAL, the server verified against the CA (and the
// subjectAltNames) unless insecureSkipVerify, the given SNI, h2 offered by ALPN to HTTP/2
// clusters. Without an SNI, Envoy sends the request's host (auto_sni), and without SNI and
// subjectAltNames it checks the server certificate against that host (auto_san_validation).
func applyUpstreamTLS(c *clusterv3.Cluster, tls *networking.ClientTLSSettings, opts *protocolOptions) {
	switch tls.GetMode() {
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
	default:
		// DISABLE: plaintext. ISTIO_MUTUAL and no tls at all (auto-mTLS) use the mesh's own
		// certificates over SDS: see applyMeshTLS in mtls.go.
		return
	}
	if tls.GetCredentialName() != "" {
		// A credentialName is a Kubernetes secret that istiod serves only to gateways and to
		// sidecars selected by a workloadSelector; for other sidecars it leaves TLS off, and so
		// does Skiff, which does not serve client credentials yet.
		return
	}
	common := &tlsv3.CommonTlsContext{TlsParams: upstreamTLSParams()}
	if tls.GetMode() == networking.ClientTLSSettings_MUTUAL {
		common.TlsCertificates = []*tlsv3.TlsCertificate{fileCertificate(tls.GetClientCertificate(), tls.GetPrivateKey())}
	}
	skipVerify := tls.GetInsecureSkipVerify().GetValue()
	if !skipVerify {
		ca := tls.GetCaCertificates()
		if ca == "" {
			ca = systemCABundle
		}
		v := &tlsv3.CertificateValidationContext{
			TrustedCa:                 fileSource(ca),
			MatchTypedSubjectAltNames: subjectAltNameMatchers(tls.GetSubjectAltNames()),
		}
		if crl := tls.GetCaCrl(); crl != "" {
			v.Crl = fileSource(crl)
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: v}
	}
	if opts.h2 && !opts.downstream {
		common.AlpnProtocols = []string{"h2"}
	}
	if tls.GetSni() == "" {
		up := opts.upstreamOptions()
		up.AutoSni = true
		up.AutoSanValidation = len(tls.GetSubjectAltNames()) == 0 && !skipVerify
	}
	c.TransportSocket = &corev3.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: MustAny(&tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: tls.GetSni()})},
	}
}

// subjectAltNameMatchers accepts a certificate carrying any of the names, as a DNS name or a
// URI (a SPIFFE ID): Istio's subjectAltNames do not say which, and Envoy's typed matchers
// need a type.
func subjectAltNameMatchers(sans []string) []*tlsv3.SubjectAltNameMatcher {
	if len(sans) == 0 {
		return nil
	}
	out := make([]*tlsv3.SubjectAltNameMatcher, 0, 2*len(sans))
	for _, san := range sans {
		exact := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}
		out = append(out,
			&tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact},
			&tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exact})
	}
	return out
}
