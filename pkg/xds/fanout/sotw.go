package fanout

import (
	"context"
	"slices"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// sotwWatch is a state-of-the-world request waiting for a change.
type sotwWatch struct {
	req  *discoveryv3.DiscoveryRequest // trimmed: see trimRequest
	ch   chan cachev3.Response
	set  *nameSet // nil for wildcard types
	from version  // what the client holds
	// nack: the client rejected the last answer. Unless the fault is found (then the client
	// is served apart), it is answered on the next change (or after nackRetry), not now:
	// answering at once would send what it just rejected, and it would reject it again, in a
	// loop.
	nack bool
}

// node is the client's node ID, which keys its overlay (see reject.go).
func (w *sotwWatch) node() string { return w.req.GetNode().GetId() }

// CreateWatch implements cachev3.ConfigWatcher for state-of-the-world streams: it answers at
// once when the client lacks something it asks for, and otherwise parks the request until a
// change concerns it. A NACK is traced to the resources at fault (reject.go), which the client
// is then served at the version it accepted, with the rest of the answer.
func (s *Store) CreateWatch(req *cachev3.Request, _ cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &sotwWatch{
		req:  trimRequest(req),
		ch:   ch,
		from: s.parseVersion(req.GetVersionInfo()),
		nack: req.GetErrorDetail() != nil,
	}
	if !s.wildcard {
		w.set = s.sets.intern(req.GetResourceNames())
	}
	held := false // the client is served apart, after a NACK or in a bisection
	if len(s.overlays) > 0 || w.nack {
		held = s.verdictLocked(w.node(), req.GetResponseNonce() != "", w.nack, req.GetErrorDetail().GetMessage())
		if !held && w.nack {
			info, _ := takeNack(req)
			rejectedSeq := s.seq
			if v := s.parseVersion(info.RejectedVersion); v.ours {
				rejectedSeq = v.seq
			}
			held = s.nackLocked(w.node(), req.GetErrorDetail().GetMessage(), w.from, rejectedSeq, w.set, nil)
		}
		if ov := s.overlayLocked(w.node()); ov != nil {
			if !held && !w.nack {
				s.pruneLocked(ov, w.from, nil)
			}
			if ov = s.overlayLocked(w.node()); ov != nil && (held || !w.nack) {
				// Answered with what it lacks as it is served, bisection steps included.
				if held || !s.wildcard || !w.from.ours || w.from.seq != s.seq {
					if res := s.overlayAnswerLocked(ov, w.set, w.from, nil); s.wildcard || len(res) > 0 {
						if ov.trial != nil {
							ov.trial.sent = true
						}
						s.respondLocked(w, res)
						return func() {}, nil
					}
				}
				s.sotw[w] = struct{}{}
				return func() { s.cancelSotw(w) }, nil
			}
		}
	}
	if !w.nack {
		var res []*anypb.Any
		// A wildcard client that holds another version than the store's is told the store's
		// whole state even when that is nothing: a client new to the store (its first request,
		// or a proxy whose class moved to a configuration without listeners) holds what it had
		// before, which only an answer removes, and Envoy waits for a first answer before it
		// is ready.
		//
		// A stream's first request (no response nonce) is answered even when the client holds
		// the store's version already, as istiod answers every new connection: a proxy that
		// pilot disconnected can come back holding it, and without an answer its new stream
		// would show nothing sent (syncz, proxy-status, wait) while it is in sync. Envoy
		// ignores an update identical to what it holds.
		first := req.GetResponseNonce() == ""
		from := w.from
		if first {
			from = version{}
		}
		lacking := false
		switch {
		case !s.wildcard:
			res = s.answerLocked(w.set, from)
			lacking = len(res) > 0
		case first || !w.from.ours || w.from.seq != s.seq:
			res = s.allLocked()
			lacking = true
		}
		if lacking {
			s.respondLocked(w, res)
			return func() {}, nil
		}
	}
	s.sotw[w] = struct{}{}
	if w.nack {
		// Nothing was found at fault (the rejected answer changed nothing the client had
		// accepted): the rejection may be transient (a port briefly in use), and Envoy tries
		// again only what it is sent again, so without a change the rejected answer is sent
		// once more after nackRetry. That is one retry per interval, not the loop an immediate
		// answer would be.
		time.AfterFunc(nackRetry, func() { s.retryRejected(w) })
	}
	return func() { s.cancelSotw(w) }, nil
}

// nackRetry is how long a NACKed answer waits for a change before it is sent again (a
// variable for tests).
var nackRetry = 5 * time.Second

// retryRejected answers w again if it is still waiting since its NACK.
func (s *Store) retryRejected(w *sotwWatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, waiting := s.sotw[w]; !waiting {
		return
	}
	var res []*anypb.Any
	switch ov := s.overlayLocked(w.node()); {
	case ov != nil:
		res = s.overlayAnswerLocked(ov, w.set, w.from, nil)
	case s.wildcard:
		res = s.allLocked()
	default:
		res = s.answerLocked(w.set, w.from)
	}
	if len(res) > 0 {
		s.respondLocked(w, res)
	}
}

func (s *Store) cancelSotw(w *sotwWatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sotw, w)
}

