package xds

import (
	"log/slog"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffmesh/skiff/pkg/xds/fanout"
)

// When Envoy rejects an answer, the store that sent it finds the resources at fault and holds
// them at the version the proxy last accepted (fanout/reject.go); this file ties that to the
// streams, the status, the log and the metrics.

// RejectedResource is a resource a proxy rejected that pilot now serves at its last accepted
// version, as /debug/syncz shows it under each type.
type RejectedResource struct {
	Name  string `json:"name"`
	Error string `json:"error"`
	// HeldVersion is the version in which the proxy accepted the version pilot holds (for
	// delta streams its content hash); empty when it never accepted one and the resource is
	// held back.
	HeldVersion string `json:"held_version"`
}

// noteNack tells the store that will see a NACK what the rejected answer was: the version the
// stream sent with the nonce it rejects and, for delta streams, the resources that answer
// sent. The request carries only the version the proxy last accepted.
func (t *tracker) noteNack(id int64, req any, typeURL, nonce string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[id]
	if !ok {
		return
	}
	ts := st.typeStatus(typeURL)
	var info fanout.NackInfo
	if st.Protocol == "delta" {
		info.RejectedVersion = ts.nonces[nonce]
		info.Sent = map[string]string{}
		for _, r := range ts.deltaSent[nonce] {
			info.Sent[r.GetName()] = r.GetVersion()
		}
	} else if nonce == ts.SentNonce {
		info.RejectedVersion = ts.Sent
	}
	fanout.NoteNack(req, info)
}

// noteDeltaSent remembers the resources of a delta response until the proxy answers it, so
// that a NACK can be traced to them. The slice is the response's own: nothing is copied.
func (ts *TypeStatus) noteDeltaSent(nonce string, resources []*discoveryv3.Resource) {
	if ts.deltaSent == nil {
		ts.deltaSent = map[string][]*discoveryv3.Resource{}
	}
	if len(ts.deltaSent) > 16 {
		clear(ts.deltaSent)
	}
	ts.deltaSent[nonce] = resources
}

// observeRejections has store log and count what it rejects.
func (c *classCache) observeRejections(store *fanout.Store, key string) {
	typ := shortType(store.TypeURL())
	store.Observe(func(r fanout.Rejection) {
		log := c.log
		if log == nil {
			log = slog.Default()
		}
		log.Warn("proxy rejected a resource; pilot serves it at its last accepted version until its translation changes",
			"proxy", r.Proxy, "type", typ, "resource", r.Name, "held_version", r.HeldVersion, "config", key, "error", r.Error)
	})
}

// classStores are the stores of the configurations class is bound to.
func (c *classCache) classStores(class string) []*fanout.Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	var stores []*fanout.Store
	if pc, ok := c.classes[class]; ok {
		for _, sc := range pc.bound {
			stores = append(stores, sc.store)
		}
	}
	return stores
}

// rejections lists, by short type, the resources held for the proxy nodeID of class: in the
// configurations its class is bound to and in the mesh's endpoints.
func (c *classCache) rejections(class, nodeID string) map[string][]RejectedResource {
	stores := c.classStores(class)
	out := map[string][]RejectedResource{}
	add := func(store *fanout.Store) {
		for _, r := range store.Rejections(nodeID) {
			typ := shortType(store.TypeURL())
			out[typ] = append(out[typ], RejectedResource{Name: r.Name, Error: r.Error, HeldVersion: r.HeldVersion})
		}
	}
	for _, s := range stores {
		add(s)
	}
	add(c.endpoints)
	return out
}

// rejectedCollector exports skiff_xds_rejected_resources: the resources held at their last
// accepted version, by type, counted over every configuration when scraped.
type rejectedCollector struct {
	cache *classCache
	desc  *prometheus.Desc
}

func newRejectedCollector(c *classCache) *rejectedCollector {
	return &rejectedCollector{cache: c, desc: prometheus.NewDesc("skiff_xds_rejected_resources",
		"Resources proxies rejected that pilot serves them at their last accepted version until their translation changes, by type; a resource counts once per proxy that rejected it.",
		[]string{"type"}, nil)}
}

func (rc *rejectedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- rc.desc }

func (rc *rejectedCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{}
	for _, t := range append(classTypes[:len(classTypes):len(classTypes)], resourcev3.EndpointType) {
		counts[shortType(t)] = 0
	}
	rc.cache.mu.Lock()
	stores := make([]*fanout.Store, 0, len(rc.cache.configs)+1)
	for _, sc := range rc.cache.configs {
		stores = append(stores, sc.store)
	}
	rc.cache.mu.Unlock()
	stores = append(stores, rc.cache.endpoints)
	for _, s := range stores {
		counts[shortType(s.TypeURL())] += len(s.Rejections(""))
	}
	for typ, n := range counts {
		ch <- prometheus.MustNewConstMetric(rc.desc, prometheus.GaugeValue, float64(n), typ)
	}
}

// forgetProxy drops what the stores of class and the endpoints hold for node, whose last
// stream closed.
func (c *classCache) forgetProxy(node, class string) {
	stores := c.classStores(class)
	for _, s := range append(stores, c.endpoints) {
		s.Forget(node)
	}
}

// heldRejections lists every resource held back for some proxy, over every configuration and
// the mesh's endpoints, as /debug/wait reports them: a held resource is a change that did not
// reach that proxy, even though it ACKed the answer that held it.
func (c *classCache) heldRejections() []SyncRejection {
	c.mu.Lock()
	stores := make([]*fanout.Store, 0, len(c.configs)+1)
	for _, sc := range c.configs {
		stores = append(stores, sc.store)
	}
	stores = append(stores, c.endpoints)
	c.mu.Unlock()
	var out []SyncRejection
	for _, store := range stores {
		if store == nil {
			continue
		}
		for _, r := range store.Rejections("") {
			out = append(out, SyncRejection{Proxy: r.Proxy, Type: shortType(store.TypeURL()),
				Version: r.HeldVersion, Error: "resource " + r.Name + " held at its accepted version: " + r.Error})
		}
	}
	return out
}
