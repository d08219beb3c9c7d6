package translate

import (
	"errors"
	"fmt"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	security "istio.io/api/security/v1beta1"
)

// One AuthorizationPolicy rule → one Envoy RBAC policy, as istiod's authz model builds it:
//
//   - every `from` entry is one principal and every `to` entry one permission; Envoy's policy
//     matches when any permission and any principal match, which is Istio's OR within each list;
//   - the fields of one source or operation, and every `when` condition, are ANDed into each
//     of them (conditions on the peer join the principals, conditions on the request or the
//     connection's destination join the permissions);
//   - within one field the values are ORed, and `not*` values become not_rule / not_id around
//     their own OR;
//   - a rule without `from` (or `to`) has one principal (permission) made only of its `when`
//     conditions, or `any` when there are none.
//
// Some fields cannot be enforced where the rule is used: HTTP attributes on a TCP port, and
// fields Skiff does not implement. As in istiod, what happens then depends on the action, so a
// policy never grants more than it says: an ALLOW rule is dropped entirely (it allows less),
// while a DENY or AUDIT rule loses only that field (it denies or logs more).

// errHTTPOnly marks a field that needs an HTTP request, used on a TCP port.
var errHTTPOnly = errors.New("needs an HTTP request")

// term is one field or condition of a rule: its values ORed, its not-values ORed and negated.
// A term builds its matcher from each value (one), or from the whole list at once (all) where
// istiod does so (JWT claims, Envoy metadata).
type term[T any] struct {
	key               string
	values, notValues []string
	httpOnly          bool
	one               func(v string) (T, error)
	all               func(vs []string) (T, error)
}

// ops are the RBAC combinators of permissions or principals.
type ops[T any] struct {
	any func() T
	and func([]T) T
	or  func([]T) T
	not func(T) T
}

var (
	permissionOps = ops[*rbacv3.Permission]{permissionAny, permissionAnd, permissionOr, permissionNot}
	principalOps  = ops[*rbacv3.Principal]{principalAny, principalAnd, principalOr, principalNot}
)

// ruleContext is where a rule is being turned into Envoy configuration.
type ruleContext struct {
	action          rbacv3.RBAC_Action
	forTCP          bool   // the network filter of a TCP port: no HTTP attributes
	policyNamespace string // resolves service accounts without a namespace
}

