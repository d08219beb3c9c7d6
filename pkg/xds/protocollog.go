package xds

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/xds/fanout"
	"github.com/skiffmesh/skiff/pkg/xdslog"
)

// protocolLog is the live protocol log of ADS streams: every request a proxy sends and every
// response pilot sends it, as xdslog.Events, to the readers of /debug/xds_log that follow the
// proxy and, for proxies matching Options.XDSLogProxies, to pilot's debug log. With neither,
// a message costs one atomic load. A reader that does not keep up loses events, and is told
// how many; it never slows a stream. Secrets are shown by name and size: the log never holds
// a resource's bytes.
type protocolLog struct {
	glob string
	log  *slog.Logger

	following atomic.Int32
	mu        sync.Mutex
	followers map[*follower]struct{}
	closed    bool
}

// followerBuffer is how many events a reader may be behind before events are dropped.
const followerBuffer = 1024

// follower is one reader of /debug/xds_log.
type follower struct {
	proxy   string // a node ID or POD.NAMESPACE
	events  chan xdslog.Event
	dropped int64 // under protocolLog.mu
	done    chan struct{}
}

func newProtocolLog(glob string, log *slog.Logger) *protocolLog {
	return &protocolLog{glob: glob, log: log, followers: map[*follower]struct{}{}}
}

// active reports whether any message may be logged.
func (l *protocolLog) active() bool { return l.following.Load() > 0 || l.glob != "" }

func (l *protocolLog) follow(proxy string) (*follower, bool) {
	f := &follower{proxy: proxy, events: make(chan xdslog.Event, followerBuffer), done: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, false
	}
	l.followers[f] = struct{}{}
	l.following.Add(1)
	return f, true
}

func (l *protocolLog) unfollow(f *follower) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.followers[f]; ok {
		delete(l.followers, f)
		l.following.Add(-1)
	}
}

// close ends every reader's log: pilot is stopping.
func (l *protocolLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for f := range l.followers {
		close(f.done)
		delete(l.followers, f)
		l.following.Add(-1)
	}
}

// shortName is a node ID's POD.NAMESPACE, the other name readers and the glob may use.
func shortName(node string) string {
	if p, err := model.ParseNodeID(node); err == nil {
		return p.ID
	}
	return node
}

// wants reports whether a message of node would be logged: the debug log's glob matches it,
// or a reader follows it. Asked before an event is built, so that a reader following one
// proxy does not make every other proxy's messages be taken apart for nothing.
func (l *protocolLog) wants(node string) bool {
	short := shortName(node)
	if l.glob != "" && (globMatch(l.glob, node) || globMatch(l.glob, short)) {
		return true
	}
	if l.following.Load() == 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for f := range l.followers {
		if f.proxy == node || f.proxy == short {
			return true
		}
	}
	return false
}

// publish hands ev to the readers that follow its proxy and to the debug log.
func (l *protocolLog) publish(ev xdslog.Event) {
	short := shortName(ev.Proxy)
	if l.glob != "" && (globMatch(l.glob, ev.Proxy) || globMatch(l.glob, short)) {
		l.debug(ev)
	}
	if l.following.Load() == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for f := range l.followers {
		if f.proxy == ev.Proxy || f.proxy == short {
			f.offer(ev)
		}
	}
}

func globMatch(glob, s string) bool {
	ok, err := path.Match(glob, s)
	return ok && err == nil
}

// offer queues ev, or counts it dropped when the reader is behind; after a gap the reader is
// first told how many events it missed. The caller holds protocolLog.mu.
func (f *follower) offer(ev xdslog.Event) {
	if f.dropped > 0 {
		select {
		case f.events <- xdslog.Event{Time: ev.Time, Kind: xdslog.KindDropped, Proxy: ev.Proxy, Dropped: f.dropped}:
			f.dropped = 0
		default:
			f.dropped++
			return
		}
	}
	select {
	case f.events <- ev:
	default:
		f.dropped++
	}
}

