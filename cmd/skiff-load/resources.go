package main

import (
	"bytes"
	"hash/maphash"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The simulated proxies share one machine (and two cores) with pilot, so what they decode is
// decoded once per distinct resource: pilot serves every member of a class the same bytes, so
// a content hash turns thousands of decodes into a handful. What is kept is only the little a
// proxy needs to behave like Envoy: the EDS names a cluster asks for, the route configuration
// names a listener asks for.

var hashSeed = maphash.MakeSeed()

// nameCache maps a resource's bytes (by hash) to the names derived from it.
type nameCache struct {
	derive func(*anypb.Any) (name string, refs []string)

	mu      sync.RWMutex
	entries map[uint64]derived
}

// derived is what one resource yields: its own name and the names it references.
type derived struct {
	name string
	refs []string
}

func newNameCache(derive func(*anypb.Any) (string, []string)) *nameCache {
	return &nameCache{derive: derive, entries: map[uint64]derived{}}
}

func (c *nameCache) get(a *anypb.Any) derived {
	h := maphash.Bytes(hashSeed, a.GetValue())
	c.mu.RLock()
	d, ok := c.entries[h]
	c.mu.RUnlock()
	if ok {
		return d
	}
	name, refs := c.derive(a)
	d = derived{name: name, refs: refs}
	c.mu.Lock()
	c.entries[h] = d
	c.mu.Unlock()
	return d
}

// Caches for the two types whose contents decide what a proxy subscribes to next. An
// undecodable resource derives nothing: the proxy then simply does not subscribe to it, and
// the missing sync shows in the report.
var (
	clusterNames = newNameCache(func(a *anypb.Any) (string, []string) {
		c := &clusterv3.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			return "", nil
		}
		return c.GetName(), edsServiceName(c)
	})
	listenerNames = newNameCache(func(a *anypb.Any) (string, []string) {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			return "", nil
		}
		return l.GetName(), routeConfigNames(l)
	})
)

// edsServiceName is what Envoy asks EDS for on behalf of an EDS cluster: the
// eds_cluster_config service_name, or the cluster's own name when that is empty.
func edsServiceName(c *clusterv3.Cluster) []string {
	if c.GetType() != clusterv3.Cluster_EDS {
		return nil
	}
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return []string{n}
	}
	return []string{c.GetName()}
}

// routeConfigNames are the RDS route configurations an Envoy asks for because of l: every
// http_connection_manager in any filter chain (virtualOutbound, virtualInbound, 0.0.0.0_PORT
// alike) or the default filter chain that takes its routes from RDS.
func routeConfigNames(l *listenerv3.Listener) []string {
	var names []string
	chains := l.GetFilterChains()
	if d := l.GetDefaultFilterChain(); d != nil {
		chains = append(slices.Clip(chains), d)
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil || !tc.MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := tc.UnmarshalTo(hcm); err != nil {
				continue
			}
			if n := hcm.GetRds().GetRouteConfigName(); n != "" {
				names = append(names, n)
			}
		}
	}
	return names
}

// probe is one measured change: which proxies have received it and when. Proxies test the
// resources they receive against the armed probe; a match records the arrival once.
type probe struct {
	kind  probeKind
	start time.Time // when the file was written
	match matcher

	arrived []atomic.Int64 // per proxy: nanoseconds after start, 0 = not yet
	reached atomic.Int64
	// seen caches the verdict per distinct content of the part that matters (see matcher),
	// for the same reason as nameCache.
	mu   sync.RWMutex
	seen map[uint64]bool
}

// matcher says whether a resource carries a change. part picks out the bytes that can (a
// service's virtual host, say; nil when the resource has none), and holds decides on them. The
// probe decides once per distinct part rather than once per proxy, and never hashes or decodes
// the rest of a megabyte of routes.
type matcher struct {
	part  func(resource chunks) []byte
	holds func(part []byte) bool
}

type probeKind int

const (
	probeRoutes probeKind = iota
	probeEndpoints
)

func newProbe(kind probeKind, proxies int, m matcher) *probe {
	return &probe{kind: kind, match: m, arrived: make([]atomic.Int64, proxies), seen: map[uint64]bool{}}
}

// observe records proxy idx's response, received at recv, if one of its resources carries the
// change.
func (p *probe) observe(idx int, recv time.Time, resources []*anypb.Any) {
	if p.arrived[idx].Load() != 0 {
		return
	}
	for _, r := range resources {
		if !p.matches(valueOf(r)) {
			continue
		}
		d := max(recv.Sub(p.start), 1) // 0 means "not yet"
		if p.arrived[idx].CompareAndSwap(0, int64(d)) {
			p.reached.Add(1)
		}
		return
	}
}

func (p *probe) matches(resource chunks) bool {
	part := p.match.part(resource)
	if part == nil {
		return false
	}
	h := maphash.Bytes(hashSeed, part)
	p.mu.RLock()
	m, ok := p.seen[h]
	p.mu.RUnlock()
	if ok {
		return m
	}
	m = p.match.holds(part)
	p.mu.Lock()
	p.seen[h] = m
	p.mu.Unlock()
	return m
}

// distinct is how many different contents of the changed part the proxies received while the
// probe was armed: 1 means pilot served every proxy the same bytes for it.
func (p *probe) distinct() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.seen)
}

// latencies are the recorded arrivals.
func (p *probe) latencies() []time.Duration {
	var out []time.Duration
	for i := range p.arrived {
		if d := p.arrived[i].Load(); d != 0 {
			out = append(out, time.Duration(d))
		}
	}
	return out
}

// weightsMatcher matches a RouteConfiguration whose virtual host for service i splits its
// weighted route v1/v2 as given.
func weightsMatcher(i int, v1, v2 uint32) matcher {
	name := virtualHostName(i)
	c1, c2 := subsetCluster(i, "v1"), subsetCluster(i, "v2")
	return matcher{
		part: func(rc chunks) []byte { return virtualHostBytes(rc, name) },
		holds: func(part []byte) bool {
			vh := &routev3.VirtualHost{}
			if err := proto.Unmarshal(part, vh); err != nil {
				return false
			}
			for _, r := range vh.GetRoutes() {
				w := map[string]uint32{}
				for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
					w[wc.GetName()] = wc.GetWeight().GetValue()
				}
				if len(w) == 2 && w[c1] == v1 && w[c2] == v2 {
					return true
				}
			}
			return false
		},
	}
}

// addressMatcher matches the ClusterLoadAssignment of service i's cluster when it lists addr.
func addressMatcher(i int, addr netip.Addr) matcher {
	cluster := subsetCluster(i, "")
	clusterBytes, addrString := []byte(cluster), addr.String()
	return matcher{
		// Endpoint assignments are small: the whole of the service's one is the part.
		part: func(value chunks) []byte {
			cla := value.bytes()
			if !bytes.Contains(cla, clusterBytes) {
				return nil
			}
			return cla
		},
		holds: func(part []byte) bool {
			cla := &endpointv3.ClusterLoadAssignment{}
			if err := proto.Unmarshal(part, cla); err != nil || cla.GetClusterName() != cluster {
				return false
			}
			for _, loc := range cla.GetEndpoints() {
				for _, ep := range loc.GetLbEndpoints() {
					if ep.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == addrString {
						return true
					}
				}
			}
			return false
		},
	}
}

// responseSize is the bytes of a response's payload as it crossed the wire.
func responseSize(m proto.Message) int64 {
	if h, ok := held.Load(m); ok {
		return int64(h.(*heldResponse).size)
	}
	return int64(proto.Size(m))
}
