package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/util/validation"
)

// meshGateway is the reserved gateway name for the sidecars.
const meshGateway = "mesh"

func validateVirtualService(v *validator, vs *networking.VirtualService) {
	gateways := vs.GetGateways()
	// No gateways means the mesh; naming gateways without "mesh" leaves the sidecars out.
	meshBound := len(gateways) == 0 || slices.Contains(gateways, meshGateway)
	if len(vs.GetHosts()) == 0 {
		v.add("spec.hosts", "at least one host is required")
	}
	for i, h := range vs.GetHosts() {
		f := idx("spec.hosts", i)
		if h == "*" {
			if meshBound {
				v.add(f, `"*" is only allowed for VirtualServices bound to gateways, not the mesh`)
			}
			continue
		}
		if _, err := netip.ParseAddr(h); err == nil {
			continue // IP hosts are allowed, for traffic that gateways receive by IP
		}
		v.addErr(f, checkWildcardHost(h))
	}
	for i, g := range gateways {
		v.addErr(idx("spec.gateways", i), checkGatewayName(g))
	}
	if len(vs.GetHttp())+len(vs.GetTls())+len(vs.GetTcp()) == 0 {
		v.add("spec", "at least one of http, tls or tcp routes is required")
	}
	for i, r := range vs.GetHttp() {
		validateHTTPRoute(v, idx("spec.http", i), r)
	}
	for i, r := range vs.GetTls() {
		f := idx("spec.tls", i)
		if r == nil {
			v.add(f, "must not be null")
			continue
		}
		if len(r.GetMatch()) == 0 {
			v.add(f+".match", "at least one match is required")
		}
		for j, m := range r.GetMatch() {
			mf := idx(f+".match", j)
			if len(m.GetSniHosts()) == 0 {
				v.add(mf+".sniHosts", "at least one SNI host is required")
			}
			for k, h := range m.GetSniHosts() {
				v.addErr(idx(mf+".sniHosts", k), checkWildcardHost(h))
			}
			for k, s := range m.GetDestinationSubnets() {
				v.addErr(idx(mf+".destinationSubnets", k), checkIPOrCIDR(s))
			}
			if m.GetPort() != 0 {
				v.addErr(mf+".port", checkPort(m.GetPort()))
			}
			validateLabels(v, mf+".sourceLabels", m.GetSourceLabels())
		}
		validateRouteDestinations(v, f+".route", r.GetRoute())
	}
	for i, r := range vs.GetTcp() {
		f := idx("spec.tcp", i)
		if r == nil {
			v.add(f, "must not be null")
			continue
		}
		for j, m := range r.GetMatch() {
			mf := idx(f+".match", j)
			for k, s := range m.GetDestinationSubnets() {
				v.addErr(idx(mf+".destinationSubnets", k), checkIPOrCIDR(s))
			}
			if m.GetPort() != 0 {
				v.addErr(mf+".port", checkPort(m.GetPort()))
			}
			if s := m.GetSourceSubnet(); s != "" {
				v.addErr(mf+".sourceSubnet", checkIPOrCIDR(s))
			}
			validateLabels(v, mf+".sourceLabels", m.GetSourceLabels())
		}
		validateRouteDestinations(v, f+".route", r.GetRoute())
	}
	validateExportTo(v, "spec.exportTo", vs.GetExportTo())
}

// checkGatewayName checks a gateway reference: "mesh", NAME or NAMESPACE/NAME.
func checkGatewayName(g string) error {
	if g == meshGateway {
		return nil
	}
	ns, name, namespaced := strings.Cut(g, "/")
	if !namespaced {
		name = g
	} else if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		return fmt.Errorf("invalid gateway %q: bad namespace %q", g, ns)
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("invalid gateway %q: must be \"mesh\", NAME or NAMESPACE/NAME", g)
	}
	return nil
}

// validateRouteDestinations checks the destinations of a TLS or TCP route.
func validateRouteDestinations(v *validator, path string, route []*networking.RouteDestination) {
	if len(route) == 0 {
		v.add(path, "at least one destination is required")
	}
	for i, rd := range route {
		f := idx(path, i)
		if rd == nil {
			v.add(f, "must not be null")
			continue
		}
		validateDestination(v, f+".destination", rd.GetDestination())
		nonNegative(v, f+".weight", rd.GetWeight())
	}
}

