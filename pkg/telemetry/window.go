package telemetry

import (
	"math"
	"sort"
	"sync"
	"time"
)

// The graph's window: the last minute of traffic, kept in slots of five seconds, so that a
// request leaves the window at most one slot after it is a minute old.
const (
	DefaultGraphWindow = time.Minute
	graphSlot          = 5 * time.Second
)

// edgeKey is the part of a label set the graph shows: who called what, as which reporter saw
// it. Many series map to one key (response codes, flags, principals), never the reverse, so a
// slot never holds more keys than the series the metrics' limit admits.
type edgeKey struct {
	reporter                                      string
	srcNamespace, srcWorkload, srcApp, srcVersion string
	service, serviceName, serviceNamespace        string
	dstNamespace, dstWorkload, dstApp, dstVersion string
	protocol                                      string // http, grpc or tcp
}

// edgeCounts is what one key counted in one slot: plain counts (not cumulative totals), so a
// window's figures are the sum of its slots, as increase() over a range is the difference of a
// counter's ends.
type edgeCounts struct {
	requests, errors uint64
	// codes counts responses by class: [0] no response (code 0), [1] 1xx ... [5] 5xx.
	codes [6]uint64
	// durations counts request durations in Istio's buckets (durationBuckets), one more for
	// +Inf; not cumulative.
	durations [len(durationBounds) + 1]uint64
	// mutual and secured count entries by connection_security_policy: secured those whose
	// policy is known (mutual_tls or none), mutual those over mTLS.
	mutual, secured                            uint64
	tcpOpened, tcpClosed, tcpSent, tcpReceived uint64
}

func (c *edgeCounts) add(o *edgeCounts) {
	c.requests += o.requests
	c.errors += o.errors
	for i := range c.codes {
		c.codes[i] += o.codes[i]
	}
	for i := range c.durations {
		c.durations[i] += o.durations[i]
	}
	c.mutual += o.mutual
	c.secured += o.secured
	c.tcpOpened += o.tcpOpened
	c.tcpClosed += o.tcpClosed
	c.tcpSent += o.tcpSent
	c.tcpReceived += o.tcpReceived
}

// slot is the traffic of one graphSlot-long interval, [index*graphSlot, (index+1)*graphSlot)
// since the Unix epoch.
type slot struct {
	index int64
	edges map[edgeKey]*edgeCounts
}

// window keeps the traffic of the last span in a ring of slots. Memory is bounded by the
// ring's length times the keys of a slot, which the metrics' series limit bounds (see
// edgeKey); a slot is reused, emptied, once it falls out of the window.
type window struct {
	span    time.Duration
	started time.Time // counting began: a window reaching before it is cut there

	mu   sync.Mutex
	ring []slot
}

func newWindow(span time.Duration, started time.Time) *window {
	if span < graphSlot {
		span = graphSlot
	}
	// The slots wholly inside the span, and the current one, which is filling.
	n := int((span + graphSlot - 1) / graphSlot)
	w := &window{span: span, started: started, ring: make([]slot, n+1)}
	for i := range w.ring {
		w.ring[i].index = math.MinInt64
	}
	return w
}

func slotIndex(t time.Time) int64 { return t.UnixNano() / int64(graphSlot) }

// counts returns the counts of key in the slot of now, to be updated while w.mu is held.
func (w *window) counts(key edgeKey, now time.Time) *edgeCounts {
	idx := slotIndex(now)
	s := &w.ring[int(mod(idx, int64(len(w.ring))))]
	if s.index != idx {
		s.index, s.edges = idx, map[edgeKey]*edgeCounts{}
	}
	c := s.edges[key]
	if c == nil {
		c = &edgeCounts{}
		s.edges[key] = c
	}
	return c
}

func mod(a, n int64) int64 {
	m := a % n
	if m < 0 {
		m += n
	}
	return m
}

// request counts one HTTP or gRPC request. An error is a 5xx, or for gRPC a status other than
// OK (0): gRPC answers most failures with HTTP 200.
func (w *window) request(key edgeKey, code int, grpcStatus, policy string, durationMS float64, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.counts(key, now)
	c.requests++
	class := 0
	if code >= 100 && code < 600 {
		class = code / 100
	}
	c.codes[class]++
	if class == 5 || key.protocol == "grpc" && grpcStatus != "" && grpcStatus != "0" {
		c.errors++
	}
	c.durations[sort.SearchFloat64s(durationBuckets, durationMS)]++
	c.countPolicy(policy)
}

// tcp counts a TCP access log entry.
func (w *window) tcp(key edgeKey, opened, closed bool, sent, received uint64, policy string, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.counts(key, now)
	if opened {
		c.tcpOpened++
	}
	if closed {
		c.tcpClosed++
	}
	c.tcpSent += sent
	c.tcpReceived += received
	c.countPolicy(policy)
}

func (c *edgeCounts) countPolicy(policy string) {
	switch policy {
	case "mutual_tls":
		c.mutual++
		c.secured++
	case "none":
		c.secured++
	}
}

// totals sums each key's counts over the slots of the window ending at now, and returns the
// time they cover: from the start of the oldest slot in the window (or from when counting
// began, if later) to now.
func (w *window) totals(now time.Time) (map[edgeKey]*edgeCounts, time.Duration) {
	cur := slotIndex(now)
	oldest := cur - int64(len(w.ring)) + 1
	from := time.Unix(0, oldest*int64(graphSlot))
	if w.started.After(from) {
		from = w.started
	}
	out := map[edgeKey]*edgeCounts{}
	for i := range w.ring {
		w.sumSlot(i, oldest, cur, out)
	}
	return out, now.Sub(from)
}

// sumSlot adds slot i to out if it is in [oldest, cur]. The lock is held for one slot at a
// time, so reading a large window delays the access log streams by one slot's sum at most.
// (A read that spans a slot boundary may find the oldest slot already reused for the new one,
// and skips it: that one reading counts up to one slot less than the time it divides by.)
func (w *window) sumSlot(i int, oldest, cur int64, out map[edgeKey]*edgeCounts) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := &w.ring[i]
	if s.index < oldest || s.index > cur {
		return
	}
	for k, c := range s.edges {
		t := out[k]
		if t == nil {
			t = &edgeCounts{}
			out[k] = t
		}
		t.add(c)
	}
}

// bucketQuantile is Prometheus' histogram_quantile over one histogram: counts are per bucket
// (not cumulative) with upper bounds bounds, the last count the +Inf bucket. The quantile is
// interpolated linearly inside the bucket that holds its rank, the first bucket starting at
// 0; a rank in the +Inf bucket gives the highest finite bound. NaN when there is nothing.
func bucketQuantile(q float64, bounds []float64, counts []uint64) float64 {
	var total float64
	for _, c := range counts {
		total += float64(c)
	}
	if total == 0 || len(counts) != len(bounds)+1 {
		return math.NaN()
	}
	rank := q * total
	var below float64 // observations in the buckets before b
	for b, c := range counts {
		n := float64(c)
		if below+n < rank || n == 0 && b < len(bounds) {
			below += n
			continue
		}
		if b == len(bounds) {
			return bounds[len(bounds)-1]
		}
		if b == 0 && bounds[0] <= 0 {
			return bounds[0]
		}
		start := 0.0
		if b > 0 {
			start = bounds[b-1]
		}
		return start + (bounds[b]-start)*((rank-below)/n)
	}
	return bounds[len(bounds)-1]
}
