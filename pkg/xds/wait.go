package xds

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
)

// SyncReport says whether every connected proxy holds the configuration of the latest
// snapshot pilot loaded, as /debug/wait answers: each response pilot has sent has been
// answered (ACKed, or NACKed, which Rejected lists, as it lists the resources pilot holds back
// at a proxy's accepted version after a NACK: a change that did not reach it), nothing waits
// to be sent, and no push is under way.
type SyncReport struct {
	Synced bool `json:"synced"`
	// Proxies is the number of connected proxies.
	Proxies  int             `json:"proxies"`
	Pending  []SyncPending   `json:"pending,omitempty"`
	Rejected []SyncRejection `json:"rejected,omitempty"`
}

// SyncPending is one thing a wait is still waiting for.
type SyncPending struct {
	Proxy      string `json:"proxy,omitempty"`
	Type       string `json:"type,omitempty"`
	WaitingFor string `json:"waiting_for"`
}

// SyncRejection is a proxy that rejected the latest response of a type, with Envoy's reason.
type SyncRejection struct {
	Proxy   string `json:"proxy"`
	Type    string `json:"type"`
	Version string `json:"version"`
	Error   string `json:"error"`
}

// reconnectGrace is how long a proxy that pilot disconnected (its class changed
// configuration) counts as on its way back: Envoy reconnects within a second or two, and a
// proxy stopped meanwhile must not hold every wait up for good.
const reconnectGrace = 30 * time.Second

// waitPoll is how often WaitSynced looks at the streams. A look is a walk over the connected
// streams under the tracker's lock, cheap next to what a push costs.
const waitPoll = 10 * time.Millisecond

// WaitCondition is a change a wait waits for: it reports whether snap holds it and, when not,
// what is missing ("VirtualService bookinfo/reviews at resourceVersion 1234").
type WaitCondition func(snap *model.Snapshot) (holds bool, missing string)

// SyncState reports whether every connected proxy is in sync with the latest snapshot.
func (s *Server) SyncState() SyncReport { return s.syncState(nil) }

// syncState is SyncState, and when cond is not nil, whether the latest snapshot holds cond's
// change: once it does and the proxies are in sync, every proxy the change affects has
// answered a push that includes it.
func (s *Server) syncState(cond WaitCondition) SyncReport {
	var report SyncReport
	s.mu.Lock()
	snap := s.snap
	switch {
	case s.snap == nil:
		report.Pending = append(report.Pending, SyncPending{WaitingFor: "the first configuration"})
	case s.pushing || s.pushed != s.snap || s.pending != pushNone || len(s.newClasses) > 0:
		report.Pending = append(report.Pending, SyncPending{WaitingFor: "the push of the latest configuration"})
	}
	s.mu.Unlock()
	// Outside the lock: the push loop takes it, and a condition may walk the configuration.
	if cond != nil && snap != nil {
		if holds, missing := cond(snap); !holds {
			report.Pending = append(report.Pending, SyncPending{WaitingFor: "the configuration to hold " + missing})
		}
	}
	bound := func(class string) bool { return s.cache.KeyOf(class) != "" }
	proxies, pending, rejected := s.tracker.syncState(bound, time.Now())
	report.Proxies = proxies
	report.Pending = append(report.Pending, pending...)
	// A proxy whose latest answer of a type is a NACK is reported by that NACK; the resources
	// held for it after it ACKed are reported by name.
	nacked := map[[2]string]bool{}
	for _, r := range rejected {
		nacked[[2]string{r.Proxy, r.Type}] = true
	}
	for _, r := range s.cache.heldRejections() {
		if !nacked[[2]string{r.Proxy, r.Type}] {
			rejected = append(rejected, r)
		}
	}
	report.Rejected = rejected
	report.Synced = len(report.Pending) == 0
	return report
}

// WaitSynced returns once every connected proxy is in sync with the latest snapshot (see
// SyncReport), or with ctx's error and what is still pending. The state must be seen twice
// in a row, a poll apart: go-control-plane takes a response off a stream's queue a moment
// before it reports sending it, and a single look in that moment would see nothing in flight.
func (s *Server) WaitSynced(ctx context.Context) (SyncReport, error) {
	return s.WaitSyncedWith(ctx, nil)
}

