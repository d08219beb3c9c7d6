package framework

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// A Load caps the requests it has outstanding at what its rate sends in RequestTimeout (the
// bound of each request made with Send), and at least minLoadInFlight: a proxy that stalls for
// a second (an Envoy worker applying a thousand new clusters, say) delays requests without the
// load holding back, while requests that hang past their timeout stop piling up goroutines.
// The requests due while the cap is reached are counted as Skipped.
const minLoadInFlight = 64

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
	latencies []latency // of every request sent, failed ones included
}

// latency is one request's: when it was sent (since the start) and how long it took.
type latency struct{ at, took time.Duration }

// Latencies summarises the latency of the requests sent between from and to.
type Latencies struct {
	N             int
	P50, P99, Max time.Duration
}

func (s Latencies) String() string {
	return fmt.Sprintf("%d requests, latency p50 %v, p99 %v, max %v", s.N,
		s.P50.Round(10*time.Microsecond), s.P99.Round(10*time.Microsecond), s.Max.Round(10*time.Microsecond))
}

func summarise(took []time.Duration) Latencies {
	n := len(took)
	if n == 0 {
		return Latencies{}
	}
	slices.Sort(took)
	return Latencies{N: n, P50: took[n/2], P99: took[n*99/100], Max: took[n-1]}
}

// LatenciesBetween summarises the requests sent between from and to that have completed.
func (l *Load) LatenciesBetween(from, to time.Time) Latencies {
	l.mu.Lock()
	defer l.mu.Unlock()
	var took []time.Duration
	for _, s := range l.latencies {
		if at := l.start.Add(s.at); !at.Before(from) && at.Before(to) {
			took = append(took, s.took)
		}
	}
	return summarise(took)
}

// LoadResult is what a Load did.
type LoadResult struct {
	Sent, Failed int
	// Skipped counts requests that were due while the cap of requests in flight was
	// reached, and so were not sent: the rate was not held.
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
// most perSecond × RequestTimeout at once), for at most bound. A call that returns an error counts as
// failed. The load is stopped when the test ends if Stop was not called.
func StartLoad(tb testing.TB, perSecond int, bound time.Duration, request func() error) *Load {
	tb.Helper()
	if perSecond <= 0 || bound <= 0 {
		tb.Fatalf("framework: StartLoad(%d/s, %v): want a positive rate and bound", perSecond, bound)
	}
	l := &Load{start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	inFlight := max(minLoadInFlight, int(RequestTimeout.Seconds())*perSecond)
	go l.run(time.Second/time.Duration(perSecond), bound, inFlight, request)
	tb.Cleanup(func() { l.Stop() })
	return l
}

func (l *Load) run(interval, bound time.Duration, inFlight int, request func() error) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		l.mu.Lock()
		l.result.Duration = time.Since(l.start)
		took := make([]time.Duration, len(l.latencies))
		for i, s := range l.latencies {
			took[i] = s.took
		}
		all := summarise(took)
		l.result.P50, l.result.P99, l.result.Max = all.P50, all.P99, all.Max
		l.mu.Unlock()
		close(l.done)
	}()
	slots := make(chan struct{}, inFlight)
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
				l.latencies = append(l.latencies, latency{sentAt, took})
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

// WaitSent waits until n more requests of the load have been sent and answered.
func (l *Load) WaitSent(t testing.TB, n int) {
	t.Helper()
	from := l.Snapshot().Sent
	Eventually(t, func() error {
		if sent := l.Snapshot().Sent - from; sent < n {
			return fmt.Errorf("%d of %d requests done", sent, n)
		}
		return nil
	})
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
