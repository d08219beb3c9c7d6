package config

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// startDebouncer runs a debouncer and returns its event channel and a channel that receives
// the time of each call.
func startDebouncer(t *testing.T, d debouncer) (chan<- struct{}, <-chan time.Time) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan struct{})
	fired := make(chan time.Time, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.run(ctx, events, func() { fired <- time.Now() })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return events, fired
}

func TestDebounceQuiet(t *testing.T) {
	d := debouncer{Quiet: 30 * time.Millisecond, MaxDelay: 10 * time.Second}
	events, fired := startDebouncer(t, d)

	// A short burst is one call, a quiet period after its last event. On a loaded machine the
	// sender may be descheduled for longer than the quiet period, which really makes two bursts;
	// so the gaps are measured, and a second call is only wrong if no gap reached the period.
	var last time.Time
	var widestGap time.Duration
	for i := range 5 {
		before := time.Now() // the debouncer receives the event after this
		if i > 0 {
			widestGap = max(widestGap, before.Sub(last))
		}
		events <- struct{}{}
		last = before
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case at := <-fired:
		if at.Sub(last) < d.Quiet {
			t.Errorf("fired %v after the last event, before the quiet period of %v", at.Sub(last), d.Quiet)
		}
	case <-time.After(framework.Patience):
		t.Fatal("no call after a burst")
	}
	select {
	case <-fired:
		if widestGap < d.Quiet {
			t.Fatalf("a burst whose widest gap was %v produced two calls (quiet period %v)", widestGap, d.Quiet)
		}
	case <-time.After(3 * d.Quiet):
	}

	// A later event starts a new burst.
	events <- struct{}{}
	select {
	case <-fired:
	case <-time.After(framework.Patience):
		t.Fatal("no call for the second burst")
	}
}

func TestDebounceMaxDelay(t *testing.T) {
	// The quiet period never passes while events keep coming every few milliseconds; only
	// the deadline makes calls.
	d := debouncer{Quiet: time.Second, MaxDelay: 50 * time.Millisecond}
	events, fired := startDebouncer(t, d)

	var stop atomic.Bool
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		for !stop.Load() {
			events <- struct{}{}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	calls := 0
	timeout := time.After(framework.Patience)
	for calls < 3 {
		select {
		case <-fired:
			calls++
		case <-timeout:
			t.Fatalf("only %d calls during a steady stream of events", calls)
		}
	}
	stop.Store(true)
	<-streamDone
}

func TestDebounceStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan struct{}, 1)
	done := make(chan struct{})
	var calls atomic.Int32
	go func() {
		defer close(done)
		debouncer{Quiet: time.Hour, MaxDelay: time.Hour}.run(ctx, events, func() { calls.Add(1) })
	}()
	events <- struct{}{}
	cancel()
	select {
	case <-done:
	case <-time.After(framework.Patience):
		t.Fatal("run did not return when the context ended")
	}
	if calls.Load() != 0 {
		t.Error("pending call made after the context ended")
	}
}