// WaitSyncedWith is WaitSynced for a change: it returns once the latest snapshot holds cond's
// change and every connected proxy has answered its push (nil cond: WaitSynced).
func (s *Server) WaitSyncedWith(ctx context.Context, cond WaitCondition) (SyncReport, error) {
	tick := time.NewTicker(waitPoll)
	defer tick.Stop()
	var seen bool
	for {
		report := s.syncState(cond)
		if report.Synced && seen {
			return report, nil
		}
		seen = report.Synced
		select {
		case <-ctx.Done():
			return report, fmt.Errorf("proxies not in sync: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// syncState is the streams' part of SyncState. A proxy is in sync when its class has its
// configuration, its send queue is empty, it has asked for listeners (an Envoy asks for them
// once its clusters are warm, so one that has not is still starting), and its latest response
// of every type is answered. Proxies that pilot disconnected count until they are back.
func (t *tracker) syncState(bound func(class string) bool, now time.Time) (proxies int, pending []SyncPending, rejected []SyncRejection) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.streams {
		if st.NodeID == "" {
			continue
		}
		proxies++
		if !bound(st.Class) {
			pending = append(pending, SyncPending{Proxy: st.NodeID, WaitingFor: "its first configuration"})
		}
		if st.queued != nil {
			if n := st.queued(); n > 0 {
				pending = append(pending, SyncPending{Proxy: st.NodeID, WaitingFor: fmt.Sprintf("%d responses to be sent", n)})
			}
		}
		if _, ok := st.Types["lds"]; !ok {
			pending = append(pending, SyncPending{Proxy: st.NodeID, Type: "lds", WaitingFor: "the proxy to ask for listeners"})
		}
		for _, typ := range slices.Sorted(maps.Keys(st.Types)) {
			ts := st.Types[typ]
			switch {
			case ts.SentNonce == "":
				// Nothing sent yet: what it asked for does not exist, or is refused (SDS).
			case ts.answered != ts.SentNonce:
				pending = append(pending, SyncPending{Proxy: st.NodeID, Type: typ, WaitingFor: "an ACK of version " + ts.Sent})
			case ts.LastNack != nil && ts.LastNack.Nonce == ts.SentNonce:
				rejected = append(rejected, SyncRejection{Proxy: st.NodeID, Type: typ, Version: ts.LastNack.Version, Error: ts.LastNack.Error})
			}
		}
	}
	for node, r := range t.reconnecting {
		if now.Sub(r.since) > reconnectGrace {
			delete(t.reconnecting, node)
			continue
		}
		pending = append(pending, SyncPending{Proxy: node, WaitingFor: "the proxy to reconnect (pilot ended its stream: its configuration class changed)"})
	}
	slices.SortFunc(pending, func(a, b SyncPending) int {
		return strings.Compare(a.Proxy+"\x00"+a.Type, b.Proxy+"\x00"+b.Type)
	})
	slices.SortFunc(rejected, func(a, b SyncRejection) int {
		return strings.Compare(a.Proxy+"\x00"+a.Type, b.Proxy+"\x00"+b.Type)
	})
	return proxies, pending, rejected
}

// back records that a proxy of node has connected again after disconnectClass.
func (t *tracker) back(node string) {
	r, ok := t.reconnecting[node]
	if !ok {
		return
	}
	if r.count--; r.count <= 0 {
		delete(t.reconnecting, node)
		return
	}
	t.reconnecting[node] = r
}

// noteFirstRequest remembers a stream's first request until the cache sees it (bindQueue).
func (t *tracker) noteFirstRequest(id int64, req any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[id]
	if !ok || st.queued != nil || st.firstRequest != nil {
		return
	}
	st.firstRequest = req
	t.queueRequests[req] = id
}

// bindQueue gives the stream that sent req the length of its send queue. The cache calls it
// for every watch; only a stream's first request is looked for.
func (t *tracker) bindQueue(req any, queued func() int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id, ok := t.queueRequests[req]
	if !ok {
		return
	}
	delete(t.queueRequests, req)
	if st, ok := t.streams[id]; ok {
		st.queued, st.firstRequest = queued, nil
	}
}

// ObjectCondition is the WaitCondition of one object: snap holds the object kind
// namespace/name (kind as in YAML, case-insensitive) and, when resourceVersion is not empty, at
// that resourceVersion or a later one (Kubernetes' resourceVersions are etcd revisions: a later
// write has a larger one). deleted waits for the object to be gone instead.
func ObjectCondition(kind, namespace, name, resourceVersion string, deleted bool) (WaitCondition, error) {
	var want uint64
	if resourceVersion != "" {
		v, err := strconv.ParseUint(resourceVersion, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("resourceVersion %q: want a Kubernetes resourceVersion (a number): %w", resourceVersion, err)
		}
		want = v
	}
	what := fmt.Sprintf("%s %s/%s", kind, namespace, name)
	if deleted {
		what = "no " + what
	} else if resourceVersion != "" {
		what += " at resourceVersion " + resourceVersion
	}
	// A wait polls every waitPoll: the answer is kept for as long as the snapshot is the same.
	var (
		mu       sync.Mutex
		lastSnap *model.Snapshot
		lastHold bool
	)
	holds := func(snap *model.Snapshot) bool {
		if snap.Config == nil {
			return false
		}
		for _, o := range snap.Config.Objects() {
			if !strings.EqualFold(config.KindOf(o), kind) || o.GetNamespace() != namespace || o.GetName() != name {
				continue
			}
			if deleted {
				return false
			}
			if want == 0 {
				return true
			}
			got, err := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
			return err == nil && got >= want
		}
		return deleted
	}
	return func(snap *model.Snapshot) (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		if snap != lastSnap {
			lastSnap, lastHold = snap, holds(snap)
		}
		return lastHold, what
	}, nil
}
