package translate

import (
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// routeMatch translates one HTTPMatchRequest. ok is false when the match cannot apply to this
// proxy and port (another port, another source namespace, a gateway-only match), or uses a
// condition this proxy class cannot evaluate (sourceLabels): such a match must not widen into
// "everything", so its route is left out.
func routeMatch(m *networking.HTTPMatchRequest, proxy *model.Proxy, port uint32) (*routev3.RouteMatch, bool) {
	out := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return out, true
	}
	if m.Port != 0 && m.Port != port {
		return nil, false
	}
	if m.SourceNamespace != "" && m.SourceNamespace != proxy.Namespace {
		return nil, false
	}
	if len(m.Gateways) > 0 && !slices.Contains(m.Gateways, model.MeshGateway) {
		return nil, false
	}
	if len(m.SourceLabels) > 0 {
		return nil, false
	}
	switch u := m.Uri.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Exact}
	case *networking.StringMatch_Prefix:
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Prefix}
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
			out.Headers = append(out.Headers, headerMatcher(p.name, p.match, false))
		}
	}
	for _, name := range sortedKeys(m.Headers) {
		out.Headers = append(out.Headers, headerMatcher(strings.ToLower(name), m.Headers[name], false))
	}
	for _, name := range sortedKeys(m.WithoutHeaders) {
		out.Headers = append(out.Headers, headerMatcher(strings.ToLower(name), m.WithoutHeaders[name], true))
	}
	for _, name := range sortedKeys(m.QueryParams) {
		out.QueryParameters = append(out.QueryParameters, &routev3.QueryParameterMatcher{
			Name:                         name,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: stringMatcher(m.QueryParams[name])},
		})
	}
	return out, true
}

// headerMatcher matches a header by an Istio StringMatch; an empty StringMatch means "present".
func headerMatcher(name string, m *networking.StringMatch, invert bool) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name, InvertMatch: invert}
	if m.GetMatchType() == nil {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	} else {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(m)}
	}
	return h
}

func stringMatcher(m *networking.StringMatch) *matcherv3.StringMatcher {
	switch v := m.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v.Exact}}
	case *networking.StringMatch_Prefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v.Prefix}}
	case *networking.StringMatch_Regex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v.Regex}}}
	}
	// An empty match on a query parameter means "present": any value.
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}
}
