package xds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/xds/fanout"
)

// Pilot serves any client that can open a TCP connection to its plaintext port, so a client
// that is broken, stuck or hostile must cost it a bounded amount and never slow the other
// proxies. What bounds each case:
//
//   - A client that never reads its responses. Each stream has its own goroutine, and the
//     caches hand it at most one pending response per type (go-control-plane's per-stream
//     channel, which the fanout stores never block on), so the push loop and other streams
//     never wait for it. At the HTTP/2 level, a client that stops reading (its application,
//     or its whole socket) lets its stream's flow-control window fill; grpc-go then blocks the
//     stream's Send once its 64 kB write quota is used up. A Send that does not return within
//     the send timeout ends the stream with ResourceExhausted. The bytes it was sending are
//     the resources' shared encodings, so a stuck stream holds no copy of them, only the
//     response's framing around them (about 130 bytes per resource: 0.4 MB for 3,000
//     clusters), and its share of the push budget is given back after ackDeadline like any
//     unanswered response.
//     A response that fits in what is left of the window and the quota is taken without
//     blocking, so a stream whose last response did is closed instead when that response has
//     not been answered (ACKed or NACKed) within the same timeout, with DeadlineExceeded.
//     HTTP/2 sends the status after the data still queued on the stream, so the client
//     reads it only if it ever reads again; pilot's goroutines and watches for the stream end
//     at once either way.
//   - Requests larger than gRPC's receive limit (4 MB) are refused by gRPC, from their length
//     prefix, with ResourceExhausted. Undecodable requests and requests that name more than
//     fanout.MaxRequestNames resources (enforced while decoding, before the names are
//     allocated) end the stream with InvalidArgument or ResourceExhausted and a message that
//     names the problem, where gRPC alone would say Internal.
//   - Unknown type URLs are refused by the cache with Unimplemented; malformed node IDs by
//     the tracker with InvalidArgument.
//   - Streams beyond Options.MaxStreams are refused with ResourceExhausted before any
//     go-control-plane state exists for them.
//   - A node ID that claims another workload is served that workload's configuration, which
//     any proxy may read, but never its certificate: see checkIdentity.

// DefaultSendTimeout is how long a response may take to be handed to the connection before
// its stream is closed: long enough for a slow link to carry a megabyte of routes, short
// enough that a stuck proxy's stream and its watches do not linger.
const DefaultSendTimeout = 30 * time.Second

// DefaultMaxStreams bounds the ADS streams open at once: ten times the 2,000 proxies the scale
// table measures, and few enough that their goroutines and buffers fit in a few GiB.
const DefaultMaxStreams = 20000

// Reasons a stream was closed or refused, the values of skiff_xds_streams_closed_total's
// reason label.
const (
	closeSendTimeout    = "send_timeout"
	closeUnanswered     = "unanswered"
	closeUndecodable    = "undecodable"
	closeTooLarge       = "too_large"
	closeTooManyNames   = "too_many_names"
	closeTooManyStreams = "too_many_streams"
)

// refusalLogInterval rate-limits the log of refused streams: a flood of them is one line per
// interval with a count, not one line each.
const refusalLogInterval = 10 * time.Second

// guard admits ADS streams and closes those that misbehave (see above).
type guard struct {
	sendTimeout time.Duration // zero or less: Sends are not timed
	maxStreams  int64
	log         *slog.Logger
	closed      *prometheus.CounterVec

	open atomic.Int64

	mu             sync.Mutex
	lastRefusalLog time.Time
	refusedSince   int
}

func newGuard(sendTimeout time.Duration, maxStreams int, log *slog.Logger, reg prometheus.Registerer) *guard {
	if sendTimeout == 0 {
		sendTimeout = DefaultSendTimeout
	}
	if maxStreams <= 0 {
		maxStreams = DefaultMaxStreams
	}
	g := &guard{
		sendTimeout: sendTimeout,
		maxStreams:  int64(maxStreams),
		log:         log,
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_xds_streams_closed_total",
			Help: "ADS streams pilot closed or refused because of the client: send_timeout and unanswered (it did not read its responses), undecodable, too_large, too_many_names (its requests), too_many_streams (refused at open).",
		}, []string{"reason"}),
	}
	reg.MustRegister(g.closed)
	return g
}

