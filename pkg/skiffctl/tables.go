package skiffctl

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Filter selects resources as istioctl proxy-config's flags do.
type Filter struct {
	// Clusters: FQDN, port, subset and direction are matched in the cluster's name
	// (outbound|PORT|SUBSET|FQDN), as istioctl matches them.
	FQDN      string
	Port      int
	Subset    string
	Direction string
	// Listeners: Address and Port; Type is HTTP, TCP, HTTP+TCP or UNKNOWN.
	Address string
	Type    string
	// Routes: the route configuration's name. Any type: the resource's name.
	Name string
	// Endpoints: the cluster, the address (ADDRESS:PORT or ADDRESS), and health status.
	Cluster string
	Status  string
}

// Keep reports whether the filter keeps r.
func (f *Filter) Keep(r *Resource) bool {
	if f.Name != "" && r.Name != f.Name && r.Type != Endpoints {
		return false
	}
	switch m := r.Message.(type) {
	case *clusterv3.Cluster:
		name := m.GetName()
		return (f.FQDN == "" || strings.Contains(name, f.FQDN)) &&
			(f.Direction == "" || strings.Contains(name, f.Direction)) &&
			(f.Subset == "" || strings.Contains(name, f.Subset)) &&
			(f.Port == 0 || strings.Contains(name, "|"+strconv.Itoa(f.Port)+"|"))
	case *listenerv3.Listener:
		return (f.Address == "" || strings.EqualFold(listenerAddress(m), f.Address)) &&
			(f.Port == 0 || listenerPort(m) == uint32(f.Port)) &&
			(f.Type == "" || strings.EqualFold(listenerType(m), f.Type))
	case *endpointv3.ClusterLoadAssignment:
		return f.Cluster == "" || strings.EqualFold(m.GetClusterName(), f.Cluster)
	}
	return true
}

// Select is the resources of rs the filter keeps.
func (f *Filter) Select(rs []*Resource) []*Resource {
	var out []*Resource
	for _, r := range rs {
		if f.Keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// PrintClusters prints istioctl's cluster table.
func PrintClusters(w io.Writer, rs []*Resource) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "SERVICE FQDN\tPORT\tSUBSET\tDIRECTION\tTYPE\tDESTINATION RULE")
	for _, r := range rs {
		c, _ := r.Message.(*clusterv3.Cluster)
		typ := "-"
		if c != nil {
			typ = c.GetType().String()
			if c.GetEdsClusterConfig() != nil {
				typ = "EDS"
			}
		}
		if parts := strings.Split(r.Name, "|"); len(parts) == 4 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", parts[3], parts[1], dash(parts[2]), parts[0], typ, dash(managedBy(c.GetMetadata())))
			continue
		}
		fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\t%s\n", r.Name, typ, dash(managedBy(c.GetMetadata())))
	}
	return tw.Flush()
}

// managedBy is the object a resource came from as istiod records it in metadata
// (filter_metadata.istio.config, /apis/GROUP/VERSION/namespaces/NS/KIND/NAME), shown as
// istioctl shows it: NAME.NS.
func managedBy(md *corev3.Metadata) string {
	cfg := md.GetFilterMetadata()["istio"].GetFields()["config"].GetStringValue()
	parts := strings.Split(cfg, "/")
	if len(parts) < 7 {
		return ""
	}
	return parts[len(parts)-1] + "." + parts[len(parts)-3]
}

func listenerAddress(l *listenerv3.Listener) string {
	if sa := l.GetAddress().GetSocketAddress(); sa != nil {
		return sa.GetAddress()
	}
	return l.GetAddress().GetPipe().GetPath()
}

func listenerPort(l *listenerv3.Listener) uint32 {
	return l.GetAddress().GetSocketAddress().GetPortValue()
}

// listenerType classifies a listener as istioctl does: HTTP, TCP, HTTP+TCP or UNKNOWN, by its
// filter chains' HTTP connection managers and TCP proxies (those to BlackHoleCluster aside).
func listenerType(l *listenerv3.Listener) string {
	var http, tcp int
	for _, fc := range filterChains(l) {
		for _, f := range fc.GetFilters() {
			switch f.GetName() {
			case "envoy.filters.network.http_connection_manager":
				http++
			case "envoy.filters.network.tcp_proxy":
				if !strings.Contains(string(f.GetTypedConfig().GetValue()), "BlackHoleCluster") {
					tcp++
				}
			}
		}
	}
	switch {
	case http > 0 && tcp > 0:
		return "HTTP+TCP"
	case http > 0:
		return "HTTP"
	case tcp > 0:
		return "TCP"
	}
	return "UNKNOWN"
}

func filterChains(l *listenerv3.Listener) []*listenerv3.FilterChain {
	out := slices.Clone(l.GetFilterChains())
	if l.GetDefaultFilterChain() != nil {
		out = append(out, l.GetDefaultFilterChain())
	}
	return out
}

// PrintListeners prints istioctl's (verbose) listener table: a row per filter chain, with
// what it matches and where it sends traffic.
func PrintListeners(w io.Writer, rs []*Resource) error {
	rs = slices.Clone(rs)
	slices.SortStableFunc(rs, func(a, b *Resource) int {
		la, _ := a.Message.(*listenerv3.Listener)
		lb, _ := b.Message.(*listenerv3.Listener)
		return cmp.Or(cmp.Compare(listenerPort(la), listenerPort(lb)), strings.Compare(listenerAddress(la), listenerAddress(lb)))
	})
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESSES\tPORT\tTYPE\tMATCH\tDESTINATION")
	for _, r := range rs {
		l, _ := r.Message.(*listenerv3.Listener)
		if l == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t(not decoded)\n", r.Name)
			continue
		}
		chains := filterChains(l)
		if len(chains) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\tALL\t-\n", r.Name, listenerAddress(l), listenerPort(l), listenerType(l))
		}
		for _, fc := range chains {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", r.Name, listenerAddress(l), listenerPort(l), listenerType(l),
				describeChainMatch(fc.GetFilterChainMatch()), describeChainDestination(fc))
		}
	}
	return tw.Flush()
}

