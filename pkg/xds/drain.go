package xds

import (
	"io"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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
}

func newAnsweringStream(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) *answeringStream {
	return &answeringStream{
		AggregatedDiscoveryService_StreamAggregatedResourcesServer: s,
		awaiting: map[string]bool{},
		answered: make(chan struct{}, 1),
	}
}

func (s *answeringStream) Recv() (*discoveryv3.DiscoveryRequest, error) {
	req, err := s.AggregatedDiscoveryService_StreamAggregatedResourcesServer.Recv()
	switch {
	case err == io.EOF:
		s.waitForAnswers()
		return nil, err
	case err != nil:
		return nil, err
	}
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