// admit counts a new stream in, or refuses it when MaxStreams are open. The caller must call
// the stream guard's done when the stream ends.
func (g *guard) admit(ctx context.Context) (*streamGuard, error) {
	if n := g.open.Add(1); n > g.maxStreams {
		g.open.Add(-1)
		g.closed.WithLabelValues(closeTooManyStreams).Inc()
		g.noteRefusal(peerAddress(ctx))
		return nil, status.Errorf(codes.ResourceExhausted, "pilot serves at most %d ADS streams and that many are open; retry later", g.maxStreams)
	}
	return &streamGuard{guard: g, address: peerAddress(ctx)}, nil
}

func (g *guard) noteRefusal(address string) {
	g.mu.Lock()
	g.refusedSince++
	if time.Since(g.lastRefusalLog) < refusalLogInterval {
		g.mu.Unlock()
		return
	}
	n := g.refusedSince
	g.refusedSince, g.lastRefusalLog = 0, time.Now()
	g.mu.Unlock()
	g.log.Warn("refusing ADS streams: too many open", "limit", g.maxStreams, "refused", n, "last_address", address)
}

func peerAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// streamGuard is one admitted stream's watch: the first failure ends the stream with its status.
type streamGuard struct {
	guard   *guard
	address string

	mu   sync.Mutex
	end  func() // ends the stream (serveEndable's cancel)
	err  error  // the status the stream ends with, once it failed
	node string // the node ID of the first request, for the log

	// unanswered holds, per type, the timer of the response the proxy has neither ACKed nor
	// NACKed yet; done is set when the stream has ended.
	unanswered map[string]*time.Timer
	ended      bool

	// deltaNames counts, per type, the names a delta stream is subscribed to: unlike a
	// state-of-the-world request, a delta request adds to what the stream holds. Only the
	// goroutine that calls Recv touches it.
	deltaNames map[string]int
}

// done counts the stream out.
func (sg *streamGuard) done() {
	if sg == nil {
		return
	}
	sg.guard.open.Add(-1)
	sg.mu.Lock()
	sg.ended = true
	for _, t := range sg.unanswered {
		t.Stop()
	}
	sg.mu.Unlock()
}

// bind gives the guard the function that ends its stream.
func (sg *streamGuard) bind(end func()) {
	if sg == nil {
		return
	}
	sg.mu.Lock()
	sg.end = end
	sg.mu.Unlock()
}

// failure is the status the stream must end with, nil while it has not failed.
func (sg *streamGuard) failure() error {
	if sg == nil {
		return nil
	}
	sg.mu.Lock()
	defer sg.mu.Unlock()
	return sg.err
}

// fail ends the stream with err, once; reason labels the metric.
func (sg *streamGuard) fail(reason string, err error) {
	sg.mu.Lock()
	if sg.err != nil || sg.ended {
		sg.mu.Unlock()
		return
	}
	sg.err = err
	end, node := sg.end, sg.node
	sg.mu.Unlock()
	sg.guard.closed.WithLabelValues(reason).Inc()
	sg.guard.log.Warn("closing ADS stream", "reason", reason, "proxy", node, "address", sg.address, "status", status.Convert(err).Message())
	if end != nil {
		end()
	}
}

// maxLoggedNodeID bounds the node ID kept for the log: a client chooses it.
const maxLoggedNodeID = 256

// noteNode remembers the stream's node ID from its first request that has one.
func (sg *streamGuard) noteNode(id string) {
	if sg == nil || id == "" {
		return
	}
	sg.mu.Lock()
	if sg.node == "" {
		if len(id) > maxLoggedNodeID {
			id = id[:maxLoggedNodeID] + "…"
		}
		sg.node = id
	}
	sg.mu.Unlock()
}

// send runs send, a gRPC Send of an n-byte response of typeURL, and ends the stream if it has
// not returned within the send timeout: the client is not reading.
func (sg *streamGuard) send(typeURL string, n int64, send func() error) error {
	if sg == nil || sg.guard.sendTimeout <= 0 {
		return send()
	}
	timeout := sg.guard.sendTimeout
	timer := time.AfterFunc(timeout, func() {
		sg.fail(closeSendTimeout, status.Errorf(codes.ResourceExhausted,
			"proxy is not reading its ADS stream: a %d-byte %s response could not be written for %s (the stream's flow-control window stayed full); closing the stream",
			n, shortType(typeURL), timeout))
	})
	err := send()
	timer.Stop()
	if err == nil {
		sg.awaitAnswer(typeURL, timeout)
	}
	return err
}