func validateHTTPRoute(v *validator, path string, r *networking.HTTPRoute) {
	if r == nil {
		v.add(path, "must not be null")
		return
	}
	var actions []string
	if len(r.GetRoute()) > 0 {
		actions = append(actions, "route")
	}
	if r.GetRedirect() != nil {
		actions = append(actions, "redirect")
	}
	if r.GetDirectResponse() != nil {
		actions = append(actions, "directResponse")
	}
	if r.GetDelegate() != nil {
		actions = append(actions, "delegate")
	}
	switch len(actions) {
	case 0:
		v.add(path, "one of route, redirect, directResponse or delegate is required")
	case 1:
	default:
		v.add(path, "only one of route, redirect, directResponse or delegate may be set, found %s", strings.Join(actions, " and "))
	}
	if r.GetRewrite() != nil && (r.GetRedirect() != nil || r.GetDirectResponse() != nil) {
		v.add(path+".rewrite", "cannot be used with redirect or directResponse: nothing is forwarded")
	}

	for i, m := range r.GetMatch() {
		validateHTTPMatch(v, idx(path+".match", i), m)
	}
	for i, rd := range r.GetRoute() {
		f := idx(path+".route", i)
		if rd == nil {
			v.add(f, "must not be null")
			continue
		}
		validateDestination(v, f+".destination", rd.GetDestination())
		nonNegative(v, f+".weight", rd.GetWeight())
	}
	if rd := r.GetRedirect(); rd != nil {
		f := path + ".redirect"
		switch c := rd.GetRedirectCode(); c {
		case 0, 301, 302, 303, 307, 308:
		default:
			v.add(f+".redirectCode", "%d is not a redirect code (301, 302, 303, 307 or 308)", c)
		}
		if _, ok := rd.GetRedirectPort().(*networking.HTTPRedirect_Port); ok {
			v.addErr(f+".port", checkPort(rd.GetPort()))
		}
	}
	if dr := r.GetDirectResponse(); dr != nil {
		if s := dr.GetStatus(); s < 200 || s > 599 {
			v.add(path+".directResponse.status", "must be between 200 and 599")
		}
	}
	if d := r.GetDelegate(); d != nil {
		if d.GetName() == "" {
			v.add(path+".delegate.name", "required")
		}
		if ns := d.GetNamespace(); ns != "" && len(validation.IsDNS1123Label(ns)) > 0 {
			v.add(path+".delegate.namespace", "invalid namespace %q", ns)
		}
	}
	if rw := r.GetRewrite(); rw != nil {
		f := path + ".rewrite"
		if rw.GetUri() != "" && rw.GetUriRegexRewrite() != nil {
			v.add(f, "uri and uriRegexRewrite cannot both be set")
		}
		if rr := rw.GetUriRegexRewrite(); rr != nil {
			if rr.GetMatch() == "" {
				v.add(f+".uriRegexRewrite.match", "required")
			} else {
				v.addErr(f+".uriRegexRewrite.match", checkRegex(rr.GetMatch()))
			}
		}
	}
	validateRetries(v, path+".retries", r.GetRetries())
	validateFault(v, path+".fault", r.GetFault())
	if r.GetMirror() != nil {
		if len(r.GetMirrors()) > 0 {
			v.add(path+".mirror", "mirror and mirrors cannot both be set")
		}
		validateDestination(v, path+".mirror", r.GetMirror())
	}
	for i, m := range r.GetMirrors() {
		f := idx(path+".mirrors", i)
		validateDestination(v, f+".destination", m.GetDestination())
		if p := m.GetPercentage(); p != nil {
			percent(v, f+".percentage.value", p.GetValue())
		}
	}
	if p := r.GetMirrorPercentage(); p != nil {
		percent(v, path+".mirrorPercentage.value", p.GetValue())
	}
	if p := r.GetMirrorPercent(); p != nil && p.GetValue() > 100 {
		v.add(path+".mirrorPercent", "must be between 0 and 100")
	}
	if c := r.GetCorsPolicy(); c != nil {
		for i, o := range c.GetAllowOrigins() {
			validateStringMatch(v, idx(path+".corsPolicy.allowOrigins", i), o, true)
		}
	}
}

