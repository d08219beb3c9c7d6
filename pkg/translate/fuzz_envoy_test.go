package translate_test

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// envoyRejections lists what in a proxy's resources Envoy would NACK although every resource
// passes Validate(): rules Envoy checks across resources or across the entries of one. The
// fuzz target checks them on every input; the real-Envoy test (test/e2e) checks the rest on a
// sample.
//
//   - Two listeners that bind the same address and port.
//   - Two filter chains of one listener that match the same connection: Envoy builds a tree
//     of the match fields and refuses a leaf reached twice ("multiple filter chains with the
//     same matching rules are defined").
//   - A route configuration that validates clusters (inline in a listener, where that is the
//     default, or RDS with validate_clusters set) naming a cluster the proxy does not have.
//   - A filter whose configuration is discovered (ECDS) under a name the proxy's extension
//     configurations do not have: not a rejection, but its listener would warm for ever.
func envoyRejections(listeners []*listenerv3.Listener, routes []*routev3.RouteConfiguration, clusters []*clusterv3.Cluster,
	extensions []*corev3.TypedExtensionConfig,
) []string {
	var problems []string
	discoverable := map[string]bool{}
	for _, e := range extensions {
		discoverable[e.GetName()] = true
	}
	known := map[string]bool{}
	for _, c := range clusters {
		known[c.GetName()] = true
	}
	bound := map[string]string{}
	for _, l := range listeners {
		if addr := boundAddress(l); addr != "" {
			if other, dup := bound[addr]; dup {
				problems = append(problems, fmt.Sprintf("listeners %s and %s both bind %s", other, l.GetName(), addr))
			}
			bound[addr] = l.GetName()
		}
		problems = append(problems, duplicateChainMatches(l)...)
		for _, name := range discoveredFilters(l) {
			if !discoverable[name] {
				problems = append(problems, fmt.Sprintf("listener %s: filter %s's configuration is discovered, and the proxy has no extension configuration of that name", l.GetName(), name))
			}
		}
		for _, rc := range inlineRouteConfigs(l) {
			if rc.GetValidateClusters() == nil || rc.GetValidateClusters().GetValue() {
				problems = append(problems, unknownClusters("listener "+l.GetName()+"'s inline routes", rc, known)...)
			}
		}
	}
	for _, rc := range routes {
		if rc.GetValidateClusters().GetValue() {
			problems = append(problems, unknownClusters("route configuration "+rc.GetName(), rc, known)...)
		}
	}
	return problems
}

// boundAddress is "ip:port" of a listener that binds a socket address, or empty.
func boundAddress(l *listenerv3.Listener) string {
	if l.GetBindToPort() != nil && !l.GetBindToPort().GetValue() {
		return ""
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return ""
	}
	return sa.GetAddress() + ":" + strconv.FormatUint(uint64(sa.GetPortValue()), 10)
}

// maxLeaves bounds the expansion of one filter chain match; a chain beyond it is not checked.
const maxLeaves = 4096

// duplicateChainMatches finds filter chains of l whose matches share a leaf of Envoy's match
// tree: every combination of one value per field, an empty list matching anything.
func duplicateChainMatches(l *listenerv3.Listener) []string {
	var problems []string
	owner := map[string]string{}
	for i, fc := range l.GetFilterChains() {
		name := fc.GetName()
		if name == "" {
			name = "#" + strconv.Itoa(i)
		}
		for _, leaf := range matchLeaves(fc.GetFilterChainMatch()) {
			if other, dup := owner[leaf]; dup && other != name {
				problems = append(problems, fmt.Sprintf("listener %s: filter chains %s and %s match the same connections (%s)", l.GetName(), other, name, leaf))
				break
			}
			owner[leaf] = name
		}
	}
	return problems
}

