package translate

import (
	"slices"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// The virtual hosts of a gateway route configuration, one per set of hosts that carry the same
// routes, as istiod ends up with them: its buildGatewayHTTPRouteConfig makes a virtual host per
// host (vHostDedupMap), appending the routes of each VirtualService bound to that host, and then
// collapseDuplicateRoutes merges the virtual hosts whose route lists hold the same routes (by
// pointer) and the same require_tls. A VirtualService's routes are built once per Gateway
// (gateway_routelists.go), so in
// effect its hosts on that Gateway's servers become one virtual host: `domains` lists them all, the name is
// `HOST:PORT` of the most specific one. A host that two VirtualServices share carries both
// lists and so stands apart from hosts with one. Envoy matches by domain, so merging changes no
// request's route; it only stops a VirtualService with k hosts from repeating its routes k times
// in the configuration (and on the wire to every gateway).
//
// Here the sets are built directly: each host records which route lists it carries, and hosts
// with the same record share a virtual host. No per-host virtual host is made and compared.

// gatewayHostRoutes is what one host of a route configuration carries.
type gatewayHostRoutes struct {
	host string // lower case
	// The route lists bound to the host (indexes into gatewayVHosts.lists), in the order they
	// were bound: first, -1 for none, then more. Most hosts have one, which needs no slice.
	first      int
	more       []int
	requireTLS bool // a server with httpsRedirect serves the host
}

// gatewayVHosts collects the hosts of one route configuration and builds their virtual hosts.
type gatewayVHosts struct {
	port     string
	lists    [][]*routev3.Route
	listKeys []routeListKey // of lists, by id
	hosts    []gatewayHostRoutes
	// The indexes of listKeys and hosts, made once they are longer than smallSet: most route
	// configurations (an HTTPS server's own) have a few hosts and one list, found faster by
	// looking through them than by hashing into a map made for them.
	listIDs map[routeListKey]int
	byHost  map[string]int
}

// smallSet is how many list keys or hosts gatewayVHosts looks through before indexing them.
const smallSet = 8

// newGatewayVHosts prepares for the virtual hosts of servers on port; hosts is how many hosts
// they have and lists about how many route lists, hints that spare growing the slices and
// indexes one by one.
func newGatewayVHosts(port uint32, hosts, lists int) *gatewayVHosts {
	b := &gatewayVHosts{
		port:     strconv.FormatUint(uint64(port), 10),
		hosts:    make([]gatewayHostRoutes, 0, hosts),
		lists:    make([][]*routev3.Route, 0, lists),
		listKeys: make([]routeListKey, 0, lists),
	}
	if hosts > smallSet {
		b.byHost = make(map[string]int, hosts)
	}
	if lists > smallSet {
		b.listIDs = make(map[routeListKey]int, lists)
	}
	return b
}

// routeList returns the id of the route list of key in this route configuration, taking it
// from build (which may share it with other route configurations) the first time.
func (b *gatewayVHosts) routeList(key routeListKey, build func() []*routev3.Route) int {
	if b.listIDs != nil {
		if id, ok := b.listIDs[key]; ok {
			return id
		}
	} else if i := slices.Index(b.listKeys, key); i >= 0 {
		return i
	}
	id := len(b.lists)
	b.lists = append(b.lists, build())
	b.listKeys = append(b.listKeys, key)
	switch {
	case b.listIDs != nil:
		b.listIDs[key] = id
	case len(b.listKeys) > smallSet:
		b.listIDs = make(map[routeListKey]int, 2*len(b.listKeys))
		for i, k := range b.listKeys {
			b.listIDs[k] = i
		}
	}
	return id
}

// host returns the record of host, creating it. The pointer is valid until the next call.
func (b *gatewayVHosts) host(h string) *gatewayHostRoutes {
	h = strings.ToLower(h)
	i, ok := -1, false
	if b.byHost != nil {
		i, ok = b.byHost[h]
	} else {
		i = slices.IndexFunc(b.hosts, func(hr gatewayHostRoutes) bool { return hr.host == h })
		ok = i >= 0
	}
	if !ok {
		i = len(b.hosts)
		b.hosts = append(b.hosts, gatewayHostRoutes{host: h, first: -1})
		switch {
		case b.byHost != nil:
			b.byHost[h] = i
		case len(b.hosts) > smallSet:
			b.byHost = make(map[string]int, 2*len(b.hosts))
			for j := range b.hosts {
				b.byHost[b.hosts[j].host] = j
			}
		}
	}
	return &b.hosts[i]
}

// bind adds the route list id to host. A list without routes is not recorded: it adds nothing
// to the virtual host, and istiod's comparison of route lists cannot tell it apart either.
func (b *gatewayVHosts) bind(host string, id int, redirect bool) {
	hr := b.host(host)
	switch {
	case len(b.lists[id]) == 0:
	case hr.first < 0:
		hr.first = id
	default:
		hr.more = append(hr.more, id)
	}
	hr.requireTLS = hr.requireTLS || redirect
}

// redirect marks host, routed or not, as redirected to HTTPS.
func (b *gatewayVHosts) redirect(host string) {
	b.host(host).requireTLS = true
}

// hostSetKey tells sets of hosts apart: hosts with equal keys carry the same routes.
type hostSetKey struct {
	requireTLS bool
	first      int
	more       string // the ids of the other lists, when there are
}

func (hr *gatewayHostRoutes) setKey() hostSetKey {
	k := hostSetKey{requireTLS: hr.requireTLS, first: hr.first}
	if len(hr.more) > 0 {
		var b []byte
		for _, id := range hr.more {
			b = strconv.AppendInt(append(b, ','), int64(id), 10)
		}
		k.more = string(b)
	}
	return k
}

// virtualHosts builds one virtual host per set of hosts with the same routes and require_tls,
// sorted by name. nil when there are no hosts.
func (b *gatewayVHosts) virtualHosts() []*routev3.VirtualHost {
	sets, firstHost := b.hostSets()
	if len(sets) == 0 {
		return nil
	}
	out := make([]*routev3.VirtualHost, 0, len(sets))
	// The virtual hosts are allocated together: a gateway of a thousand servers has a thousand.
	slab := make([]routev3.VirtualHost, len(sets))
	for s, hosts := range sets {
		// istiod keeps the virtual host of the first host in host.Names order and appends the
		// others' domains to it.
		slices.SortFunc(hosts, compareHostSpecificity)
		hr := &b.hosts[firstHost[s]]
		vh := &slab[s]
		vh.Domains = gatewayDomains(hosts, b.port)
		// HOST:PORT, which the domains hold already unless the host is `*`.
		if hosts[0] == "*" {
			vh.Name = "*:" + b.port
		} else {
			vh.Name = vh.Domains[1]
		}
		vh.Routes = b.routes(hr)
		vh.IncludeRequestAttemptCount = true
		if hr.requireTLS {
			vh.RequireTls = routev3.VirtualHost_ALL
		}
		out = append(out, vh)
	}
	// Sorted by name, as istiod sorts them (Envoy picks a virtual host by its domains, so the
	// order only keeps the output stable). Names are unique: every host is in one set.
	slices.SortFunc(out, func(a, c *routev3.VirtualHost) int { return strings.Compare(a.Name, c.Name) })
	return out
}

// hostSets groups the hosts that carry the same routes and require_tls, numbering the sets by
// their first host; firstHost[s] is that host's index in b.hosts, whose record stands for the
// set's. The sets are windows of one slice (laid out by a counting sort): a gateway of a
// thousand servers has a thousand sets, and a slice each would be as many allocations.
func (b *gatewayVHosts) hostSets() (sets [][]string, firstHost []int) {
	setOf := make([]int, len(b.hosts))
	// Most hosts carry one route list: their set is found by its id and require_tls, without
	// hashing; the others' by hostSetKey.
	byList := make([]int, 2*len(b.lists)) // set+1 at 2*id+requireTLS, 0 while none
	byKey := map[hostSetKey]int{}         // set+1
	for i := range b.hosts {
		hr := &b.hosts[i]
		single := hr.first >= 0 && len(hr.more) == 0
		slot := 2*hr.first + boolInt(hr.requireTLS)
		var k hostSetKey
		var s int
		if single {
			s = byList[slot] - 1
		} else {
			k = hr.setKey()
			s = byKey[k] - 1
		}
		if s < 0 {
			s = len(firstHost)
			firstHost = append(firstHost, i)
			if single {
				byList[slot] = s + 1
			} else {
				byKey[k] = s + 1
			}
		}
		setOf[i] = s
	}
	end := make([]int, len(firstHost)) // set s ends at end[s] in members, once filled
	for _, s := range setOf {
		end[s]++
	}
	for s := 1; s < len(end); s++ {
		end[s] += end[s-1]
	}
	members := make([]string, len(b.hosts))
	sets = make([][]string, len(firstHost))
	for i := len(setOf) - 1; i >= 0; i-- { // backwards, so each set keeps the order of b.hosts
		s := setOf[i]
		end[s]--
		members[end[s]] = b.hosts[i].host
	}
	for s := range sets {
		stop := len(members)
		if s+1 < len(end) {
			stop = end[s+1]
		}
		sets[s] = members[end[s]:stop]
	}
	return sets, firstHost
}

// routes joins the route lists of a host, catch-alls last. One list is used as it is: virtual
// hosts share it, as they share routes, and nothing modifies a built message.
func (b *gatewayVHosts) routes(hr *gatewayHostRoutes) []*routev3.Route {
	if hr.first < 0 {
		return nil
	}
	if len(hr.more) == 0 {
		return catchAllLast(b.lists[hr.first])
	}
	n := len(b.lists[hr.first])
	for _, id := range hr.more {
		n += len(b.lists[id])
	}
	out := make([]*routev3.Route, 0, n)
	out = append(out, b.lists[hr.first]...)
	for _, id := range hr.more {
		out = append(out, b.lists[id]...)
	}
	return catchAllLast(out)
}

// gatewayDomains are the Host header values of hosts: HOST and HOST:PORT, just `*` for the
// wildcard, which covers any port. The HOST:PORT forms are windows of one string, built at
// once: every virtual host of a gateway has them, and a string each was most of the
// allocations of a thousand-server gateway's routes.
func gatewayDomains(hosts []string, port string) []string {
	size := 0
	for _, h := range hosts {
		if h != "*" {
			size += len(h) + 1 + len(port)
		}
	}
	var joined strings.Builder
	joined.Grow(size)
	for _, h := range hosts {
		if h != "*" {
			joined.WriteString(h)
			joined.WriteByte(':')
			joined.WriteString(port)
		}
	}
	withPorts := joined.String()
	out := make([]string, 0, 2*len(hosts))
	for _, h := range hosts {
		if h == "*" {
			out = append(out, h)
			continue
		}
		n := len(h) + 1 + len(port)
		out = append(out, h, withPorts[:n])
		withPorts = withPorts[n:]
	}
	return out
}

// compareHostSpecificity orders hosts as Istio's host.Names sorts them (MoreSpecific): exact
// names before wildcards, then longest first, then alphabetically.
func compareHostSpecificity(a, b string) int {
	aWild, bWild := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	switch {
	case aWild != bWild:
		if bWild {
			return -1
		}
		return 1
	case len(a) != len(b):
		return len(b) - len(a)
	}
	return strings.Compare(a, b)
}