// awaitAnswer ends the stream if the response just sent for typeURL is not answered (ACKed or
// NACKed, by any request of its type) within timeout. Envoy answers every response at once;
// one that does not has stopped reading, which grpc-go cannot always tell: a response that
// fits in what is left of the stream's flow-control window and write quota is taken by Send
// without blocking, and if no other response follows, no Send ever blocks.
func (sg *streamGuard) awaitAnswer(typeURL string, timeout time.Duration) {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	if sg.ended {
		return
	}
	if t := sg.unanswered[typeURL]; t != nil {
		t.Reset(timeout)
		return
	}
	if sg.unanswered == nil {
		sg.unanswered = map[string]*time.Timer{}
	}
	sg.unanswered[typeURL] = time.AfterFunc(timeout, func() {
		sg.fail(closeUnanswered, status.Errorf(codes.DeadlineExceeded,
			"proxy has not answered (ACK or NACK) its %s response for %s: it is not reading its ADS stream; closing the stream", shortType(typeURL), timeout))
	})
}

// answered stops waiting for an answer of typeURL: the stream sent a request of that type.
func (sg *streamGuard) answered(typeURL string) {
	if sg == nil {
		return
	}
	sg.mu.Lock()
	if t := sg.unanswered[typeURL]; t != nil {
		t.Stop()
	}
	sg.mu.Unlock()
}

// recvFailed looks at why the stream's Recv failed; gRPC has already ended the stream with a
// status that says why (a request over the receive limit is ResourceExhausted, "received
// message larger than max"), and this counts and logs it.
func (sg *streamGuard) recvFailed(err error) {
	if sg == nil || err == io.EOF {
		return
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.ResourceExhausted {
		sg.fail(closeTooLarge, status.Errorf(codes.ResourceExhausted, "ADS request too large: %s", st.Message()))
	}
}

// request checks a request the stream received; an error ends the stream with it.
func (sg *streamGuard) request(req proto.Message, typeURL, nodeID string) error {
	if sg == nil {
		return nil
	}
	if !sg.received(req) {
		return sg.failure()
	}
	sg.noteNode(nodeID)
	sg.answered(typeURL)
	return nil
}

// deltaRequest is request for a delta request, which also counts its subscriptions.
func (sg *streamGuard) deltaRequest(req *discoveryv3.DeltaDiscoveryRequest) error {
	if err := sg.request(req, req.GetTypeUrl(), req.GetNode().GetId()); err != nil || sg == nil {
		return err
	}
	sg.deltaSubscribed(req.GetTypeUrl(), len(req.GetResourceNamesSubscribe()), len(req.GetResourceNamesUnsubscribe()))
	return sg.failure()
}

// received checks a request the codec could not decode (fanout.Rejected) and ends the stream
// with a status that names the problem; it reports whether the request may be served.
func (sg *streamGuard) received(req proto.Message) bool {
	err := fanout.Rejected(req)
	if err == nil || sg == nil {
		return true // without a guard, the empty request is refused for its missing type URL
	}
	if errors.Is(err, fanout.ErrTooManyNames) {
		sg.fail(closeTooManyNames, status.Errorf(codes.ResourceExhausted, "ADS request names more than %d resources; closing the stream", fanout.MaxRequestNames))
	} else {
		sg.fail(closeUndecodable, status.Errorf(codes.InvalidArgument, "ADS request is not a valid %s: %v", req.ProtoReflect().Descriptor().Name(), err))
	}
	return false
}

// deltaSubscribed counts a delta request's subscriptions and ends the stream once it holds
// more than fanout.MaxRequestNames names of one type. The count is of requests, not of
// distinct names: Envoy subscribes to a name once per stream, so for it the two agree.
func (sg *streamGuard) deltaSubscribed(typeURL string, subscribed, unsubscribed int) {
	if sg == nil {
		return
	}
	if sg.deltaNames == nil {
		sg.deltaNames = map[string]int{}
	}
	n := max(sg.deltaNames[typeURL]+subscribed-unsubscribed, 0)
	sg.deltaNames[typeURL] = n
	if n > fanout.MaxRequestNames {
		sg.fail(closeTooManyNames, status.Errorf(codes.ResourceExhausted,
			"delta ADS stream subscribes to more than %d %s resources; closing the stream", fanout.MaxRequestNames, shortType(typeURL)))
	}
}
