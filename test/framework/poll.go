package framework

import (
	"errors"
	"testing"
	"time"
)

// pollInterval is how often conditions are re-checked. Config pushes take a
// few milliseconds on loopback, so a short interval keeps tests quick without
// loading the machine.
const pollInterval = 50 * time.Millisecond

// Eventually calls fn until it returns nil and fails the test with fn's last
// error if that does not happen within timeout. fn runs once more after the
// deadline is reached, so a timeout shorter than one call still gets a try.
// fn must not call tb.Fatal (that would end the test at the first try):
// return an error instead, e.g. from Send.
func Eventually(tb testing.TB, timeout time.Duration, fn func() error) {
	tb.Helper()
	if err := poll(timeout, fn); err != nil {
		tb.Fatalf("framework: still failing after %v: %v", timeout, err)
	}
}

// WaitFor polls cond until it is true and fails the test, naming what was
// awaited, if it is not within timeout.
func WaitFor(tb testing.TB, what string, cond func() bool, timeout time.Duration) {
	tb.Helper()
	if err := poll(timeout, func() error {
		if cond() {
			return nil
		}
		return errors.New("condition false")
	}); err != nil {
		tb.Fatalf("framework: timed out after %v waiting for %s", timeout, what)
	}
}

// poll is Eventually returning the error instead of failing.
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
