package translate

import (
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// jwtClaimHeaderPrefix marks a header match that istiod turns into a match on JWT claims
// (dynamic metadata written by the jwt_authn filter). Skiff has no request authentication, so
// that metadata never exists: matching on it must not become a match on a header a client can
// send.
const jwtClaimHeaderPrefix = "@request.auth.claims"

// httpMatchApplies evaluates the parts of a match that are known when the configuration is
// built, as istiod does: the port being routed, the gateway the proxy serves (MeshGateway for
// sidecars; the match's gateway names are resolved in the VirtualService's namespace), the
// proxy's own labels and namespace. A match that fails them must not widen into "everything":
// its route is left out. istiod ignores sourceLabels and sourceNamespace when a match names
// gateways; Skiff requires all of them, as istiod does for TCP and TLS matches, so a match is
// never wider than what it says.
func httpMatchApplies(m *networking.HTTPMatchRequest, vsNamespace string, proxy *model.Proxy, port uint32, served []string) bool {
	if m == nil {
		return true
	}
	return l4MatchApplies(m.Port, m.Gateways, m.SourceLabels, m.SourceNamespace, vsNamespace, proxy, port, served)
}

// l4MatchApplies is the static part shared by HTTP, TCP and TLS matches. served are the
// gateways the proxy serves on this port, as NAMESPACE/NAME or model.MeshGateway.
func l4MatchApplies(matchPort uint32, gateways []string, sourceLabels map[string]string, sourceNamespace, vsNamespace string,
	proxy *model.Proxy, port uint32, served []string,
) bool {
	if matchPort != 0 && matchPort != port {
		return false
	}
	if len(gateways) > 0 && !slices.ContainsFunc(served, func(g string) bool { return matchesGateway(gateways, vsNamespace, g) }) {
		return false
	}
	if sourceNamespace != "" && sourceNamespace != proxy.Namespace {
		return false
	}
	for k, v := range sourceLabels {
		if got, ok := proxy.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// matchAllRequests is the match of a rule without one, and of default routes: shared, like
// noTimeout, because nearly every virtual host has such a route and it is never modified.
var matchAllRequests = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}

// matchAll matches every request (the shared matchAllRequests: never modify it).
func matchAll() *routev3.RouteMatch { return matchAllRequests }

// translateRouteMatch builds the request-time part of a match. ok is false when the match can
// never be true on this proxy (a JWT claim condition). No match is matchAll, shared.
func translateRouteMatch(m *networking.HTTPMatchRequest) (*routev3.RouteMatch, bool) {
	if m == nil {
		return matchAll(), true
	}
	// The match and its path specifier are allocated together: nearly every match has a
	// prefix or path, and a sidecar has a route or two per service.
	parts := &struct {
		match  routev3.RouteMatch
		prefix routev3.RouteMatch_Prefix
		path   routev3.RouteMatch_Path
	}{}
	out := &parts.match
	switch u := m.Uri.GetMatchType().(type) {
	default:
		parts.prefix.Prefix = "/"
		out.PathSpecifier = &parts.prefix
	case *networking.StringMatch_Exact:
		parts.path.Path = u.Exact
		out.PathSpecifier = &parts.path
	case *networking.StringMatch_Prefix:
		parts.prefix.Prefix = u.Prefix
		out.PathSpecifier = &parts.prefix
	case *networking.StringMatch_Regex:
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: u.Regex}}
	}
	if m.IgnoreUriCase {
		out.CaseSensitive = falseValue()
	}
	// Istio matches method, authority and scheme as the HTTP/2 pseudo-headers.
	pseudo := []struct {
		name  string
		match *networking.StringMatch
	}{{":method", m.Method}, {":authority", m.Authority}, {":scheme", m.Scheme}}
	for _, p := range pseudo {
		if p.match != nil {
			out.Headers = append(out.Headers, headerMatcher(p.name, p.match))
		}
	}
	for _, name := range sortedKeys(m.Headers) {
		if strings.HasPrefix(name, jwtClaimHeaderPrefix) {
			return nil, false // a claim that cannot be present: the match is never true
		}
		out.Headers = append(out.Headers, headerMatcher(strings.ToLower(name), m.Headers[name]))
	}
	for _, name := range sortedKeys(m.WithoutHeaders) {
		if strings.HasPrefix(name, jwtClaimHeaderPrefix) {
			continue // the absent claim never matches, so its negation always holds
		}
		h := headerMatcher(strings.ToLower(name), m.WithoutHeaders[name])
		h.InvertMatch = true
		// As istiod: a missing header is compared as "", so `withoutHeaders: {x: {exact: a}}`
		// also matches requests without x. Envoy rejects this option with present_match.
		if _, present := h.HeaderMatchSpecifier.(*routev3.HeaderMatcher_PresentMatch); !present {
			h.TreatMissingHeaderAsEmpty = true
		}
		out.Headers = append(out.Headers, h)
	}
	for _, name := range sortedKeys(m.QueryParams) {
		q := &routev3.QueryParameterMatcher{Name: name}
		if sm := stringMatcher(m.QueryParams[name]); sm != nil {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}
		} else {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		}
		out.QueryParameters = append(out.QueryParameters, q)
	}
	return out, true
}

// headerMatcher matches a header by an Istio StringMatch; an empty StringMatch means "present".
func headerMatcher(name string, m *networking.StringMatch) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name}
	if sm := stringMatcher(m); sm != nil {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	} else {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	}
	return h
}

// stringMatcher converts an Istio StringMatch; nil means the match is empty ("present").
func stringMatcher(m *networking.StringMatch) *matcherv3.StringMatcher {
	switch v := m.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v.Exact}}
	case *networking.StringMatch_Prefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v.Prefix}}
	case *networking.StringMatch_Regex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v.Regex}}}
	}
	return nil
}

// isCatchAll reports whether a route matches every request: routes after it are unreachable,
// so istiod stops translating there, and so does Skiff.
func isCatchAll(m *routev3.RouteMatch) bool {
	if len(m.Headers) > 0 || len(m.QueryParameters) > 0 || len(m.DynamicMetadata) > 0 || m.RuntimeFraction != nil {
		return false
	}
	switch p := m.PathSpecifier.(type) {
	case *routev3.RouteMatch_Prefix:
		return p.Prefix == "/"
	case *routev3.RouteMatch_SafeRegex:
		return p.SafeRegex.GetRegex() == ".*"
	}
	return false
}
