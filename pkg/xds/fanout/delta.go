package fanout

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"unsafe"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// deltaWatch is a delta request waiting for a change. The stream's subscription, which
// go-control-plane keeps, says what the client asks for and which version of each resource it
// holds (the hashes this store sent, or the client's initial_resource_versions).
type deltaWatch struct {
	req *discoveryv3.DeltaDiscoveryRequest // trimmed: see trimDeltaRequest
	sub cachev3.Subscription
	ch  chan cachev3.DeltaResponse
}

// node is the client's node ID, which keys its overlay (see reject.go).
func (w *deltaWatch) node() string { return w.req.GetNode().GetId() }

// CreateDeltaWatch implements cachev3.ConfigWatcher for delta streams.
func (s *Store) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &deltaWatch{req: trimDeltaRequest(req), sub: sub, ch: ch}
	if s.ackedCurrentLocked(req, sub) {
		s.delta[w] = struct{}{}
		return func() { s.cancelDelta(w) }, nil
	}
	if len(s.overlays) > 0 || req.GetErrorDetail() != nil {
		nack, msg := req.GetErrorDetail() != nil, req.GetErrorDetail().GetMessage()
		held := s.verdictLocked(w.node(), req.GetResponseNonce() != "", nack, msg)
		if !held && nack {
			info, _ := takeNack(req)
			rejectedSeq := s.seq
			if seq, err := strconv.ParseUint(info.RejectedVersion, 10, 64); err == nil && seq <= s.seq {
				rejectedSeq = seq
			}
			held = s.nackLocked(w.node(), msg, version{}, rejectedSeq, nil, info.Sent)
		}
		if ov := s.overlayLocked(w.node()); ov != nil {
			if !held && !nack {
				s.pruneLocked(ov, version{}, sub.ReturnedResources())
			}
			if ov = s.overlayLocked(w.node()); ov != nil && ov.trial != nil {
				ov.trial.sent = true
				if held {
					// A bisection step: every resource of the trial is sent as the step
					// serves it, even where the stream's record says the client holds that
					// version. The record is of what was sent, and the client rejected it.
					names := slices.Sorted(maps.Keys(ov.trial.want))
					if resp := s.deltaAnswerLocked(w, names, nil, true); resp != nil {
						w.ch <- resp
						return func() {}, nil
					}
				}
			}
		}
	}
	if resp := s.deltaAnswerLocked(w, nil, nil, false); resp != nil {
		w.ch <- resp
		return func() {}, nil
	}
	if req.GetResponseNonce() == "" && (w.sub.IsWildcard() || len(w.sub.ReturnedResources()) > 0) {
		// A stream's first request that lacks nothing (a proxy back with every resource at
		// the version it holds, after pilot ended its stream or restarted) is answered with
		// an empty response that names the store's version: the protocol's way to say "you
		// are current" (and, for a wildcard type, "there is nothing", which Envoy waits for
		// before it is ready). The stream's record (syncz, proxy-status, wait) starts from it.
		next := recordOf(w.sub)
		s.answeredLocked(next, s.overlayLocked(w.node()))
		w.ch <- &deltaResponse{req: w.req, version: strconv.FormatUint(s.seq, 10), next: next}
		return func() {}, nil
	}
	s.delta[w] = struct{}{}
	return func() { s.cancelDelta(w) }, nil
}

func (s *Store) cancelDelta(w *deltaWatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.delta, w)
}

// deltaAnswerLocked compares what w's client holds with the store. With changed and removed
// nil it looks at everything the client asks for (a new request); otherwise only at those
// names (a change). forced sends changed resources even where the client holds their version.
// It returns nil when the client lacks nothing.
func (s *Store) deltaAnswerLocked(w *deltaWatch, changed, removed []string, forced bool) cachev3.DeltaResponse {
	returned := w.sub.ReturnedResources()
	subscribed := w.sub.SubscribedResources()
	wildcard := w.sub.IsWildcard()
	wants := func(name string) bool {
		_, ok := subscribed[name]
		return wildcard || ok
	}
	var send []string
	var gone []string
	ov := s.overlayLocked(w.node()) // nil for every client that never NACKed
	consider := func(name string, force bool) {
		if !wants(name) {
			return
		}
		have, held := returned[name]
		var r *Resource
		if e, ok := s.entries[name]; ok {
			r = ov.serve(name, e)
		}
		switch {
		case r != nil && (force || !held || have != r.hash):
			if ov == nil || !slices.Contains(send, name) {
				send = append(send, name)
			}
		case r == nil && held && have != "":
			if ov == nil || !slices.Contains(gone, name) {
				gone = append(gone, name)
			}
		}
	}
	if changed == nil && removed == nil {
		if wildcard {
			for name := range s.entries {
				consider(name, false)
			}
		} else {
			for name := range subscribed {
				consider(name, false)
			}
		}
		for name := range returned {
			if _, ok := s.entries[name]; !ok {
				consider(name, false)
			}
		}
	} else {
		for _, name := range changed {
			consider(name, forced)
		}
		for _, name := range removed {
			consider(name, false)
		}
	}
	if ov != nil {
		for name := range ov.holds {
			consider(name, false)
		}
	}
	if len(send) == 0 && len(gone) == 0 {
		return nil
	}
	slices.Sort(send)
	slices.Sort(gone)
	next := recordOf(w.sub)
	resources := make([]*discoveryv3.Resource, len(send))
	for i, name := range send {
		r := ov.serve(name, s.entries[name])
		resources[i] = r.deltaMessage()
		next[name] = r.hash
	}
	for _, name := range gone {
		delete(next, name)
	}
	s.answeredLocked(next, ov)
	return &deltaResponse{
		req:       w.req,
		version:   strconv.FormatUint(s.seq, 10),
		resources: resources,
		removed:   gone,
		next:      next,
	}
}

