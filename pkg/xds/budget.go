package xds

import (
	"context"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// DefaultPushBudget is how many bytes of responses may be on their way to proxies at once.
const DefaultPushBudget = 256 << 20

// ackDeadline is how long a response counts against the budget without its ACK (or NACK): a
// proxy that never answers slows the others by this much at most.
const ackDeadline = 5 * time.Second

// pushBudget bounds the bytes of responses sent and not yet acknowledged, across all streams.
// A change that reaches every proxy wakes every stream at once; unbounded, thousands of
// megabyte responses would be written together and wait in socket buffers (pilot's, and on
// one host the proxies' too) far beyond the kernel's TCP memory, where segments are dropped and
// wait out TCP's retransmission backoff: seconds for some proxies. Streams wait in arrival
// order, so no proxy waits behind every other. A response larger than the budget goes alone.
type pushBudget struct {
	limit int64

	mu      sync.Mutex
	used    int64
	waiting []*budgetWaiter
}

type budgetWaiter struct {
	n       int64
	granted chan struct{}
}

func newPushBudget(limit int64) *pushBudget { return &pushBudget{limit: limit} }

// acquire waits until n bytes fit, or ctx ends (then it reports false).
func (b *pushBudget) acquire(ctx context.Context, n int64) bool {
	b.mu.Lock()
	if len(b.waiting) == 0 && b.fitsLocked(n) {
		b.used += n
		b.mu.Unlock()
		return true
	}
	w := &budgetWaiter{n: n, granted: make(chan struct{})}
	b.waiting = append(b.waiting, w)
	b.mu.Unlock()
	select {
	case <-w.granted:
		return true
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.granted:
			b.used -= n // granted as the stream ended: give it back
			b.grantLocked()
		default:
			for i, x := range b.waiting {
				if x == w {
					b.waiting = append(b.waiting[:i], b.waiting[i+1:]...)
					break
				}
			}
			b.grantLocked() // the head may have changed
		}
		return false
	}
}

func (b *pushBudget) fitsLocked(n int64) bool { return b.used == 0 || b.used+n <= b.limit }

// release returns n bytes and lets waiters in, in order.
func (b *pushBudget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	b.grantLocked()
}

func (b *pushBudget) grantLocked() {
	for len(b.waiting) > 0 && b.fitsLocked(b.waiting[0].n) {
		w := b.waiting[0]
		b.waiting = b.waiting[1:]
		b.used += w.n
		close(w.granted)
	}
}

// streamFlow is one stream's share of the budget: per type, the bytes of the response that
// awaits its ACK.
type streamFlow struct {
	budget *pushBudget

	mu   sync.Mutex
	held map[string]*heldBytes
}

type heldBytes struct {
	once sync.Once
	n    int64
	// mu orders the timer's assignment before its own callback reads it.
	mu    sync.Mutex
	timer *time.Timer
}

func newStreamFlow(budget *pushBudget) *streamFlow {
	return &streamFlow{budget: budget, held: map[string]*heldBytes{}}
}

func (h *heldBytes) release(b *pushBudget) {
	h.once.Do(func() {
		h.mu.Lock()
		timer := h.timer
		h.mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
		b.release(h.n)
	})
}

// send sends a response of n bytes for typeURL within the budget; the bytes are held until the
// stream's next request of the type (its ACK or NACK), ackDeadline, or the stream's end.
func (f *streamFlow) send(ctx context.Context, typeURL string, n int64, send func() error) error {
	if f == nil || f.budget == nil {
		return send()
	}
	if !f.budget.acquire(ctx, n) {
		return ctx.Err()
	}
	h := &heldBytes{n: n}
	h.mu.Lock()
	h.timer = time.AfterFunc(ackDeadline, func() { h.release(f.budget) })
	h.mu.Unlock()
	f.mu.Lock()
	if old := f.held[typeURL]; old != nil {
		old.release(f.budget)
	}
	f.held[typeURL] = h
	f.mu.Unlock()
	return send()
}

// answered releases what typeURL holds: the stream sent a request of that type.
func (f *streamFlow) answered(typeURL string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	h := f.held[typeURL]
	delete(f.held, typeURL)
	f.mu.Unlock()
	if h != nil {
		h.release(f.budget)
	}
}

// closed releases everything the stream holds.
func (f *streamFlow) closed() {
	if f == nil {
		return
	}
	f.mu.Lock()
	held := f.held
	f.held = map[string]*heldBytes{}
	f.mu.Unlock()
	for _, h := range held {
		h.release(f.budget)
	}
}

// Send sends a state-of-the-world response within the push budget.
func (s sotwEndable) Send(resp *discoveryv3.DiscoveryResponse) error {
	var n int64
	for _, r := range resp.GetResources() {
		n += int64(len(r.GetValue()))
	}
	return s.flow.send(s.ctx, resp.GetTypeUrl(), n, func() error {
		return s.guard.send(resp.GetTypeUrl(), n, func() error {
			return s.AggregatedDiscoveryService_StreamAggregatedResourcesServer.Send(resp)
		})
	})
}

// Recv releases the budget held for the request's type.
func (s sotwEndable) Recv() (*discoveryv3.DiscoveryRequest, error) {
	req, err := s.AggregatedDiscoveryService_StreamAggregatedResourcesServer.Recv()
	if err != nil {
		s.guard.recvFailed(err)
		s.flow.closed()
		return nil, err
	}
	if err := s.guard.request(req, req.GetTypeUrl(), req.GetNode().GetId()); err != nil {
		s.flow.closed()
		return nil, err
	}
	s.flow.answered(req.GetTypeUrl())
	return req, nil
}

// Send sends a delta response within the push budget.
func (s deltaEndable) Send(resp *discoveryv3.DeltaDiscoveryResponse) error {
	var n int64
	for _, r := range resp.GetResources() {
		n += int64(len(r.GetResource().GetValue()))
	}
	return s.flow.send(s.ctx, resp.GetTypeUrl(), n, func() error {
		return s.guard.send(resp.GetTypeUrl(), n, func() error {
			return s.AggregatedDiscoveryService_DeltaAggregatedResourcesServer.Send(resp)
		})
	})
}

// Recv releases the budget held for the request's type.
func (s deltaEndable) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) {
	req, err := s.AggregatedDiscoveryService_DeltaAggregatedResourcesServer.Recv()
	if err != nil {
		s.guard.recvFailed(err)
		s.flow.closed()
		return nil, err
	}
	if err := s.guard.deltaRequest(req); err != nil {
		s.flow.closed()
		return nil, err
	}
	s.flow.answered(req.GetTypeUrl())
	return req, nil
}
