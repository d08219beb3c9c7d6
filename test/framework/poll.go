package framework

import (
	"testing"
	"time"
)

// pollInterval is how often conditions are re-checked. Config pushes take a
// few milliseconds on loopback, so a short interval keeps tests quick without
// loading the machine.
const pollInterval = 50 * time.Millisecond

// Patience bounds every wait for state that becomes true later: a push
// reaching Envoy, a stat growing, a process answering. A healthy wait ends in
// milliseconds to seconds; the bound only decides when a wait that will never
// end is reported, so it is set for a 2-core machine that is also running two
// other test packages and someone's build (see `make test-stress`), and stays
// well inside go test's -timeout. Waits that assert how long something takes
// (a timeout firing, a rotation at half-life) use EventuallyWithin instead.
const Patience = 2 * time.Minute

// Eventually calls fn until it returns nil and fails the test with fn's last
// error if that does not happen within Patience. fn must not call tb.Fatal
// (that would end the test at the first try): return an error instead, one that
// says what was seen, e.g. from Send.
func Eventually(tb testing.TB, fn func() error) {
	tb.Helper()
	EventuallyWithin(tb, Patience, fn)
}

// EventuallyWithin is Eventually with a bound of its own, for the few checks
// whose subject is time itself. fn runs once more after the deadline is
// reached, so a timeout shorter than one call still gets a try.
func EventuallyWithin(tb testing.TB, timeout time.Duration, fn func() error) {
	tb.Helper()
	if err := poll(timeout, fn); err != nil {
		tb.Fatalf("framework: still failing after %v: %v", timeout, err)
	}
}

// poll is EventuallyWithin returning the error instead of failing.
func poll(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollInterval)
	}
}
