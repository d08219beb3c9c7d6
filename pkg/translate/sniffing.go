package translate

import (
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	commonsfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	setfilterstatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/set_filter_state/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	security "istio.io/api/security/v1beta1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Protocol sniffing, as istiod does it for a port whose protocol nothing declares
// (model.Unsupported: a ServiceEntry port without protocol, a Kubernetes port named `web`):
// the listener reads the first bytes of each connection with Envoy's http_inspector, which
// reports plaintext HTTP/1.1 or HTTP/2 (h2c) as the connection's application protocol; filter
// chains that match those protocols terminate HTTP, so VirtualService http routes apply, and
// everything else is forwarded as TCP.
//
// Outbound (istiod's ListenerProtocolAuto): the listener binds like a TCP one, on the service's
// address when traffic is captured and the service has one, with route configuration
// `HOST:PORT` holding that service alone; otherwise on the shared address, with the port's
// route configuration "PORT", shared with the HTTP services of the port.
//
// Inbound (virtualInbound): per port, by PeerAuthentication mode, the chains of istiod's
// getFilterChainMatchOptions for ListenerProtocolAuto. Under mTLS the bytes are encrypted, so
// the client says what it sends by ALPN: istiod's sidecars put istio-http/1.1 or istio-h2
// first for HTTP (its istio.alpn filter), istio-peer-exchange and istio for anything else.
// Upstream Envoy has no istio.alpn filter; Skiff's sniffing outbound chains set the same ALPN
// with set_filter_state (the well-known envoy.network.application_protocols object), one chain
// per HTTP version. The standard name comes last (http/1.1, h2), so a server that knows none of
// Istio's names, or Skiff's own inbound TLS context, negotiates the protocol the client speaks.

// listenerProtocol is how a sidecar listens on a port, istiod's ListenerProtocol.
type listenerProtocol int

const (
	listenTCP  listenerProtocol = iota // tcp_proxy (or TLS routes)
	listenHTTP                         // an HTTP connection manager
	listenAuto                         // sniffed: both, chosen per connection
)

// listenerProtocolOf is istiod's ModelProtocolToListenerProtocol.
func listenerProtocolOf(p model.Protocol) listenerProtocol {
	switch {
	case p.IsHTTP():
		return listenHTTP
	case p.IsSniffed():
		return listenAuto
	}
	return listenTCP
}

// mergeListenerProtocols is the protocol of a port two services declare differently: HTTP wins,
// then sniffing (which still forwards TCP), then TCP.
func mergeListenerProtocols(a, b listenerProtocol) listenerProtocol {
	if a == listenHTTP || b == listenHTTP {
		return listenHTTP
	}
	if a == listenAuto || b == listenAuto {
		return listenAuto
	}
	return listenTCP
}

// ALPN names of sniffed traffic.
var (
	// plaintextHTTPALPNs are what http_inspector reports for HTTP/1.1 and HTTP/2 prior
	// knowledge. HTTP/1.0 is left out, as by istiod unless it accepts HTTP/1.0: the
	// connection manager would refuse it, and as TCP it at least gets through.
	plaintextHTTPALPNs = []string{"http/1.1", "h2c"}
	// meshHTTPALPNs are what a mesh client offers first for HTTP over mTLS.
	meshHTTPALPNs = []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}
)

// sniffedHTTPVersions are the HTTP chains of a sniffing outbound listener: the application
// protocol http_inspector reports, and the ALPN the upstream connection then offers.
var sniffedHTTPVersions = []struct{ detected, alpn string }{
	{"http/1.1", "istio-http/1.1,istio,http/1.1"},
	{"h2c", "istio-h2,istio,h2"},
}

// SniffedRouteConfigName is istiod's route configuration for a sniffed service port on a
// listener of its own: `HOST:PORT`.
func SniffedRouteConfigName(hostname string, port uint32) string {
	return hostname + ":" + strconv.FormatUint(uint64(port), 10)
}

// ownListenerAddress is the address of the outbound listener of a service's TCP or sniffed
// port when it has one of its own: the service's first address, when traffic is captured
// (nothing else can make a connection to a virtual IP arrive here). Otherwise the port shares
// the wildcard (or localhost) listener.
func ownListenerAddress(proxy *model.Proxy, svc *model.Service) (string, bool) {
	if proxy.InterceptionMode == model.InterceptionRedirect && len(svc.Addresses) > 0 {
		return svc.Addresses[0], true
	}
	return "", false
}

// httpInspectorFilter detects plaintext HTTP by its first bytes.
func httpInspectorFilter() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{
		Name:       wellknown.HTTPInspector,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: MustAny(&httpinspectorv3.HttpInspector{})},
	}
}

