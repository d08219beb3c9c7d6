package translate

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// applyRewrite sets the path and authority rewrites of a forwarding route.
//
// rewrite.uri becomes Envoy's prefix_rewrite, which gives Istio's semantics by itself: for a
// prefix match the matched prefix is replaced (`/api` → `/v2` turns /api/x into /v2/x); for an
// exact or regex match Envoy's "matched prefix" is the whole path, so the whole path is
// replaced. uriRegexRewrite becomes regex_rewrite; the two are exclusive (the loader enforces
// it). authority becomes host_rewrite_literal and wins over an authority set by the rule's
// headers.
func applyRewrite(action *routev3.RouteAction, rw *networking.HTTPRewrite) {
	if rw == nil {
		return
	}
	if rr := rw.GetUriRegexRewrite(); rr != nil {
		action.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: rr.Match},
			Substitution: rr.Rewrite,
		}
	} else if rw.Uri != "" {
		action.PrefixRewrite = rw.Uri
	}
	if rw.Authority != "" {
		setHostRewrite(action, rw.Authority)
	}
}

func setHostRewrite(action *routev3.RouteAction, authority string) {
	action.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: authority}
}
