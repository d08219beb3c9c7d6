package translate

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// The Envoy matchers one AuthorizationPolicy value turns into, following istiod's
// pilot/pkg/security/authz/matcher package, so a config dump reads like Istio's. Values use
// Istio's one wildcard: `*` alone (present / any non-empty value), `*suffix` or `prefix*`.

// spiffePrefix starts every workload identity. Policies name principals without it
// ("cluster.local/ns/default/sa/reviews"); the peer certificate's URI SAN carries it.
const spiffePrefix = "spiffe://"

// The JWT filter and the metadata key its payload would be stored under, where istiod reads
// request.auth.* from. Skiff has no RequestAuthentication yet, so nothing writes it: see
// authz_rules.go.
const (
	jwtFilterName  = "envoy.filters.http.jwt_authn"
	jwtPayloadName = "payload"
)

// stringMatch is Istio's string matcher for a value: `*` any non-empty string, `*x` suffix,
// `x*` prefix, anything else exact.
func stringMatch(v string) *matcherv3.StringMatcher {
	return stringMatchIgnoreCase(v, false)
}

func stringMatchIgnoreCase(v string, ignoreCase bool) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		// Envoy rejects an empty prefix or suffix, so "anything" is a regex.
		return regexMatch(".+")
	case strings.HasPrefix(v, "*"):
		return &matcherv3.StringMatcher{IgnoreCase: ignoreCase, MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}}
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{IgnoreCase: ignoreCase, MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v[:len(v)-1]}}
	default:
		// The common case (a method, a host), allocated at once like the combinators below.
		m := &struct {
			m matcherv3.StringMatcher
			w matcherv3.StringMatcher_Exact
		}{w: matcherv3.StringMatcher_Exact{Exact: v}}
		m.m.IgnoreCase, m.m.MatchPattern = ignoreCase, &m.w
		return &m.m
	}
}

// stringMatchWithPrefix matches prefix+v with v's wildcard rules; `*` alone ignores the prefix,
// as istiod does. A suffix match under a prefix needs a regex; unlike istiod the literal parts
// are quoted, so a `.` in a principal matches only a dot and no value can make an invalid
// regex (which Envoy would NACK).
func stringMatchWithPrefix(v, prefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return regexMatch(".+")
	case strings.HasPrefix(v, "*"):
		return regexMatch(regexp.QuoteMeta(prefix) + ".*" + regexp.QuoteMeta(v[1:]))
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix + v[:len(v)-1]}}
	default:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: prefix + v}}
	}
}

// regexMatch is a full-string RE2 match (Envoy's default engine). Its messages are allocated
// at once, like the combinators below: namespaces and service accounts are regexes.
func regexMatch(re string) *matcherv3.StringMatcher {
	m := &struct {
		m matcherv3.StringMatcher
		w matcherv3.StringMatcher_SafeRegex
		r matcherv3.RegexMatcher
	}{r: matcherv3.RegexMatcher{Regex: re}}
	m.w.SafeRegex, m.m.MatchPattern = &m.r, &m.w
	return &m.m
}

// globRegex turns a value whose only wildcard is `*` (any run of characters) into a regex,
// quoting everything else.
func globRegex(v string) string {
	if !strings.Contains(v, "*") {
		return regexp.QuoteMeta(v) // v itself when it has nothing to quote, as names rarely do
	}
	parts := strings.Split(v, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return strings.Join(parts, ".*")
}

// headerMatch matches one request header: `*` means present.
func headerMatch(name, v string, ignoreCase bool) *routev3.HeaderMatcher {
	if v == "*" {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	h := &struct {
		m routev3.HeaderMatcher
		w routev3.HeaderMatcher_StringMatch
	}{w: routev3.HeaderMatcher_StringMatch{StringMatch: stringMatchIgnoreCase(v, ignoreCase)}}
	h.m.Name, h.m.HeaderMatchSpecifier = name, &h.w
	return &h.m
}

// pathPermission matches the request path without its query (url_path), after the
// connection manager's normalisation. A path with Istio's `{*}` or `{**}` operators is an
// Envoy URI template, as in istiod.
func pathPermission(v string) *rbacv3.Permission {
	if strings.Contains(v, "{*}") || strings.Contains(v, "{**}") {
		template := strings.ReplaceAll(strings.ReplaceAll(v, "{**}", "**"), "{*}", "*")
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{
			Name:        "envoy.path.match.uri_template.uri_template_matcher",
			TypedConfig: MustAny(&uritemplatev3.UriTemplateMatchConfig{PathTemplate: template}),
		}}}
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: stringMatch(v)},
	}}}
}

// cidrRange parses a single IP (a /32 or /128) or a CIDR. The address is kept as written, as
// istiod does; Envoy masks it to the prefix length itself.
func cidrRange(v string) (*corev3.CidrRange, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR %q: %w", v, err)
		}
		return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: uint32Value(uint32(p.Bits()))}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return nil, fmt.Errorf("invalid IP %q: %w", v, err)
	}
	return &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: uint32Value(uint32(a.BitLen()))}, nil
}

// parsePort reads a port written as a string, as authorization rules write them.
func parsePort(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q: %w", v, err)
	}
	return uint32(n), nil
}

// authenticatedPrincipal matches the identity of the peer certificate: its URI SAN (the
// SPIFFE ID), else its subject. A plaintext connection has none, so it never matches.
func authenticatedPrincipal(m *matcherv3.StringMatcher) *rbacv3.Principal {
	p := &struct {
		m rbacv3.Principal
		w rbacv3.Principal_Authenticated_
		a rbacv3.Principal_Authenticated
	}{a: rbacv3.Principal_Authenticated{PrincipalName: m}}
	p.w.Authenticated, p.m.Identifier = &p.a, &p.w
	return &p.m
}

