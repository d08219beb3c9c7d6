package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// defaultMaxDirectResponseBody is istiod's limit for directResponse bodies (1 MiB, what its
// webhook accepts); Envoy's own default is 4 KiB.
const defaultMaxDirectResponseBody = 1 << 20

// redirectAction translates HTTPRedirect as istiod does for a listener on port (tls when it
// terminates TLS, which only gateways do). nil for a redirect code Envoy has no name for (the
// loader rejects those already).
func redirectAction(rd *networking.HTTPRedirect, port uint32, tls bool) *routev3.Route_Redirect {
	out := &routev3.RedirectAction{HostRedirect: rd.Authority}
	switch {
	case rd.Uri != "":
		// The whole path is replaced, whatever the match was.
		out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.Uri}
	case rd.PrefixRewrite != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rd.PrefixRewrite}
	}
	if rd.Scheme != "" {
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.Scheme}
	}
	if rd.RedirectPort != nil {
		switch p := rd.RedirectPort.(type) {
		case *networking.HTTPRedirect_Port:
			out.PortRedirect = p.Port
		case *networking.HTTPRedirect_DerivePort:
			// Envoy cannot take the port from the request, but these routes only ever serve
			// requests that arrived on port, so that is the request's port. FROM_PROTOCOL_DEFAULT
			// is Envoy's behaviour without a port.
			if p.DerivePort == networking.HTTPRedirect_FROM_REQUEST_PORT {
				out.PortRedirect = port
			}
		}
		// No explicit :80 for http or :443 for https, as istiod; without a scheme in the
		// redirect, the request's scheme stays.
		scheme := rd.Scheme
		if scheme == "" {
			scheme = "http"
			if tls {
				scheme = "https"
			}
		}
		if (out.PortRedirect == 80 && scheme == "http") || (out.PortRedirect == 443 && scheme == "https") {
			out.PortRedirect = 0
		}
	}
	switch rd.RedirectCode {
	case 0, 301:
		out.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	case 302:
		out.ResponseCode = routev3.RedirectAction_FOUND
	case 303:
		out.ResponseCode = routev3.RedirectAction_SEE_OTHER
	case 307:
		out.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		out.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
	default:
		return nil
	}
	return &routev3.Route_Redirect{Redirect: out}
}

// directResponseAction answers with a fixed status and body.
func directResponseAction(dr *networking.HTTPDirectResponse) *routev3.Route_DirectResponse {
	out := &routev3.DirectResponseAction{Status: dr.Status}
	switch b := dr.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: b.String_}}
	case *networking.HTTPBody_Bytes:
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b.Bytes}}
	}
	return &routev3.Route_DirectResponse{DirectResponse: out}
}

// maxDirectResponseBody is the max_direct_response_body_size_bytes a route configuration
// needs, or 0 when none of its routes answers with a body (Envoy's 4 KiB default then applies
// to nothing). istiod always sets 1 MiB; Skiff sets it only where it matters, and raises it
// for a larger body, because Envoy rejects the whole route configuration when one body is
// over the limit.
func maxDirectResponseBody(vhosts []*routev3.VirtualHost) uint32 {
	var largest int
	found := false
	for _, vh := range vhosts {
		for _, r := range vh.Routes {
			body := r.GetDirectResponse().GetBody()
			if body == nil {
				continue
			}
			found = true
			largest = max(largest, len(body.GetInlineString()), len(body.GetInlineBytes()))
		}
	}
	if !found {
		return 0
	}
	return uint32(max(largest, defaultMaxDirectResponseBody))
}