// debug writes ev to pilot's log at debug level.
func (l *protocolLog) debug(ev xdslog.Event) {
	if !l.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []any{"proxy", ev.Proxy, "stream", ev.Stream, "protocol", ev.Protocol, "type", ev.Type}
	if ev.Status != "" {
		attrs = append(attrs, "status", ev.Status)
	}
	attrs = append(attrs, "version", ev.Version, "nonce", ev.Nonce, "count", ev.Count, "bytes", ev.Bytes)
	if len(ev.Resources) > 0 {
		attrs = append(attrs, "resources", ev.Resources)
	}
	if len(ev.Removed) > 0 {
		attrs = append(attrs, "removed", ev.Removed)
	}
	if ev.ErrorDetail != "" {
		attrs = append(attrs, "error_detail", ev.ErrorDetail)
	}
	l.log.Debug("xds "+ev.Kind, attrs...)
}

// requestStatus classifies a request by the xDS protocol's rules.
func requestStatus(nonce string, nack bool) string {
	switch {
	case nonce == "":
		return xdslog.StatusSubscribe
	case nack:
		return xdslog.StatusNACK
	}
	return xdslog.StatusACK
}

// resourceName reads a resource's name from its encoding without decoding it: every xDS
// resource type pilot serves has its name as field 1 (Cluster, Listener, RouteConfiguration,
// Secret, TypedExtensionConfig; ClusterLoadAssignment's cluster_name), and a secret's key
// material is never decoded for the log.
func resourceName(a *anypb.Any) string {
	b := a.GetValue()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ""
			}
			return string(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return ""
}

// namesSize is what names add to a request's encoding as field 3 (resource_names), for
// requests whose names were stashed before they were measured.
func namesSize(names []string) int {
	n := 0
	for _, s := range names {
		n += protowire.SizeTag(3) + protowire.SizeBytes(len(s))
	}
	return n
}

// nodeSize is what a request's node adds to its size. Request sizes leave it out: Envoy sends
// its node (tens of kilobytes with its extension list) in its first request only, and
// go-control-plane puts it back into every later one before pilot sees them.
func nodeSize(node *corev3.Node) int {
	if node == nil {
		return 0
	}
	return protowire.SizeTag(2) + protowire.SizeBytes(proto.Size(node))
}

// logRequest logs a state-of-the-world request of stream id.
func (t *tracker) logRequest(id int64, r *discoveryv3.DiscoveryRequest) {
	node, protocol, ok := t.loggedStream(id)
	if !ok {
		return
	}
	names, size := r.GetResourceNames(), proto.Size(r)-nodeSize(r.GetNode())
	if len(names) == 0 {
		names = fanout.StashedNames(r) // RDS and EDS names are taken out before the server sees them
		size += namesSize(names)
	}
	t.xlog.publish(xdslog.Event{Time: time.Now(), Kind: xdslog.KindRequest, Proxy: node, Stream: id, Protocol: protocol,
		Type: shortType(r.GetTypeUrl()), TypeURL: r.GetTypeUrl(), Status: requestStatus(r.GetResponseNonce(), r.GetErrorDetail() != nil),
		Version: r.GetVersionInfo(), Nonce: r.GetResponseNonce(), Resources: names, Count: len(names), Bytes: size,
		ErrorDetail: r.GetErrorDetail().GetMessage()})
}

// logResponse logs a state-of-the-world response about to be sent on stream id.
func (t *tracker) logResponse(id int64, resp *discoveryv3.DiscoveryResponse) {
	node, protocol, ok := t.loggedStream(id)
	if !ok {
		return
	}
	names := make([]string, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		names[i] = resourceName(a)
	}
	t.xlog.publish(xdslog.Event{Time: time.Now(), Kind: xdslog.KindResponse, Proxy: node, Stream: id, Protocol: protocol,
		Type: shortType(resp.GetTypeUrl()), TypeURL: resp.GetTypeUrl(), Version: resp.GetVersionInfo(), Nonce: resp.GetNonce(),
		Resources: names, Count: len(names), Bytes: proto.Size(resp)})
}