// matchLeaves expands a filter chain match into the leaves of Envoy's match tree.
func matchLeaves(m *listenerv3.FilterChainMatch) []string {
	cidrs := func(ranges []*corev3.CidrRange) []string {
		var out []string
		for _, r := range ranges {
			out = append(out, normalCIDR(r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
		}
		return out
	}
	var ports []string
	for _, p := range m.GetSourcePorts() {
		ports = append(ports, strconv.FormatUint(uint64(p), 10))
	}
	fields := [][]string{
		{strconv.FormatUint(uint64(m.GetDestinationPort().GetValue()), 10)},
		cidrs(m.GetPrefixRanges()),
		m.GetServerNames(),
		{m.GetTransportProtocol()},
		m.GetApplicationProtocols(),
		cidrs(m.GetDirectSourcePrefixRanges()),
		{m.GetSourceType().String()},
		cidrs(m.GetSourcePrefixRanges()),
		ports,
	}
	leaves := []string{""}
	for _, values := range fields {
		if len(values) == 0 {
			values = []string{"*"}
		}
		if len(leaves)*len(values) > maxLeaves {
			return nil
		}
		next := make([]string, 0, len(leaves)*len(values))
		for _, leaf := range leaves {
			for _, v := range values {
				next = append(next, leaf+"|"+v)
			}
		}
		leaves = next
	}
	return dedupe(leaves)
}

func dedupe(list []string) []string {
	seen := map[string]bool{}
	out := list[:0]
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// normalCIDR is the network a CIDR range covers, as Envoy compares them.
func normalCIDR(address string, bits uint32) string {
	ip, err := netip.ParseAddr(address)
	if err != nil {
		return address + "/" + strconv.FormatUint(uint64(bits), 10)
	}
	if p, err := ip.Prefix(int(bits)); err == nil {
		return p.String()
	}
	return ip.String() + "/" + strconv.FormatUint(uint64(bits), 10)
}

// discoveredFilters are the names of l's network and HTTP filters whose configuration comes
// over ECDS.
func discoveredFilters(l *listenerv3.Listener) []string {
	var out []string
	for _, fc := range allChains(l) {
		for _, f := range fc.GetFilters() {
			if f.GetConfigDiscovery() != nil {
				out = append(out, f.GetName())
			}
			for _, hcm := range connectionManagers(f) {
				for _, hf := range hcm.GetHttpFilters() {
					if hf.GetConfigDiscovery() != nil {
						out = append(out, hf.GetName())
					}
				}
			}
		}
	}
	return out
}

// allChains are l's filter chains and its default chain.
func allChains(l *listenerv3.Listener) []*listenerv3.FilterChain {
	chains := l.GetFilterChains()
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains[:len(chains):len(chains)], l.GetDefaultFilterChain())
	}
	return chains
}

// connectionManagers is f's HTTP connection manager, if f is one.
func connectionManagers(f *listenerv3.Filter) []*hcmv3.HttpConnectionManager {
	tc := f.GetTypedConfig()
	if tc == nil || !strings.HasSuffix(tc.GetTypeUrl(), ".HttpConnectionManager") {
		return nil
	}
	var hcm hcmv3.HttpConnectionManager
	if err := tc.UnmarshalTo(&hcm); err != nil {
		return nil
	}
	return []*hcmv3.HttpConnectionManager{&hcm}
}

// inlineRouteConfigs are the route configurations inside l's HTTP connection managers.
func inlineRouteConfigs(l *listenerv3.Listener) []*routev3.RouteConfiguration {
	var out []*routev3.RouteConfiguration
	for _, fc := range allChains(l) {
		for _, f := range fc.GetFilters() {
			for _, hcm := range connectionManagers(f) {
				if hcm.GetRouteConfig() != nil {
					out = append(out, hcm.GetRouteConfig())
				}
			}
		}
	}
	return out
}

// unknownClusters lists the clusters rc's routes name that are not known.
func unknownClusters(where string, rc *routev3.RouteConfiguration, known map[string]bool) []string {
	var problems []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			ra := r.GetRoute()
			names := []string{}
			if c := ra.GetCluster(); c != "" {
				names = append(names, c)
			}
			for _, wc := range ra.GetWeightedClusters().GetClusters() {
				names = append(names, wc.GetName())
			}
			for _, c := range names {
				if !known[c] {
					problems = append(problems, fmt.Sprintf("%s: route %q names cluster %s, which the proxy does not have", where, r.GetName(), c))
				}
			}
		}
	}
	return problems
}
