package xds

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/peer"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/xdslog"
)

// ProxyStatus is one connected proxy as /debug/syncz shows it.
type ProxyStatus struct {
	NodeID string `json:"proxy"`
	Class  string `json:"class"`
	// Config is the configuration key (translate.ConfigKey) the proxy's class is bound to:
	// proxies that show the same one share one translation.
	Config    string    `json:"config,omitempty"`
	Protocol  string    `json:"protocol"` // sotw or delta
	Address   string    `json:"address,omitempty"`
	Connected time.Time `json:"connected"`
	// Identity is the SPIFFE ID granted to the proxy's `default` SDS secret, or "refused:
	// REASON" when it failed the identity check; empty until it asks.
	Identity string                 `json:"identity,omitempty"`
	Types    map[string]*TypeStatus `json:"types"`
	// pendingSecret is this stream's entry in tracker.secretRequests.
	pendingSecret any
	// queued is how many responses wait in the stream's send queue (go-control-plane's one
	// channel per stream), nil until the cache first sees a watch of the stream; firstRequest
	// is its entry in tracker.queueRequests until then.
	queued       func() int
	firstRequest any
	// end ends the stream (see serveEndable); nil for streams served otherwise.
	end func()
}

// TypeStatus says what was sent to a proxy for one type and what the proxy made of it.
type TypeStatus struct {
	Sent      string    `json:"sent,omitempty"`
	SentNonce string    `json:"sent_nonce,omitempty"`
	SentAt    time.Time `json:"sent_at,omitzero"`
	Acked     string    `json:"acked,omitempty"`
	LastNack  *Nack     `json:"last_nack,omitempty"`
	// Rejected are the resources the proxy (or another proxy it shares its configuration
	// with) rejected, which pilot serves at their last accepted version until their
	// translation changes.
	Rejected []RejectedResource `json:"rejected,omitempty"`
	// nonces maps recent delta nonces to the version they carried, to name what an ACK acks,
	// and deltaSent to the resources they sent, to name what a NACK rejects.
	nonces    map[string]string
	deltaSent map[string][]*discoveryv3.Resource
	// answered is the nonce of the latest ACK or NACK: the response of SentNonce is answered
	// when they are equal.
	answered string
}

