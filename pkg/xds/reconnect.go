package xds

import (
	"context"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Pilot ends a proxy's stream when the proxy's configuration class changes (see classCache):
// the stream's watches sit on the old class's caches, and the cleanest way to move them is a
// new stream, which Envoy opens at once while it keeps serving what it has. go-control-plane
// gives no handle on a stream, so each stream is served with a context that carries its own
// end: the tracker takes it from the context go-control-plane hands to OnStreamOpen.

// errReconnect is the status a closed stream ends with; Envoy logs it and reconnects.
var errReconnect = status.Error(codes.Unavailable, "proxy configuration class changed; reconnect")

type endStreamKey struct{}

// endStreamOf returns the function that ends the stream whose context is ctx, nil for a stream
// not served through serveEndable.
func endStreamOf(ctx context.Context) func() {
	end, _ := ctx.Value(endStreamKey{}).(context.CancelFunc)
	return end
}

// serveEndable runs handle on a stream that endStreamOf (or its guard) can end. Ending it
// returns from the gRPC handler, which cancels the stream: its Recv fails, a Send blocked on
// flow control returns, and go-control-plane's loop, which reads requests through Recv, stops.
// A stream its guard failed ends with the guard's status.
func serveEndable(stream grpc.ServerStream, sg *streamGuard, handle func(ctx context.Context) error) error {
	ctx, end := context.WithCancel(stream.Context())
	defer end()
	ctx = context.WithValue(ctx, endStreamKey{}, end)
	sg.bind(end)
	done := make(chan error, 1)
	go func() { done <- handle(ctx) }()
	select {
	case err := <-done:
		if failed := sg.failure(); failed != nil {
			return failed // go-control-plane ends a stream whose Recv failed without a status
		}
		return err
	case <-ctx.Done():
		if failed := sg.failure(); failed != nil {
			return failed // the handler may be blocked in Send: do not wait for it
		}
		if stream.Context().Err() != nil {
			return <-done // the client went away: let the handler finish on its own
		}
		return errReconnect
	}
}

// sotwEndable is a state-of-the-world stream whose Context is serveEndable's, sending within
// the push budget (budget.go) and under its guard (guard.go).
type sotwEndable struct {
	discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	ctx   context.Context
	flow  *streamFlow
	guard *streamGuard
}

func (s sotwEndable) Context() context.Context { return s.ctx }

// deltaEndable is a delta stream whose Context is serveEndable's, sending within the push
// budget.
type deltaEndable struct {
	discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	ctx   context.Context
	flow  *streamFlow
	guard *streamGuard
}

func (s deltaEndable) Context() context.Context { return s.ctx }