// skip decides what a field (key) that cannot be built does to its rule: it fails an ALLOW
// rule, and is left out of a DENY or AUDIT rule (nil error). The error is only wrapped when it
// is returned: a DENY rule with HTTP fields skips them on every TCP filter.
func (c ruleContext) skip(key string, err error) error {
	if c.action == rbacv3.RBAC_ALLOW {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// build turns the term into at most two matchers: OR(values) and NOT(OR(notValues)).
func (t term[T]) build(c ruleContext, o ops[T]) ([]T, error) {
	var out []T
	for i, list := range [][]string{t.values, t.notValues} {
		if len(list) == 0 {
			continue
		}
		m, ok, err := t.match(c, o, list)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if i == 1 {
			m = o.not(m)
		}
		out = append(out, m)
	}
	return out, nil
}

// match builds the matcher of one list of values; ok is false when nothing in it could be
// built and the context says to leave it out.
func (t term[T]) match(c ruleContext, o ops[T], list []string) (m T, ok bool, err error) {
	if t.httpOnly && c.forTCP {
		return m, false, c.skip(t.key, errHTTPOnly)
	}
	if t.all != nil {
		m, err := t.all(list)
		if err != nil {
			return m, false, c.skip(t.key, err)
		}
		return m, true, nil
	}
	var or []T
	for _, v := range list {
		one, err := t.one(v)
		if err != nil {
			if err := c.skip(t.key, err); err != nil {
				return m, false, err
			}
			continue // a DENY or AUDIT rule just loses this value, as in istiod
		}
		or = append(or, one)
	}
	if len(or) == 0 {
		return m, false, nil
	}
	return o.or(or), true, nil
}

// andTerms ANDs the terms of one principal or permission; none means any.
func andTerms[T any](c ruleContext, o ops[T], terms []term[T]) (T, error) {
	var and []T
	for _, t := range terms {
		ms, err := t.build(c, o)
		if err != nil {
			var zero T
			return zero, err
		}
		and = append(and, ms...)
	}
	if len(and) == 0 {
		and = append(and, o.any())
	}
	return o.and(and), nil
}

// rulePolicies builds the RBAC policy of one rule for the HTTP filter and for the network
// filter (c.forTCP is ignored); nil where the rule must be left out. The terms are built once,
// and the network filter's principals and permissions are the HTTP filter's, shared, unless
// some of their terms need an HTTP request: generated protos are never modified, and this
// halves the work for most rules.
func rulePolicies(c ruleContext, r *security.Rule) (forHTTP, forTCP *rbacv3.Policy) {
	basePermission, basePrincipal, err := conditionTerms(c, r.GetWhen())
	if err != nil {
		return nil, nil
	}
	// One principal per `from` (or one made of the conditions only), one permission per `to`.
	principals := make([][]term[*rbacv3.Principal], 0, max(1, len(r.GetFrom())))
	for _, from := range r.GetFrom() {
		principals = append(principals, append(sourceTerms(c, from.GetSource()), basePrincipal...))
	}
	if len(r.GetFrom()) == 0 {
		principals = append(principals, basePrincipal)
	}
	permissions := make([][]term[*rbacv3.Permission], 0, max(1, len(r.GetTo())))
	for _, to := range r.GetTo() {
		permissions = append(permissions, append(operationTerms(to.GetOperation()), basePermission...))
	}
	if len(r.GetTo()) == 0 {
		permissions = append(permissions, basePermission)
	}

	httpContext, tcpContext := c, c
	httpContext.forTCP, tcpContext.forTCP = false, true
	httpPrincipals, httpPrincipalsErr := andEach(httpContext, principalOps, principals)
	tcpPrincipals, tcpPrincipalsErr := httpPrincipals, httpPrincipalsErr
	principalsShared := !anyHTTPOnly(principals)
	if !principalsShared {
		tcpPrincipals, tcpPrincipalsErr = andEach(tcpContext, principalOps, principals)
	}
	httpPermissions, httpPermissionsErr := andEach(httpContext, permissionOps, permissions)
	tcpPermissions, tcpPermissionsErr := httpPermissions, httpPermissionsErr
	permissionsShared := !anyHTTPOnly(permissions)
	if !permissionsShared {
		tcpPermissions, tcpPermissionsErr = andEach(tcpContext, permissionOps, permissions)
	}

	if httpPrincipalsErr == nil && httpPermissionsErr == nil {
		forHTTP = &rbacv3.Policy{Permissions: httpPermissions, Principals: httpPrincipals}
	}
	switch {
	case tcpPrincipalsErr != nil || tcpPermissionsErr != nil:
	case principalsShared && permissionsShared:
		forTCP = forHTTP
	default:
		forTCP = &rbacv3.Policy{Permissions: tcpPermissions, Principals: tcpPrincipals}
	}
	return forHTTP, forTCP
}

// andEach builds one principal or permission per list of terms (andTerms).
func andEach[T any](c ruleContext, o ops[T], lists [][]term[T]) ([]T, error) {
	out := make([]T, 0, len(lists))
	for _, terms := range lists {
		m, err := andTerms(c, o, terms)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// anyHTTPOnly reports whether a term needs an HTTP request, so that it builds differently for
// the network filter.
func anyHTTPOnly[T any](lists [][]term[T]) bool {
	for _, terms := range lists {
		for _, t := range terms {
			if t.httpOnly {
				return true
			}
		}
	}
	return false
}

// matchNeverPolicy is what a policy without rules compiles to: it matches no request, so an
// ALLOW policy without rules allows nothing (and a DENY one denies nothing).
func matchNeverPolicy() *rbacv3.Policy {
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{permissionNot(permissionAny())},
		Principals:  []*rbacv3.Principal{principalNot(principalAny())},
	}
}

// sourceTerms are the principal terms of one `from.source`, in istiod's order.
func sourceTerms(c ruleContext, s *security.Source) []term[*rbacv3.Principal] {
	if s == nil {
		return nil
	}
	return nonEmpty([]term[*rbacv3.Principal]{
		{key: "principals", values: s.GetPrincipals(), notValues: s.GetNotPrincipals(), one: peerPrincipal},
		{key: "requestPrincipals", values: s.GetRequestPrincipals(), notValues: s.GetNotRequestPrincipals(), httpOnly: true, all: requestPrincipals},
		{key: "serviceAccounts", values: s.GetServiceAccounts(), notValues: s.GetNotServiceAccounts(), one: c.peerServiceAccount},
		{key: "namespaces", values: s.GetNamespaces(), notValues: s.GetNotNamespaces(), one: peerNamespace},
		{key: "remoteIpBlocks", values: s.GetRemoteIpBlocks(), notValues: s.GetNotRemoteIpBlocks(), one: remoteIP},
		{key: "ipBlocks", values: s.GetIpBlocks(), notValues: s.GetNotIpBlocks(), one: directRemoteIP},
		// istiod has no mapping for trust domains (an extended-channel field); failing it keeps
		// an ALLOW rule from allowing every trust domain, and widens a DENY rule instead.
		{key: "trustDomains", values: s.GetTrustDomains(), notValues: s.GetNotTrustDomains(), one: unsupported[*rbacv3.Principal]},
	})
}

// operationTerms are the permission terms of one `to.operation`, in istiod's order.
func operationTerms(o *security.Operation) []term[*rbacv3.Permission] {
	if o == nil {
		return nil
	}
	return nonEmpty([]term[*rbacv3.Permission]{
		// The authority as the client sent it: with a port if it had one, so `example.com`
		// does not match `example.com:8080` (Istio's advice is to list `example.com:*` too).
		{key: "hosts", values: o.GetHosts(), notValues: o.GetNotHosts(), httpOnly: true, one: func(v string) (*rbacv3.Permission, error) {
			return headerPermission(headerMatch(":authority", v, true)), nil
		}},
		{key: "methods", values: o.GetMethods(), notValues: o.GetNotMethods(), httpOnly: true, one: func(v string) (*rbacv3.Permission, error) {
			return headerPermission(headerMatch(":method", v, false)), nil
		}},
		{key: "paths", values: o.GetPaths(), notValues: o.GetNotPaths(), httpOnly: true, one: func(v string) (*rbacv3.Permission, error) {
			return pathPermission(v), nil
		}},
		{key: "ports", values: o.GetPorts(), notValues: o.GetNotPorts(), one: destinationPort},
	})
}

// conditionTerms sorts `when` conditions into permission terms (the request and its
// destination) and principal terms (the peer and request identity, request headers).
func conditionTerms(c ruleContext, when []*security.Condition) (perms []term[*rbacv3.Permission], princs []term[*rbacv3.Principal], err error) {
	for _, cond := range when {
		k, vs, nvs := cond.GetKey(), cond.GetValues(), cond.GetNotValues()
		perm := func(one func(string) (*rbacv3.Permission, error)) {
			perms = append(perms, term[*rbacv3.Permission]{key: k, values: vs, notValues: nvs, one: one})
		}
		princ := func(t term[*rbacv3.Principal]) {
			t.key, t.values, t.notValues = k, vs, nvs
			princs = append(princs, t)
		}
		switch {
		case k == "destination.ip":
			perm(func(v string) (*rbacv3.Permission, error) {
				cidr, err := cidrRange(v)
				return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr}}, err
			})
		case k == "destination.port":
			perm(destinationPort)
		case k == "connection.sni":
			perm(func(v string) (*rbacv3.Permission, error) {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: stringMatch(v)}}, nil
			})
		case strings.HasPrefix(k, "experimental.envoy.filters."):
			perms = append(perms, term[*rbacv3.Permission]{key: k, values: vs, notValues: nvs, all: func(values []string) (*rbacv3.Permission, error) {
				return envoyMetadata(k, values)
			}})
		case k == "source.ip":
			princ(term[*rbacv3.Principal]{one: directRemoteIP})
		case k == "remote.ip":
			princ(term[*rbacv3.Principal]{one: remoteIP})
		case k == "source.namespace":
			princ(term[*rbacv3.Principal]{one: peerNamespace})
		case k == "source.serviceAccount":
			princ(term[*rbacv3.Principal]{one: c.peerServiceAccount})
		case k == "source.principal":
			princ(term[*rbacv3.Principal]{one: peerPrincipal})
		case k == "request.auth.principal":
			princ(term[*rbacv3.Principal]{httpOnly: true, all: requestPrincipals})
		case k == "request.auth.audiences":
			princ(term[*rbacv3.Principal]{httpOnly: true, all: func(vs []string) (*rbacv3.Principal, error) {
				return jwtClaimList([]string{"aud"}, vs), nil
			}})
		case k == "request.auth.presenter":
			princ(term[*rbacv3.Principal]{httpOnly: true, all: func(vs []string) (*rbacv3.Principal, error) {
				return jwtClaimList([]string{"azp"}, vs), nil
			}})
		case strings.HasPrefix(k, "request.auth.claims["):
			claims, cerr := bracketedNames(strings.TrimPrefix(k, "request.auth.claims"))
			princ(term[*rbacv3.Principal]{httpOnly: true, all: func(vs []string) (*rbacv3.Principal, error) {
				return jwtClaimList(claims, vs), cerr
			}})
		case strings.HasPrefix(k, "request.headers["):
			name, herr := bracketedName(strings.TrimPrefix(k, "request.headers"))
			princ(term[*rbacv3.Principal]{httpOnly: true, one: func(v string) (*rbacv3.Principal, error) {
				return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: headerMatch(name, v, false)}}, herr
			}})
		default:
			// Validation rejects unknown keys; istiod drops the whole rule whatever its action.
			return nil, nil, fmt.Errorf("unknown condition key %q", k)
		}
	}
	return nonEmpty(perms), nonEmpty(princs), nil
}

