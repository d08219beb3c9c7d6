package model

import "strings"

// DefaultDomainSuffix is the cluster DNS suffix short names expand into.
const DefaultDomainSuffix = "svc.cluster.local"

// ResolveHost expands a short name the way Istio does for hosts written in an object in
// namespace ns: a name without dots becomes NAME.NS.svc.cluster.local; "*" and anything with a
// dot stay as written.
func ResolveHost(host, ns string) string {
	if host == "*" || strings.Contains(host, ".") {
		return host
	}
	return host + "." + ns + "." + DefaultDomainSuffix
}

// HostMatches reports whether pattern (an exact host, "*", or "*.suffix") covers host. A
// wildcard host on the other side is covered only by an equal or wider wildcard.
func HostMatches(pattern, host string) bool {
	if pattern == host || pattern == "*" {
		return true
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return false
}
