package translate

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// headerOperations is an Istio Headers block in Envoy's terms. Authority is a `set` or `add`
// of `:authority` or `host`, which Envoy cannot do as a header operation and istiod turns into
// a host rewrite.
type headerOperations struct {
	requestToAdd     []*corev3.HeaderValueOption
	requestToRemove  []string
	responseToAdd    []*corev3.HeaderValueOption
	responseToRemove []string
	authority        string
}

// translateHeaders converts headers.request/response set/add/remove as istiod does: `set`
// overwrites, `add` appends, sets come before adds, each sorted by name; pseudo-headers and
// Host are dropped from the lists because Envoy rejects a configuration that changes them.
func translateHeaders(h *networking.Headers) headerOperations {
	if h == nil {
		return headerOperations{}
	}
	req, resp := h.GetRequest(), h.GetResponse()
	setOps, setAuthority := headerValueOptions(req.GetSet(), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	addOps, addAuthority := headerValueOptions(req.GetAdd(), corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	respSet, _ := headerValueOptions(resp.GetSet(), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	respAdd, _ := headerValueOptions(resp.GetAdd(), corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	authority := addAuthority
	if setAuthority != "" {
		authority = setAuthority // `set` wins over `add`, as in istiod
	}
	return headerOperations{
		requestToAdd:     append(setOps, addOps...),
		requestToRemove:  removableHeaders(req.GetRemove()),
		responseToAdd:    append(respSet, respAdd...),
		responseToRemove: removableHeaders(resp.GetRemove()),
		authority:        authority,
	}
}

// applyToRoute appends the operations to a route's own lists.
func (ops headerOperations) applyToRoute(r *routev3.Route) {
	r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, ops.requestToAdd...)
	r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, ops.requestToRemove...)
	r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, ops.responseToAdd...)
	r.ResponseHeadersToRemove = append(r.ResponseHeadersToRemove, ops.responseToRemove...)
}

// applyToClusterWeight puts a weighted destination's operations on its cluster entry, so they
// apply only to requests sent there.
func (ops headerOperations) applyToClusterWeight(c *routev3.WeightedCluster_ClusterWeight) {
	c.RequestHeadersToAdd = ops.requestToAdd
	c.RequestHeadersToRemove = ops.requestToRemove
	c.ResponseHeadersToAdd = ops.responseToAdd
	c.ResponseHeadersToRemove = ops.responseToRemove
	if ops.authority != "" {
		c.HostRewriteSpecifier = &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: ops.authority}
	}
}

func headerValueOptions(headers map[string]string, action corev3.HeaderValueOption_HeaderAppendAction) ([]*corev3.HeaderValueOption, string) {
	var out []*corev3.HeaderValueOption
	authority := ""
	for _, name := range sortedKeys(headers) {
		if isAuthorityHeader(name) {
			authority = headers[name]
		}
		if isInternalHeader(name) {
			continue
		}
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: name, Value: headers[name]},
			AppendAction: action,
		})
	}
	return out, authority
}

func removableHeaders(names []string) []string {
	var out []string
	for _, n := range names {
		if !isInternalHeader(n) {
			out = append(out, n)
		}
	}
	return out
}

// isInternalHeader: Envoy does not let routes add or remove pseudo-headers or Host.
func isInternalHeader(name string) bool {
	return strings.HasPrefix(name, ":") || strings.EqualFold(name, "host")
}

func isAuthorityHeader(name string) bool {
	return strings.EqualFold(name, ":authority") || strings.EqualFold(name, "host")
}
