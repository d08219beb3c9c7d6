package config

import (
	"context"
	"time"
)

// debouncer turns bursts of events into single calls. It fires once Quiet has passed with no
// new event, but no later than MaxDelay after the first event of a burst, so that a steady
// stream of events (a tool rewriting a file in a loop) still produces a call every MaxDelay
// instead of none at all. The loop follows Contour's debounce in its contour.EventHandler.
type debouncer struct {
	Quiet    time.Duration
	MaxDelay time.Duration
}

// run reads events until ctx is done, calling fire from its own goroutine. Events that arrive
// while fire runs start the next burst, so a change made during a reload is never lost.
func (d debouncer) run(ctx context.Context, events <-chan struct{}, fire func()) {
	var (
		// Both timers exist only during a burst; a nil channel blocks forever in select.
		quiet, deadline *time.Timer
		quietC, maxC    <-chan time.Time
	)
	stop := func() {
		if quiet != nil {
			quiet.Stop()
			deadline.Stop()
		}
		quiet, deadline, quietC, maxC = nil, nil, nil, nil
	}
	defer stop()
	for {
		select {
		case <-ctx.Done():
			// Shutting down: a pending call is dropped, there is nobody left to serve.
			return

		case <-events:
			if quiet == nil {
				// First event of a burst: start both clocks.
				quiet = time.NewTimer(d.Quiet)
				deadline = time.NewTimer(d.MaxDelay)
				quietC, maxC = quiet.C, deadline.C
			} else {
				// Another event in the burst: wait for a full quiet period again, but leave
				// the deadline alone so the burst cannot postpone the call forever.
				quiet.Reset(d.Quiet)
			}

		case <-quietC:
			// Nothing happened for Quiet: the burst is over.
			stop()
			fire()

		case <-maxC:
			// The burst has gone on for MaxDelay: fire now, and let later events start a
			// new burst with fresh clocks.
			stop()
			fire()
		}
	}
}

// Debounce calls fire for bursts of events as the folder watcher does: once quiet has passed
// with no new event, and at the latest maxDelay after a burst's first event. It returns when
// ctx is done. Kubernetes mode uses it for informer events.
func Debounce(ctx context.Context, quiet, maxDelay time.Duration, events <-chan struct{}, fire func()) {
	debouncer{Quiet: quiet, MaxDelay: maxDelay}.run(ctx, events, fire)
}