// nonEmpty drops terms without values: an empty field does not restrict anything.
func nonEmpty[T any](terms []term[T]) []term[T] {
	out := terms[:0:0]
	for _, t := range terms {
		if len(t.values) > 0 || len(t.notValues) > 0 {
			out = append(out, t)
		}
	}
	return out
}

func unsupported[T any](string) (T, error) {
	var zero T
	return zero, errors.New("not supported by Skiff")
}

// peerPrincipal matches the peer's SPIFFE ID, written without `spiffe://` in the policy.
func peerPrincipal(v string) (*rbacv3.Principal, error) {
	return authenticatedPrincipal(stringMatchWithPrefix(v, spiffePrefix)), nil
}

func peerNamespace(v string) (*rbacv3.Principal, error) {
	return authenticatedPrincipal(regexMatch(namespaceRegex(v))), nil
}

func (c ruleContext) peerServiceAccount(v string) (*rbacv3.Principal, error) {
	return authenticatedPrincipal(regexMatch(serviceAccountRegex(c.policyNamespace, v))), nil
}

// directRemoteIP is the address of the connection's peer (source.ip, ipBlocks).
func directRemoteIP(v string) (*rbacv3.Principal, error) {
	cidr, err := cidrRange(v)
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr}}, err
}

// remoteIP is the original client's address, from X-Forwarded-For or the PROXY protocol
// (remote.ip, remoteIpBlocks); without either it is the peer's address.
func remoteIP(v string) (*rbacv3.Principal, error) {
	cidr, err := cidrRange(v)
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr}}, err
}