// recordOf is the stream's record of the versions its client holds, which an answer updates
// in place and returns as the record after it. go-control-plane keeps the map a response
// returns as the stream's record once it has sent that response, and until then nothing else
// reads or writes it: the watch is answered once and forgotten under the store's lock, and the
// stream handles no request of the type before it has sent the response. A copy per answer
// made a change of one resource cost every delta stream a copy of its whole record, thousands
// of names (O(streams × names) per change, where a change must cost O(changed × streams)).
func recordOf(sub cachev3.Subscription) map[string]string {
	if r := sub.ReturnedResources(); r != nil {
		return r
	}
	return map[string]string{}
}

// ackedCurrentLocked reports whether req only acknowledges an answer this store gave at its
// current version, asking for nothing else: then its client lacks nothing, and the comparison
// of every name it holds with the store (thousands, for every stream that a change reached) is
// skipped. A delta client acknowledges with a new request, which go-control-plane makes a new
// watch over the same record. Whatever could make a client lack something since its answer
// moves the store's seq (a change, a resend, a rejected resource held or retried) or involves
// an overlay, and the answer was recorded only for a client without one.
func (s *Store) ackedCurrentLocked(req *cachev3.DeltaRequest, sub cachev3.Subscription) bool {
	id := recordID(sub.ReturnedResources())
	seq, ok := s.acked[id]
	if !ok {
		return false
	}
	delete(s.acked, id) // answered once: the next answer records it again
	return seq == s.seq && len(s.overlays) == 0 && req.GetErrorDetail() == nil &&
		req.GetResponseNonce() != "" && len(req.GetResourceNamesSubscribe()) == 0 &&
		len(req.GetResourceNamesUnsubscribe()) == 0
}

// answeredLocked notes that the stream whose record is next was answered at the store's
// current seq, for ackedCurrentLocked; not for a client served through an overlay, whose
// answers depend on more than the seq.
func (s *Store) answeredLocked(next map[string]string, ov *overlay) {
	if ov == nil {
		s.acked[recordID(next)] = s.seq
	}
}

// recordID is the address of a stream's record (see recordOf), which stays the same map for
// the stream's life. As a key of Store.acked it keeps the map alive, so no other map can take
// the address while it is recorded.
func recordID(record map[string]string) unsafe.Pointer {
	return reflect.ValueOf(record).UnsafePointer()
}

func trimDeltaRequest(req *discoveryv3.DeltaDiscoveryRequest) *discoveryv3.DeltaDiscoveryRequest {
	return &discoveryv3.DeltaDiscoveryRequest{
		Node:          req.GetNode(),
		TypeUrl:       req.GetTypeUrl(),
		ResponseNonce: req.GetResponseNonce(),
	}
}

// deltaResponse is a delta answer; its resources are shared with every other answer that
// sends them.
type deltaResponse struct {
	req       *discoveryv3.DeltaDiscoveryRequest
	version   string
	resources []*discoveryv3.Resource
	removed   []string
	next      map[string]string
}

var _ cachev3.DeltaResponse = (*deltaResponse)(nil)

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	return &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: r.version,
		Resources:         r.resources,
		RemovedResources:  r.removed,
		TypeUrl:           r.req.GetTypeUrl(),
	}, nil
}

func (r *deltaResponse) GetDeltaRequest() *discoveryv3.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                   { return r.version, nil }
func (r *deltaResponse) GetResponseVersion() string                          { return r.version }
func (r *deltaResponse) GetNextVersionMap() map[string]string                { return r.next }
func (r *deltaResponse) GetReturnedResources() map[string]string             { return r.next }
func (r *deltaResponse) GetContext() context.Context                         { return context.Background() }