// answerLocked is what a client that holds from lacks of set: the resources that changed since
// from, and all those it did not ask for then. Resources that do not exist are not sent; they
// are when they appear.
func (s *Store) answerLocked(set *nameSet, from version) []*anypb.Any {
	key := answerKey{set: set, from: from}
	if res, ok := s.answers[key]; ok {
		return res
	}
	var before *nameSet
	if from.ours && from.set != 0 {
		before = s.sets.byID[from.set] // nil if forgotten: then everything is sent
	}
	var lacking []string
	for name := range set.names {
		e, ok := s.entries[name]
		if !ok || e.res == nil {
			continue
		}
		if !from.ours || before == nil || e.seq > from.seq || !before.has(name) {
			lacking = append(lacking, name)
		}
	}
	slices.Sort(lacking)
	rs := make([]*Resource, len(lacking))
	for i, name := range lacking {
		rs[i] = s.entries[name].res
	}
	res := s.shared.share(rs)
	s.answers[key] = res
	return res
}

// respondLocked sends w its answer. The server's response channel has room for one response
// per type and a watch is answered once, so this never blocks.
func (s *Store) respondLocked(w *sotwWatch, res []*anypb.Any) {
	delete(s.sotw, w)
	v := version{ours: true, seq: s.seq}
	if w.set != nil {
		v.set = w.set.id
	}
	w.ch <- &sotwResponse{req: w.req, version: v.format(s.prefix), resources: res}
}

// trimRequest keeps what the server and its callbacks read from a request once it is
// answered. The resource names, thousands for EDS, are not kept: a parked watch holds its
// interned name set instead.
func trimRequest(req *discoveryv3.DiscoveryRequest) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{
		VersionInfo:   req.GetVersionInfo(),
		Node:          req.GetNode(),
		TypeUrl:       req.GetTypeUrl(),
		ResponseNonce: req.GetResponseNonce(),
	}
}

// sotwResponse is a state-of-the-world answer. Its resources are shared with every other
// answer that sends them; the DiscoveryResponse is built for each send because the server
// writes the stream's nonce into it.
type sotwResponse struct {
	req       *discoveryv3.DiscoveryRequest
	version   string
	resources []*anypb.Any
}

var _ cachev3.Response = (*sotwResponse)(nil)

func (r *sotwResponse) GetDiscoveryResponse() (*discoveryv3.DiscoveryResponse, error) {
	return &discoveryv3.DiscoveryResponse{
		VersionInfo: r.version,
		Resources:   r.resources,
		TypeUrl:     r.req.GetTypeUrl(),
	}, nil
}

func (r *sotwResponse) GetRequest() *discoveryv3.DiscoveryRequest { return r.req }
func (r *sotwResponse) GetVersion() (string, error)               { return r.version, nil }
func (r *sotwResponse) GetResponseVersion() string                { return r.version }
func (r *sotwResponse) GetContext() context.Context               { return context.Background() }

// GetReturnedResources is nil: the version says what the client holds. The server only stores
// it in the stream's subscription, which this cache never reads for state of the world.
func (r *sotwResponse) GetReturnedResources() map[string]string { return nil }
