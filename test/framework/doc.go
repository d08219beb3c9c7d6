// Package framework is the end-to-end test harness of Skiff.
//
// It starts real processes — the pilot binary, Envoy, and plain Go HTTP
// servers standing in for applications — and gives tests small, blocking
// helpers to drive and observe them. The rules it keeps, so that tests built
// on it stay reliable on a busy CI machine:
//
//   - Every address is on loopback (127.0.0.0/8). Ports are picked free at run
//     time, never fixed, so packages and tests can run in parallel.
//   - Every process started is stopped in a tb.Cleanup, and its combined
//     stdout/stderr is printed with tb.Log when the test failed; it is kept
//     quiet otherwise.
//   - Waiting is always for an observable condition (an HTTP endpoint, a stat,
//     a file) with a deadline, never a bare sleep; a process that dies while
//     being waited for fails the wait at once, with its log.
//   - Helpers take a testing.TB and fail it with a message that says what was
//     expected and what was seen. Helpers that may be called inside a polling
//     loop come in a variant that returns an error instead (Send, Eventually).
//   - Every Envoy started is checked for rejected xDS updates (NACKs) when its
//     test ends, so the whole suite asserts that the pilot never sends config
//     Envoy refuses.
//
// Binaries: Envoy comes from $ENVOY or the repository's .bin/envoy (installed
// by `make envoy`); the pilot from $PILOT or is built once per test process
// from ./cmd/pilot. Prometheus and Jaeger, for telemetry tests (StartPrometheus,
// StartJaeger), come from .cache/telemetry-tools/, built by `make
// telemetry-tools`.
package framework
