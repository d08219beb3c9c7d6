package fanout

import (
	"context"
	"maps"
	"slices"
	"strconv"

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

// CreateDeltaWatch implements cachev3.ConfigWatcher for delta streams.
func (s *Store) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &deltaWatch{req: trimDeltaRequest(req), sub: sub, ch: ch}
	switch {
	case req.GetErrorDetail() != nil:
		// Find the resources at fault and hold them; the change answers w with the rest.
		s.delta[w] = struct{}{}
		info, _ := takeNack(req)
		rejectedSeq := s.seq
		if seq, err := strconv.ParseUint(info.RejectedVersion, 10, 64); err == nil && seq <= s.seq {
			rejectedSeq = seq
		}
		s.nackLocked(req.GetNode().GetId(), req.GetErrorDetail().GetMessage(), version{}, rejectedSeq, nil, info.Sent)
		if _, waiting := s.delta[w]; !waiting {
			return func() {}, nil
		}
		delete(s.delta, w)
	case s.trial != nil && req.GetResponseNonce() != "" && s.trialAcceptedDeltaLocked(sub.ReturnedResources()):
		s.trialPassedLocked()
	}
	if resp := s.deltaAnswerLocked(w, nil, nil, false); resp != nil {
		w.ch <- resp
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
	consider := func(name string, force bool) {
		if !wants(name) {
			return
		}
		have, held := returned[name]
		e, exists := s.entries[name]
		exists = exists && e.res != nil
		switch {
		case exists && (force || !held || have != e.res.hash):
			send = append(send, name)
		case !exists && held && have != "":
			gone = append(gone, name)
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
	if len(send) == 0 && len(gone) == 0 {
		return nil
	}
	slices.Sort(send)
	slices.Sort(gone)
	next := maps.Clone(returned)
	if next == nil {
		next = map[string]string{}
	}
	resources := make([]*discoveryv3.Resource, len(send))
	for i, name := range send {
		r := s.entries[name].res
		resources[i] = r.delta
		next[name] = r.hash
	}
	for _, name := range gone {
		delete(next, name)
	}
	return &deltaResponse{
		req:       w.req,
		version:   strconv.FormatUint(s.seq, 10),
		resources: resources,
		removed:   gone,
		next:      next,
	}
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