// describeChainMatch summarises a filter chain match as istioctl does: "ALL" for none.
func describeChainMatch(m *listenerv3.FilterChainMatch) string {
	var parts []string
	if p := m.GetDestinationPort(); p != nil {
		parts = append(parts, "Port: "+strconv.Itoa(int(p.GetValue())))
	}
	if len(m.GetServerNames()) > 0 {
		parts = append(parts, "SNI: "+strings.Join(m.GetServerNames(), ","))
	}
	if t := m.GetTransportProtocol(); t != "" {
		parts = append(parts, "Trans: "+t)
	}
	if len(m.GetApplicationProtocols()) > 0 {
		parts = append(parts, "App: "+strings.Join(m.GetApplicationProtocols(), ","))
	}
	for _, r := range m.GetPrefixRanges() {
		parts = append(parts, fmt.Sprintf("Addr: %s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
	}
	if len(parts) == 0 {
		return "ALL"
	}
	return strings.Join(parts, "; ")
}

// describeChainDestination is where a filter chain sends traffic: its route configuration
// (by RDS name, or inline), or the TCP proxy's cluster.
func describeChainDestination(fc *listenerv3.FilterChain) string {
	for _, f := range fc.GetFilters() {
		cfg := f.GetTypedConfig()
		switch f.GetName() {
		case "envoy.filters.network.http_connection_manager":
			hcm, err := hcmOf(cfg)
			if err != nil {
				return "HTTP"
			}
			if rds := hcm.GetRds(); rds != nil {
				return "Route: " + rds.GetRouteConfigName()
			}
			return "Inline Route: " + hcm.GetRouteConfig().GetName()
		case "envoy.filters.network.tcp_proxy":
			tp, err := tcpProxyOf(cfg)
			if err != nil {
				return "TCP"
			}
			if c := tp.GetCluster(); c != "" {
				return "Cluster: " + c
			}
			var names []string
			for _, wc := range tp.GetWeightedClusters().GetClusters() {
				names = append(names, wc.GetName())
			}
			return "Clusters: " + strings.Join(names, ",")
		}
	}
	return "-"
}

// PrintRoutes prints istioctl's (verbose) route table: a row per route of each virtual host.
func PrintRoutes(w io.Writer, rs []*Resource) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVHOST NAME\tDOMAINS\tMATCH\tVIRTUAL SERVICE")
	for _, r := range rs {
		rc, _ := r.Message.(*routev3.RouteConfiguration)
		if rc == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t(not decoded)\n", r.Name)
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			if len(vh.GetRoutes()) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t/*\t404\n", r.Name, vh.GetName(), describeDomains(vh.GetDomains()))
			}
			for _, route := range vh.GetRoutes() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, vh.GetName(), describeDomains(vh.GetDomains()),
					describeRouteMatch(route.GetMatch()), dash(managedBy(route.GetMetadata())))
			}
		}
	}
	return tw.Flush()
}

// describeDomains is the shortest domain without a port, as istioctl shows a virtual host.
func describeDomains(domains []string) string {
	best := ""
	for _, d := range domains {
		if strings.Contains(d, ":") && !strings.HasPrefix(d, "[") {
			continue
		}
		if best == "" || len(d) < len(best) {
			best = d
		}
	}
	if best == "" && len(domains) > 0 {
		best = domains[0]
	}
	if len(domains) > 1 {
		return fmt.Sprintf("%s + %d more...", best, len(domains)-1)
	}
	return best
}

func describeRouteMatch(m *routev3.RouteMatch) string {
	var s string
	switch {
	case m.GetPrefix() != "":
		s = m.GetPrefix() + "*"
	case m.GetPath() != "":
		s = m.GetPath()
	case m.GetSafeRegex() != nil:
		s = "regex " + m.GetSafeRegex().GetRegex()
	case m.GetPathSeparatedPrefix() != "":
		s = m.GetPathSeparatedPrefix() + "/*"
	default:
		s = "/*"
	}
	for _, h := range m.GetHeaders() {
		s += " (header " + h.GetName() + ")"
	}
	return s
}

// PrintEndpoints prints istioctl's endpoint table from ClusterLoadAssignments.
func PrintEndpoints(w io.Writer, rs []*Resource, f *Filter) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tSTATUS\tLOCALITY\tCLUSTER")
	for _, r := range rs {
		cla, _ := r.Message.(*endpointv3.ClusterLoadAssignment)
		for _, llb := range cla.GetEndpoints() {
			for _, lb := range llb.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				addr := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
				status := lb.GetHealthStatus().String()
				if f.Address != "" && !strings.EqualFold(f.Address, addr) && !strings.EqualFold(f.Address, sa.GetAddress()) {
					continue
				}
				if f.Port != 0 && sa.GetPortValue() != uint32(f.Port) {
					continue
				}
				if f.Status != "" && !strings.EqualFold(f.Status, status) {
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", addr, status, describeLocality(llb.GetLocality()), cla.GetClusterName())
			}
		}
	}
	return tw.Flush()
}

func describeLocality(l *corev3.Locality) string {
	if l == nil {
		return ""
	}
	return strings.Trim(strings.Join([]string{l.GetRegion(), l.GetZone(), l.GetSubZone()}, "/"), "/")
}