// logDeltaRequest logs a delta request of stream id (the tracker's key).
func (t *tracker) logDeltaRequest(id int64, r *discoveryv3.DeltaDiscoveryRequest) {
	node, protocol, ok := t.loggedStream(id)
	if !ok {
		return
	}
	t.xlog.publish(xdslog.Event{Time: time.Now(), Kind: xdslog.KindRequest, Proxy: node, Stream: -id, Protocol: protocol,
		Type: shortType(r.GetTypeUrl()), TypeURL: r.GetTypeUrl(), Status: requestStatus(r.GetResponseNonce(), r.GetErrorDetail() != nil),
		Nonce: r.GetResponseNonce(), Resources: r.GetResourceNamesSubscribe(), Count: len(r.GetResourceNamesSubscribe()),
		Removed: r.GetResourceNamesUnsubscribe(), Bytes: proto.Size(r) - nodeSize(r.GetNode()), ErrorDetail: r.GetErrorDetail().GetMessage()})
}

// logDeltaResponse logs a delta response about to be sent on stream id (the tracker's key).
func (t *tracker) logDeltaResponse(id int64, resp *discoveryv3.DeltaDiscoveryResponse) {
	node, protocol, ok := t.loggedStream(id)
	if !ok {
		return
	}
	names := make([]string, len(resp.GetResources()))
	for i, r := range resp.GetResources() {
		names[i] = r.GetName()
	}
	t.xlog.publish(xdslog.Event{Time: time.Now(), Kind: xdslog.KindResponse, Proxy: node, Stream: -id, Protocol: protocol,
		Type: shortType(resp.GetTypeUrl()), TypeURL: resp.GetTypeUrl(), Version: resp.GetSystemVersionInfo(), Nonce: resp.GetNonce(),
		Resources: names, Count: len(names), Removed: resp.GetRemovedResources(), Bytes: proto.Size(resp)})
}

// loggedStream is the node ID and protocol of stream id when its messages are logged: its
// node is known and the protocol log wants it.
func (t *tracker) loggedStream(id int64) (node, protocol string, ok bool) {
	t.mu.Lock()
	st, ok := t.streams[id]
	if ok {
		node, protocol = st.NodeID, st.Protocol
	}
	t.mu.Unlock()
	if !ok || node == "" || !t.xlog.wants(node) {
		return "", "", false
	}
	return node, protocol, true
}

// XDSLogHandler serves /debug/xds_log?proxy=ID: the live protocol log of the proxy's ADS
// stream(s) as newline-delimited JSON (xdslog.Event), from now until the reader goes away. The
// proxy (a node ID or POD.NAMESPACE) need not be connected yet. The first line, kind
// "following", says the log has started.
func (s *Server) XDSLogHandler(w http.ResponseWriter, r *http.Request) {
	proxy := r.URL.Query().Get("proxy")
	if proxy == "" {
		http.Error(w, "missing ?proxy=NODE_ID (or POD.NAMESPACE); /debug/syncz lists connected proxies", http.StatusBadRequest)
		return
	}
	f, ok := s.tracker.xlog.follow(proxy)
	if !ok {
		http.Error(w, "pilot is stopping", http.StatusServiceUnavailable)
		return
	}
	defer s.tracker.xlog.unfollow(f)
	w.Header().Set("Content-Type", "application/x-ndjson")
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	write := func(ev xdslog.Event) bool {
		if err := enc.Encode(ev); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if !write(xdslog.Event{Time: time.Now(), Kind: xdslog.KindFollowing, Proxy: proxy}) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-f.done:
			return
		case ev := <-f.events:
			if !write(ev) {
				return
			}
		}
	}
}