func destinationPort(v string) (*rbacv3.Permission, error) {
	port, err := parsePort(v)
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: port}}, err
}

// requestPrincipals matches `ISS/SUB` request identities (requestPrincipals,
// request.auth.principal) against the JWT's iss and sub claims, splitting at the last `/`
// because issuers are often URLs, as istiod does.
func requestPrincipals(values []string) (*rbacv3.Principal, error) {
	anyValue := func() *matcherv3.StringMatcher { return regexMatch(".+") }
	exact := func(v string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
	}
	var or []*rbacv3.Principal
	for _, v := range values {
		idx := strings.LastIndex(v, "/")
		iss, sub, found := v, "", idx >= 0
		if found {
			iss, sub = v[:idx], v[idx+1:]
		}
		// One wildcard, leading or trailing, applies to the issuer or the subject it touches.
		var matchIss, matchSub *matcherv3.StringMatcher
		switch {
		case v == "*":
			matchIss, matchSub = anyValue(), anyValue()
		case strings.HasPrefix(v, "*") && found:
			matchIss, matchSub = stringMatch(iss), exact(sub) // `*` alone is any, `*x` a suffix
		case strings.HasPrefix(v, "*"):
			matchIss, matchSub = anyValue(), stringMatch(v)
		case strings.HasSuffix(v, "*") && found:
			matchIss, matchSub = exact(iss), stringMatch(sub)
		case strings.HasSuffix(v, "*"):
			matchIss, matchSub = stringMatch(v), anyValue()
		default:
			matchIss, matchSub = exact(iss), exact(sub)
		}
		or = append(or, principalAnd([]*rbacv3.Principal{jwtClaimString("iss", matchIss), jwtClaimString("sub", matchSub)}))
	}
	if len(or) == 1 {
		return or[0], nil
	}
	return principalOr(or), nil
}

