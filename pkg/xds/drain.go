package xds

import (
	"io"
	"slices"
	"sync"
	"time"
	"weak"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/skiffmesh/skiff/pkg/xds/fanout"
)

// drainTimeout bounds how long a half-closed stream waits for its answers.
const drainTimeout = 10 * time.Second

// answeringStream lets a client half-close its side of an ADS stream right after its request
// (what a one-shot `grpcurl -d '{...}'` does) and still get the answer. go-control-plane ends
// the stream as soon as Recv reports EOF, before the cache has replied; this wrapper holds the
// EOF back until every type that was asked for with a new subscription has been answered, or
// drainTimeout passes. Envoy never half-closes, so it sees no difference.
type answeringStream struct {
	discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer

	mu       sync.Mutex
	awaiting map[string]bool // type URL → a response is owed
	answered chan struct{}   // signalled on every Send

	// stashed are the requests whose names were stashed (see stash) and may not have reached
	// the cache yet; only the goroutine that calls Recv touches it. The pointers are weak:
	// once the cache has a request, this must not keep its thousands of names alive.
	stashed []weak.Pointer[discoveryv3.DiscoveryRequest]
}

func newAnsweringStream(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) *answeringStream {
	return &answeringStream{
		AggregatedDiscoveryService_StreamAggregatedResourcesServer: s,
		awaiting: map[string]bool{},
		answered: make(chan struct{}, 1),
	}
}

// stash takes the names out of EDS and RDS requests before go-control-plane copies them into
// the stream's subscription (fanout.StashNames); the cache restores them. A request goes from
// here to the server's loop, which may still be busy with the one before: nothing stashed is
// dropped until the stream ends, except requests the cache has already restored (or that were
// collected), which are forgotten here as new ones arrive.
func (s *answeringStream) stash(req *discoveryv3.DiscoveryRequest) {
	if t := req.GetTypeUrl(); t != resourcev3.EndpointType && t != resourcev3.RouteType {
		return
	}
	s.stashed = slices.DeleteFunc(s.stashed, func(p weak.Pointer[discoveryv3.DiscoveryRequest]) bool {
		r := p.Value()
		return r == nil || !fanout.Stashed(r)
	})
	fanout.StashNames(req)
	s.stashed = append(s.stashed, weak.Make(req))
}

// dropStashed forgets the names of requests that never reached the cache: the server skipped
// them (a stale nonce) or the stream ended first.
func (s *answeringStream) dropStashed() {
	for _, p := range s.stashed {
		if req := p.Value(); req != nil {
			fanout.DropStashed(req)
		}
	}
	s.stashed = nil
}

func (s *answeringStream) Recv() (*discoveryv3.DiscoveryRequest, error) {
	req, err := s.AggregatedDiscoveryService_StreamAggregatedResourcesServer.Recv()
	switch {
	case err == io.EOF:
		s.waitForAnswers()
		s.dropStashed()
		return nil, err
	case err != nil:
		s.dropStashed()
		return nil, err
	}
	s.stash(req)
	// A request that is not an ACK/NACK of an earlier response opens a subscription, which
	// the server always answers.
	if req.GetResponseNonce() == "" {
		s.mu.Lock()
		s.awaiting[req.GetTypeUrl()] = true
		s.mu.Unlock()
	}
	return req, nil
}

func (s *answeringStream) Send(resp *discoveryv3.DiscoveryResponse) error {
	s.mu.Lock()
	delete(s.awaiting, resp.GetTypeUrl())
	s.mu.Unlock()
	select {
	case s.answered <- struct{}{}:
	default:
	}
	return s.AggregatedDiscoveryService_StreamAggregatedResourcesServer.Send(resp)
}

func (s *answeringStream) waitForAnswers() {
	deadline := time.NewTimer(drainTimeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		pending := len(s.awaiting)
		s.mu.Unlock()
		if pending == 0 {
			return
		}
		select {
		case <-s.answered:
		case <-deadline.C:
			return
		case <-s.Context().Done():
			return
		}
	}
}