// namespaceRegex matches SPIFFE IDs of a namespace (`*` allowed anywhere in the name).
func namespaceRegex(ns string) string {
	return ".*/ns/" + globRegex(ns) + "/.*"
}

// serviceAccountRegex matches SPIFFE IDs of `NAMESPACE/SA`, or of `SA` in the policy's
// namespace: spiffe://TRUST_DOMAIN/ns/NS/[...]/sa/SA[/...], as istiod builds it.
func serviceAccountRegex(policyNamespace, v string) string {
	ns, sa, ok := strings.Cut(v, "/")
	if !ok {
		ns, sa = policyNamespace, v
	}
	return "spiffe://.+/ns/" + regexp.QuoteMeta(ns) + "/(.+/|)sa/" + regexp.QuoteMeta(sa) + "(/.+)?"
}

// jwtClaimPath is the metadata path of a JWT claim: the payload, then the (nested) claim names.
func jwtClaimPath(claims ...string) []*matcherv3.MetadataMatcher_PathSegment {
	keys := append([]string{jwtPayloadName}, claims...)
	out := make([]*matcherv3.MetadataMatcher_PathSegment, 0, len(keys))
	for _, k := range keys {
		out = append(out, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return out
}

// jwtClaimString matches a string claim.
func jwtClaimString(claim string, m *matcherv3.StringMatcher) *rbacv3.Principal {
	return metadataPrincipal(&matcherv3.MetadataMatcher{
		Filter: jwtFilterName,
		Path:   jwtClaimPath(claim),
		Value:  &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}},
	})
}

// jwtClaimList matches a claim that may be a string or a list of strings (aud, groups...):
// one of the values, in the list or as the whole claim.
func jwtClaimList(claims []string, values []string) *rbacv3.Principal {
	v := valuesMatch(values)
	return metadataPrincipal(&matcherv3.MetadataMatcher{
		Filter: jwtFilterName,
		Path:   jwtClaimPath(claims...),
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{
			ValueMatchers: []*matcherv3.ValueMatcher{
				{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
					MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: v},
				}}},
				v,
			},
		}}},
	})
}

// valuesMatch matches any of the values (with Istio's wildcards).
func valuesMatch(values []string) *matcherv3.ValueMatcher {
	ms := make([]*matcherv3.ValueMatcher, 0, len(values))
	for _, v := range values {
		ms = append(ms, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: stringMatch(v)}})
	}
	if len(ms) == 1 {
		return ms[0]
	}
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: ms}}}
}

func metadataPrincipal(m *matcherv3.MetadataMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: m}}
}

// The RBAC combinators, for permissions and principals alike. Each allocates its message, the
// oneof wrapper and the set in one go: a policy is mostly these, and a workload may have
// hundreds of policies, compiled for two filters each push.

func permissionAny() *rbacv3.Permission {
	p := &struct {
		m rbacv3.Permission
		w rbacv3.Permission_Any
	}{w: rbacv3.Permission_Any{Any: true}}
	p.m.Rule = &p.w
	return &p.m
}

func permissionAnd(ps []*rbacv3.Permission) *rbacv3.Permission {
	p := &struct {
		m rbacv3.Permission
		w rbacv3.Permission_AndRules
		s rbacv3.Permission_Set
	}{s: rbacv3.Permission_Set{Rules: ps}}
	p.w.AndRules, p.m.Rule = &p.s, &p.w
	return &p.m
}

func permissionOr(ps []*rbacv3.Permission) *rbacv3.Permission {
	p := &struct {
		m rbacv3.Permission
		w rbacv3.Permission_OrRules
		s rbacv3.Permission_Set
	}{s: rbacv3.Permission_Set{Rules: ps}}
	p.w.OrRules, p.m.Rule = &p.s, &p.w
	return &p.m
}

func permissionNot(not *rbacv3.Permission) *rbacv3.Permission {
	p := &struct {
		m rbacv3.Permission
		w rbacv3.Permission_NotRule
	}{w: rbacv3.Permission_NotRule{NotRule: not}}
	p.m.Rule = &p.w
	return &p.m
}

func headerPermission(h *routev3.HeaderMatcher) *rbacv3.Permission {
	p := &struct {
		m rbacv3.Permission
		w rbacv3.Permission_Header
	}{w: rbacv3.Permission_Header{Header: h}}
	p.m.Rule = &p.w
	return &p.m
}

func principalAny() *rbacv3.Principal {
	p := &struct {
		m rbacv3.Principal
		w rbacv3.Principal_Any
	}{w: rbacv3.Principal_Any{Any: true}}
	p.m.Identifier = &p.w
	return &p.m
}

func principalAnd(ps []*rbacv3.Principal) *rbacv3.Principal {
	p := &struct {
		m rbacv3.Principal
		w rbacv3.Principal_AndIds
		s rbacv3.Principal_Set
	}{s: rbacv3.Principal_Set{Ids: ps}}
	p.w.AndIds, p.m.Identifier = &p.s, &p.w
	return &p.m
}

func principalOr(ps []*rbacv3.Principal) *rbacv3.Principal {
	p := &struct {
		m rbacv3.Principal
		w rbacv3.Principal_OrIds
		s rbacv3.Principal_Set
	}{s: rbacv3.Principal_Set{Ids: ps}}
	p.w.OrIds, p.m.Identifier = &p.s, &p.w
	return &p.m
}

func principalNot(not *rbacv3.Principal) *rbacv3.Principal {
	p := &struct {
		m rbacv3.Principal
		w rbacv3.Principal_NotId
	}{w: rbacv3.Principal_NotId{NotId: not}}
	p.m.Identifier = &p.w
	return &p.m
}