// envoyMetadata matches experimental.envoy.filters.FILTER[KEY] against dynamic metadata the
// named filter wrote; a value `[v]` matches v in a list.
func envoyMetadata(key string, values []string) (*rbacv3.Permission, error) {
	filter, field, ok := strings.Cut(strings.TrimPrefix(key, "experimental."), "[")
	if !ok || !strings.HasSuffix(field, "]") || len(field) < 2 {
		return nil, fmt.Errorf("want experimental.envoy.filters.NAME[KEY], got %q", key)
	}
	ms := make([]*matcherv3.ValueMatcher, 0, len(values))
	for _, v := range values {
		if inner, isList := strings.CutPrefix(v, "["); isList && strings.HasSuffix(inner, "]") {
			ms = append(ms, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
				MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: &matcherv3.ValueMatcher{
					MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: stringMatch(strings.TrimSuffix(inner, "]"))},
				}},
			}}})
			continue
		}
		ms = append(ms, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: stringMatch(v)}})
	}
	value := ms[0]
	if len(ms) > 1 {
		value = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: ms}}}
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: filter,
		Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: strings.TrimSuffix(field, "]")}}},
		Value:  value,
	}}}, nil
}

// bracketedName reads `[NAME]`.
func bracketedName(s string) (string, error) {
	name, ok := strings.CutPrefix(s, "[")
	if !ok || !strings.HasSuffix(name, "]") || len(name) < 2 {
		return "", fmt.Errorf("want [NAME], got %q", s)
	}
	return strings.TrimSuffix(name, "]"), nil
}

// bracketedNames reads `[A][B]...` (a nested JWT claim), or one `[NAME]` whose name may itself
// hold brackets.
func bracketedNames(s string) ([]string, error) {
	var names []string
	for rest := s; rest != ""; {
		end := strings.IndexByte(rest, ']')
		if !strings.HasPrefix(rest, "[") || end < 2 || strings.Contains(rest[1:end], "[") {
			name, err := bracketedName(s)
			return []string{name}, err
		}
		names = append(names, rest[1:end])
		rest = rest[end+1:]
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("want [NAME], got %q", s)
	}
	return names, nil
}
