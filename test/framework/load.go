package framework

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// loadInFlight caps the requests a Load has outstanding. At 100 requests/s on loopback a
// request takes a millisecond or two; the cap is reached only when requests hang (each is
// bounded by RequestTimeout), and the requests due while it is reached are counted as
// Skipped, so a stall shows in the result instead of piling up goroutines.
const loadInFlight = 64

// maxLoadFailures is how many failures a LoadResult keeps word for word.
const maxLoadFailures = 20

// Load sends requests at a fixed rate from its own goroutine until Stop, or until its time
// bound passes, whichever comes first: a test that fails half way cannot leave it running.
type Load struct {
	start time.Time
	stop  chan struct{}
	done  chan struct{}

	mu        sync.Mutex
	result    LoadResult
	latencies []time.Duration // of every request sent, failed ones included
}

// LoadResult is what a Load did.
type LoadResult struct {
	Sent, Failed int
	// Skipped counts requests that were due while loadInFlight requests were still
	// outstanding, and so were not sent: the rate was not held.
	Skipped  int
	Duration time.Duration
	// Failures are the first failures, each with its time since the start.
	Failures []string
	// Latency percentiles of the requests sent, failed ones included.
	P50, P99, Max time.Duration
}

// Rate is the requests sent per second, over the whole run.
func (r LoadResult) Rate() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Duration.Seconds()
}

func (r LoadResult) String() string {
	return fmt.Sprintf("%d requests in %v (%.1f/s), %d failed, %d not sent (too many in flight); latency p50 %v, p99 %v, max %v",
		r.Sent, r.Duration.Round(time.Millisecond), r.Rate(), r.Failed, r.Skipped,
		r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond))
}

// StartLoad calls request perSecond times a second, each call on a goroutine of its own (at
// most loadInFlight at once), for at most bound. A call that returns an error counts as
// failed. The load is stopped when the test ends if Stop was not called.
func StartLoad(tb testing.TB, perSecond int, bound time.Duration, request func() error) *Load {
	tb.Helper()
	if perSecond <= 0 || bound <= 0 {
		tb.Fatalf("framework: StartLoad(%d/s, %v): want a positive rate and bound", perSecond, bound)
	}
	l := &Load{start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run(time.Second/time.Duration(perSecond), bound, request)
	tb.Cleanup(func() { l.Stop() })
	return l
}

func (l *Load) run(interval, bound time.Duration, request func() error) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		l.mu.Lock()
		l.result.Duration = time.Since(l.start)
		if n := len(l.latencies); n > 0 {
			slices.Sort(l.latencies)
			l.result.P50, l.result.P99, l.result.Max = l.latencies[n/2], l.latencies[n*99/100], l.latencies[n-1]
		}
		l.mu.Unlock()
		close(l.done)
	}()
	slots := make(chan struct{}, loadInFlight)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.NewTimer(bound)
	defer end.Stop()
	// The requests due so far are counted from the start, not from ticks: a ticker drops the
	// ticks of a goroutine that was not scheduled in time (a busy machine), and the rate is
	// held by sending what fell behind at the next tick.
	dispatched := 0
	for {
		select {
		case <-l.stop:
			return
		case <-end.C:
			return
		case <-tick.C:
		}
		due := int(time.Since(l.start)/interval) - dispatched
		for range due {
			dispatched++
			select {
			case slots <- struct{}{}:
			default:
				l.mu.Lock()
				l.result.Skipped++
				l.mu.Unlock()
				continue
			}
			wg.Go(func() {
				defer func() { <-slots }()
				sentAt := time.Since(l.start)
				err := request()
				took := time.Since(l.start) - sentAt
				l.mu.Lock()
				defer l.mu.Unlock()
				l.result.Sent++
				l.latencies = append(l.latencies, took)
				if err != nil {
					l.result.Failed++
					if len(l.result.Failures) < maxLoadFailures {
						l.result.Failures = append(l.result.Failures, fmt.Sprintf("%v: %v", sentAt.Round(time.Millisecond), err))
					}
				}
			})
		}
	}
}

// Snapshot is the result so far, while the load runs.
func (l *Load) Snapshot() LoadResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.result
	r.Duration = time.Since(l.start)
	r.Failures = append([]string(nil), r.Failures...)
	return r
}

// Stop ends the load, waits for the requests in flight, and returns the result. Calling it
// again returns the same result.
func (l *Load) Stop() LoadResult {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.result
}