// Nack is the last rejection, with Envoy's own explanation.
type Nack struct {
	Version string    `json:"version"`
	Nonce   string    `json:"nonce"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// tracker follows every ADS stream through go-control-plane's callbacks: who is connected,
// which class each proxy belongs to, and the sent/ACKed/NACKed state per type.
type tracker struct {
	metrics *metrics
	log     *slog.Logger
	// ignoreNodeLabels: see Options.IgnoreNodeLabels.
	ignoreNodeLabels bool
	// onClassEmpty is called when the last proxy of a class disconnects, with mu held; it must
	// not call back into the tracker.
	onClassEmpty func(class string)
	// lastChange is when the configuration change being pushed reached pilot.
	lastChange func() time.Time
	// onStreamClosed is called for every closed stream, after its class bookkeeping.
	onStreamClosed func(id int64)
	// xlog is the protocol log (/debug/xds_log, --xds-log).
	xlog *protocolLog
	// onProxyGone is called, with mu held, when the last stream of a node ID closes; it must
	// not call back into the tracker.
	onProxyGone func(node, class string)

	mu      sync.Mutex
	streams map[int64]*ProxyStatus
	members map[string]int
	// nodes counts the open streams of each node ID.
	nodes map[string]int
	// secretRequests ties a Secret request, as the cache receives it, to its stream: the cache
	// interface carries no stream, and per-proxy secrets depend on the connection's address.
	// go-control-plane hands the same request to the callback and then to the cache, on the
	// stream's goroutine; each stream keeps at most one entry (pendingSecret).
	secretRequests map[any]int64
	// queueRequests ties a stream's first request to the stream, until the cache sees it with
	// the stream's send queue (see bindQueue).
	queueRequests map[any]int64
	// reconnecting counts, by node ID, proxies whose stream pilot ended because their class
	// changed configuration, and when, until they are back (see syncState).
	reconnecting map[string]reconnect
}

// reconnect is a node ID's proxies that pilot disconnected and that have not come back.
type reconnect struct {
	count int
	since time.Time
}

var _ serverv3.Callbacks = (*tracker)(nil)

func newTracker(m *metrics, log *slog.Logger, onClassEmpty func(string), lastChange func() time.Time) *tracker {
	return &tracker{metrics: m, log: log, onClassEmpty: onClassEmpty, lastChange: lastChange, xlog: newProtocolLog("", log),
		streams: map[int64]*ProxyStatus{}, members: map[string]int{}, nodes: map[string]int{}, secretRequests: map[any]int64{},
		queueRequests: map[any]int64{}, reconnecting: map[string]reconnect{}}
}

func (t *tracker) open(ctx context.Context, id int64, protocol string) error {
	st := &ProxyStatus{Protocol: protocol, Connected: time.Now(), Types: map[string]*TypeStatus{}, end: endStreamOf(ctx)}
	if p, ok := peer.FromContext(ctx); ok {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			st.Address = host
		}
	}
	t.mu.Lock()
	t.streams[id] = st
	t.mu.Unlock()
	return nil
}

// request records a request; the first one with a node joins the stream to its class. ACK and
// NACK are told apart by error_detail, as the xDS protocol defines.
func (t *tracker) request(id int64, node *corev3.Node, typeURL, version, nonce string, errorDetail string, nack bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[id]
	if !ok {
		return nil
	}
	if st.NodeID == "" {
		// Parsed as the cache parses it, so that both agree on the stream's class.
		proxy, err := proxyFromNode(node, !t.ignoreNodeLabels)
		if err != nil {
			t.metrics.badNodes.Inc()
			t.log.Warn("refusing ADS stream", "address", st.Address, "error", err)
			return err
		}
		st.NodeID, st.Class = proxy.NodeID, proxy.Class()
		t.members[st.Class]++
		t.nodes[st.NodeID]++
		t.back(st.NodeID)
		t.metrics.connected.Inc()
		t.log.Info("proxy connected", "proxy", st.NodeID, "class", st.Class, "protocol", st.Protocol, "address", st.Address)
	}
	ts := st.typeStatus(typeURL)
	if nonce == "" {
		return nil // a new subscription, not a reply to anything we sent
	}
	if st.Protocol == "delta" {
		version = ts.nonces[nonce]
	}
	ts.answered = nonce
	if nack {
		ts.LastNack = &Nack{Version: version, Nonce: nonce, Error: errorDetail, At: time.Now()}
		t.metrics.rejects.WithLabelValues(shortType(typeURL)).Inc()
		t.log.Warn("proxy rejected config", "proxy", st.NodeID, "type", shortType(typeURL), "version", version, "error", errorDetail)
		return nil
	}
	ts.Acked = version
	return nil
}

func (st *ProxyStatus) typeStatus(typeURL string) *TypeStatus {
	short := shortType(typeURL)
	ts, ok := st.Types[short]
	if !ok {
		ts = &TypeStatus{nonces: map[string]string{}}
		st.Types[short] = ts
	}
	return ts
}

// response records a response about to be sent. isUpdate is false for the answer to a new
// subscription, which is not part of a push and so not a convergence sample.
func (t *tracker) response(id int64, typeURL, version, nonce string, isUpdate bool) {
	short := shortType(typeURL)
	t.metrics.pushes.WithLabelValues(short).Inc()
	if isUpdate {
		t.metrics.convergence.WithLabelValues(short).Observe(time.Since(t.lastChange()).Seconds())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[id]
	if !ok {
		return
	}
	ts := st.typeStatus(typeURL)
	ts.Sent, ts.SentNonce, ts.SentAt = version, nonce, time.Now()
	if st.Protocol == "delta" {
		// Envoy acks each nonce at most once and in order; keep only a few.
		if len(ts.nonces) > 16 {
			clear(ts.nonces)
		}
		ts.nonces[nonce] = version
	}
}

func (t *tracker) closed(id int64) {
	t.mu.Lock()
	st, ok := t.streams[id]
	delete(t.streams, id)
	if ok && st.pendingSecret != nil {
		delete(t.secretRequests, st.pendingSecret)
	}
	if ok && st.firstRequest != nil {
		delete(t.queueRequests, st.firstRequest)
	}
	if ok && st.Class != "" {
		t.metrics.connected.Dec()
		if t.nodes[st.NodeID]--; t.nodes[st.NodeID] <= 0 {
			delete(t.nodes, st.NodeID)
			if t.onProxyGone != nil {
				t.onProxyGone(st.NodeID, st.Class)
			}
		}
		t.members[st.Class]--
		if t.members[st.Class] <= 0 {
			delete(t.members, st.Class)
			// Under the lock: a stream of the class that joins now (a proxy reconnecting while
			// its old stream winds down) is counted only after the class is forgotten, so its
			// watches find the class anew instead of one about to be dropped under them.
			t.onClassEmpty(st.Class)
		}
		t.log.Info("proxy disconnected", "proxy", st.NodeID)
	}
	t.mu.Unlock()
	if ok && st.NodeID != "" && t.xlog.active() {
		stream := id
		if st.Protocol == "delta" {
			stream = -id
		}
		t.xlog.publish(xdslog.Event{Time: time.Now(), Kind: xdslog.KindClosed, Proxy: st.NodeID, Stream: stream, Protocol: st.Protocol})
	}
	if t.onStreamClosed != nil {
		t.onStreamClosed(id)
	}
}

// noteSecretRequest remembers which stream a Secret request came from, until the cache takes it.
func (t *tracker) noteSecretRequest(id int64, req any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[id]
	if !ok {
		return
	}
	if st.pendingSecret != nil {
		delete(t.secretRequests, st.pendingSecret)
	}
	st.pendingSecret = req
	t.secretRequests[req] = id
}

// streamOfSecretRequest returns the stream and source address a Secret request came from.
func (t *tracker) streamOfSecretRequest(req any) (id int64, address string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id, ok = t.secretRequests[req]
	if !ok {
		return 0, "", false
	}
	delete(t.secretRequests, req)
	st, ok := t.streams[id]
	if !ok {
		return 0, "", false
	}
	st.pendingSecret = nil
	return id, st.Address, true
}

// setIdentity records the outcome of a stream's identity check.
func (t *tracker) setIdentity(id int64, identity string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st, ok := t.streams[id]; ok {
		st.Identity = identity
	}
}

// Statuses returns a copy of every connected proxy's status, sorted by node ID.
func (t *tracker) Statuses() []ProxyStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]ProxyStatus, 0, len(t.streams))
	for _, st := range t.streams {
		if st.NodeID == "" {
			continue
		}
		cp := *st
		cp.pendingSecret, cp.end, cp.queued, cp.firstRequest = nil, nil, nil, nil
		cp.Types = map[string]*TypeStatus{}
		for k, v := range st.Types {
			tv := *v
			if v.LastNack != nil {
				n := *v.LastNack
				tv.LastNack = &n
			}
			tv.nonces, tv.deltaSent = nil, nil
			cp.Types[k] = &tv
		}
		out = append(out, cp)
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

// ClassOf returns the class of a connected proxy, by full node ID or by its POD.NAMESPACE part.
func (t *tracker) ClassOf(proxyID string) (nodeID, class string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.streams {
		if st.NodeID == "" {
			continue
		}
		if st.NodeID == proxyID {
			return st.NodeID, st.Class, true
		}
		if p, err := model.ParseNodeID(st.NodeID); err == nil && p.ID == proxyID {
			return st.NodeID, st.Class, true
		}
	}
	return "", "", false
}

// disconnectClass ends every stream of class, so that its proxies reconnect; until they do,
// they count as not in sync.
func (t *tracker) disconnectClass(class string) {
	t.mu.Lock()
	var ends []func()
	for _, st := range t.streams {
		if st.Class == class && st.end != nil {
			ends = append(ends, st.end)
			r := t.reconnecting[st.NodeID]
			r.count++
			r.since = time.Now()
			t.reconnecting[st.NodeID] = r
		}
	}
	t.mu.Unlock()
	for _, end := range ends {
		end()
	}
}

// The go-control-plane callbacks.

func (t *tracker) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return t.open(ctx, id, "sotw")
}
func (t *tracker) OnStreamClosed(id int64, _ *corev3.Node) { t.closed(id) }
func (t *tracker) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return t.open(ctx, deltaKey(id), "delta")
}
func (t *tracker) OnDeltaStreamClosed(id int64, _ *corev3.Node) { t.closed(deltaKey(id)) }

// deltaKey keys a delta stream apart from state-of-the-world ones: go-control-plane numbers
// the two kinds with separate counters, so SotW stream 1 and delta stream 1 both exist. Mixing
// them up would merge two proxies' status and, worse, hand one proxy the other's certificate.
func deltaKey(id int64) int64 { return -id }

func (t *tracker) OnStreamRequest(id int64, r *discoveryv3.DiscoveryRequest) error {
	t.noteFirstRequest(id, r)
	if r.GetTypeUrl() == resourcev3.SecretType {
		t.noteSecretRequest(id, r)
	}
	if r.GetErrorDetail() != nil {
		t.noteNack(id, r, r.GetTypeUrl(), r.GetResponseNonce())
	}
	err := t.request(id, r.GetNode(), r.GetTypeUrl(), r.GetVersionInfo(), r.GetResponseNonce(), r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
	if t.xlog.active() {
		t.logRequest(id, r)
	}
	return err
}

func (t *tracker) OnStreamResponse(_ context.Context, id int64, req *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	t.response(id, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce(), req.GetResponseNonce() != "")
	if t.xlog.active() {
		t.logResponse(id, resp)
	}
}

func (t *tracker) OnStreamDeltaRequest(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
	t.noteFirstRequest(deltaKey(id), r)
	if r.GetTypeUrl() == resourcev3.SecretType {
		t.noteSecretRequest(deltaKey(id), r)
	}
	if r.GetErrorDetail() != nil {
		t.noteNack(deltaKey(id), r, r.GetTypeUrl(), r.GetResponseNonce())
	}
	err := t.request(deltaKey(id), r.GetNode(), r.GetTypeUrl(), "", r.GetResponseNonce(), r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
	if t.xlog.active() {
		t.logDeltaRequest(deltaKey(id), r)
	}
	return err
}

func (t *tracker) OnStreamDeltaResponse(id int64, req *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	t.response(deltaKey(id), resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce(), req.GetResponseNonce() != "")
	t.mu.Lock()
	if st, ok := t.streams[deltaKey(id)]; ok {
		st.typeStatus(resp.GetTypeUrl()).noteDeltaSent(resp.GetNonce(), resp.GetResources())
	}
	t.mu.Unlock()
	if t.xlog.active() {
		t.logDeltaResponse(deltaKey(id), resp)
	}
}

// Skiff serves no REST (polling) xDS.
func (t *tracker) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error { return nil }
func (t *tracker) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {
}