// sniffListener turns an outbound TCP listener into a sniffing one: HTTP chains on
// routeConfig ahead of its TCP chains, and http_inspector after any TLS inspector (which
// leaves TLS connections alone). As istiod with its default protocolDetectionTimeout (0s),
// the inspector waits for the client's first bytes without a deadline: a server-first protocol
// on a port that says nothing of its protocol waits too, which is why such ports should be
// named (Kubernetes' well-known ones are TCP, see model.KubernetesPortProtocol).
func sniffListener(l *listenerv3.Listener, routeConfig string, tel *listenerTelemetry) {
	chains := make([]*listenerv3.FilterChain, 0, len(sniffedHTTPVersions)+len(l.FilterChains))
	for _, v := range sniffedHTTPVersions {
		hcm := newHTTPConnectionManager("outbound_"+l.Name, tel)
		hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ADSConfigSource(),
			RouteConfigName: routeConfig,
		}}
		hcm.HttpFilters = append([]*hcmv3.HttpFilter{upstreamALPNFilter(v.alpn)}, hcm.HttpFilters...)
		chains = append(chains, &listenerv3.FilterChain{
			Name: l.Name + "-" + v.detected,
			FilterChainMatch: &listenerv3.FilterChainMatch{
				TransportProtocol:    "raw_buffer",
				ApplicationProtocols: []string{v.detected},
			},
			Filters: []*listenerv3.Filter{hcmFilter(hcm)},
		})
	}
	for _, c := range l.FilterChains {
		// Envoy picks the most specific transport protocol before it looks at application
		// protocols: a plaintext connection that is not HTTP would find the HTTP chains'
		// raw_buffer and nothing else there, so the TCP chains say raw_buffer too (tested:
		// without it the connection is reset). Chains matched by SNI see TLS, not this.
		if m := c.GetFilterChainMatch(); m.GetTransportProtocol() == "" && len(m.GetServerNames()) == 0 {
			match := &listenerv3.FilterChainMatch{}
			if m != nil {
				match = proto.Clone(m).(*listenerv3.FilterChainMatch)
			}
			match.TransportProtocol = "raw_buffer"
			c.FilterChainMatch = match
		}
	}
	l.FilterChains = append(chains, l.FilterChains...)
	l.ListenerFilters = append(l.ListenerFilters, httpInspectorFilter())
	l.ListenerFiltersTimeout = Duration(0)
	l.ContinueOnListenerFiltersTimeout = true
}

// upstreamALPNFilter makes the request's upstream connection offer alpn (comma-separated)
// instead of the cluster's ALPN, as istiod's istio.alpn filter does: a mesh server then knows
// it carries HTTP (see the package comment above). Plaintext upstreams ignore it.
func upstreamALPNFilter(alpn string) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name: "envoy.filters.http.set_filter_state",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: MustAny(&setfilterstatev3.Config{
			OnRequestHeaders: []*commonsfsv3.FilterStateValue{{
				Key: &commonsfsv3.FilterStateValue_ObjectKey{ObjectKey: "envoy.network.application_protocols"},
				Value: &commonsfsv3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
					Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
						Specifier: &corev3.DataSource_InlineString{InlineString: alpn},
					}},
				}},
			}},
		})},
	}
}

// sniffedInboundChains are the chains of one sniffed inbound port for the mode, istiod's
// getFilterChainMatchOptions for ListenerProtocolAuto: HTTP is told apart by ALPN under mTLS
// (meshHTTPALPNs, which Skiff's sniffing clients offer) and by http_inspector in plaintext;
// anything else is TCP. Every chain names its transport protocol. httpChain and tcpChain build
// the network filters; mtls says whether the chain terminates mTLS.
func sniffedInboundChains(mode security.PeerAuthentication_MutualTLS_Mode, httpChain, tcpChain func(mtls bool) []*listenerv3.Filter) []*listenerv3.FilterChain {
	mtlsHTTP := func() *listenerv3.FilterChain {
		return &listenerv3.FilterChain{
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls", ApplicationProtocols: slices.Clone(meshHTTPALPNs)},
			Filters:          httpChain(true),
			TransportSocket:  inboundMTLSSocket(),
		}
	}
	mtlsTCP := func() *listenerv3.FilterChain {
		return &listenerv3.FilterChain{
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls"},
			Filters:          tcpChain(true),
			TransportSocket:  inboundMTLSSocket(),
		}
	}
	plainHTTP := func() *listenerv3.FilterChain {
		return &listenerv3.FilterChain{
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: slices.Clone(plaintextHTTPALPNs)},
			Filters:          httpChain(false),
		}
	}
	plainTCP := func() *listenerv3.FilterChain {
		return &listenerv3.FilterChain{
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"},
			Filters:          tcpChain(false),
		}
	}
	switch mode {
	case security.PeerAuthentication_MutualTLS_STRICT:
		return []*listenerv3.FilterChain{mtlsHTTP(), mtlsTCP()}
	case security.PeerAuthentication_MutualTLS_DISABLE:
		return []*listenerv3.FilterChain{plainHTTP(), plainTCP()}
	default: // PERMISSIVE
		return []*listenerv3.FilterChain{mtlsHTTP(), plainHTTP(), mtlsTCP(), plainTCP()}
	}
}