func validateHTTPMatch(v *validator, path string, m *networking.HTTPMatchRequest) {
	if m == nil {
		v.add(path, "must not be null")
		return
	}
	// For these, an empty match would match nothing useful; for headers and query parameters
	// an empty match means "present", which is legal.
	if m.GetUri() != nil {
		validateStringMatch(v, path+".uri", m.GetUri(), true)
	}
	if m.GetScheme() != nil {
		validateStringMatch(v, path+".scheme", m.GetScheme(), true)
	}
	if m.GetMethod() != nil {
		validateStringMatch(v, path+".method", m.GetMethod(), true)
	}
	if m.GetAuthority() != nil {
		validateStringMatch(v, path+".authority", m.GetAuthority(), true)
	}
	for _, group := range []struct {
		name string
		m    map[string]*networking.StringMatch
	}{{"headers", m.GetHeaders()}, {"queryParams", m.GetQueryParams()}, {"withoutHeaders", m.GetWithoutHeaders()}} {
		for _, k := range sortedKeys(group.m) {
			f := key(path+"."+group.name, k)
			if k == "" {
				v.add(f, "name must not be empty")
			}
			validateStringMatch(v, f, group.m[k], false)
		}
	}
	if m.GetPort() != 0 {
		v.addErr(path+".port", checkPort(m.GetPort()))
	}
	validateLabels(v, path+".sourceLabels", m.GetSourceLabels())
	for i, g := range m.GetGateways() {
		v.addErr(idx(path+".gateways", i), checkGatewayName(g))
	}
}

// validateStringMatch checks that a match has one of exact, prefix or regex (when required)
// and that a regex compiles.
func validateStringMatch(v *validator, path string, m *networking.StringMatch, required bool) {
	switch t := m.GetMatchType().(type) {
	case nil:
		if required {
			v.add(path, "exactly one of exact, prefix or regex is required")
		}
	case *networking.StringMatch_Regex:
		v.addErr(path+".regex", checkRegex(t.Regex))
	}
}

// validateDestination checks a destination: a concrete host, optional subset and port.
func validateDestination(v *validator, path string, d *networking.Destination) {
	if d == nil {
		v.add(path, "required")
		return
	}
	switch h := d.GetHost(); {
	case h == "":
		v.add(path+".host", "required")
	case strings.Contains(h, "*"):
		v.add(path+".host", "%q: a destination must be a concrete host, not a wildcard", h)
	default:
		v.addErr(path+".host", checkHostname(h))
	}
	if s := d.GetSubset(); s != "" && (len(s) > 63 || !dnsLabel.MatchString(s)) {
		v.add(path+".subset", "invalid subset name %q: must be a DNS label", s)
	}
	if p := d.GetPort(); p != nil {
		v.addErr(path+".port.number", checkPort(p.GetNumber()))
	}
}

// retryOnPolicies are the retry conditions Envoy understands for HTTP and gRPC; Istio also
// accepts HTTP status codes.
var retryOnPolicies = []string{
	"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
	"retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
	"http3-post-connect-failure",
	"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
}

func validateRetries(v *validator, path string, r *networking.HTTPRetry) {
	if r == nil {
		return
	}
	nonNegative(v, path+".attempts", r.GetAttempts())
	positive(v, path+".perTryTimeout", r.GetPerTryTimeout())
	positive(v, path+".backoff", r.GetBackoff())
	if r.GetRetryOn() == "" {
		return
	}
	for _, policy := range strings.Split(r.GetRetryOn(), ",") {
		policy = strings.TrimSpace(policy)
		if slices.Contains(retryOnPolicies, policy) {
			continue
		}
		if code, err := strconv.Atoi(policy); err == nil && code >= 100 && code <= 599 {
			continue
		}
		v.add(path+".retryOn", "unknown retry condition %q; use %s, or an HTTP status code", policy, strings.Join(retryOnPolicies, ", "))
	}
}

func validateFault(v *validator, path string, f *networking.HTTPFaultInjection) {
	if f == nil {
		return
	}
	if f.GetDelay() == nil && f.GetAbort() == nil {
		v.add(path, "at least one of delay or abort is required")
	}
	if d := f.GetDelay(); d != nil {
		switch t := d.GetHttpDelayType().(type) {
		case nil:
			v.add(path+".delay.fixedDelay", "required")
		case *networking.HTTPFaultInjection_Delay_FixedDelay:
			if t.FixedDelay == nil {
				v.add(path+".delay.fixedDelay", "required")
			}
			positive(v, path+".delay.fixedDelay", t.FixedDelay)
		}
		if p := d.GetPercentage(); p != nil {
			percent(v, path+".delay.percentage.value", p.GetValue())
		}
		percent(v, path+".delay.percent", float64(d.GetPercent()))
	}
	if a := f.GetAbort(); a != nil {
		switch t := a.GetErrorType().(type) {
		case nil:
			v.add(path+".abort", "one of httpStatus or grpcStatus is required")
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			if t.HttpStatus < 200 || t.HttpStatus > 599 {
				v.add(path+".abort.httpStatus", "must be between 200 and 599")
			}
		}
		if p := a.GetPercentage(); p != nil {
			percent(v, path+".abort.percentage.value", p.GetValue())
		}
	}
}
