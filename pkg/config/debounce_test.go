package config

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
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

	// A short burst is one call, a quiet period after its last event.
	start := time.Now()
	var last time.Time
	for range 5 {
		events <- struct{}{}
		last = time.Now()
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case at := <-fired:
		if at.Sub(last) < d.Quiet {
			t.Errorf("fired %v after the last event, before the quiet period of %v", at.Sub(last), d.Quiet)
		}
		if at.Sub(start) > 5*time.Second {
			t.Errorf("fired only after %v", at.Sub(start))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no call after a burst")
	}
	select {
	case <-fired:
		t.Fatal("a burst produced two calls")
	case <-time.After(3 * d.Quiet):
	}

	// A later event starts a new burst.
	events <- struct{}{}
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
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
	timeout := time.After(5 * time.Second)
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
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return when the context ended")
	}
	if calls.Load() != 0 {
		t.Error("pending call made after the context ended")
	}
}
