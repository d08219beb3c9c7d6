package framework

import (
	"net"
	"strconv"
	"testing"
)

// EnvoyProcess is an Envoy run with a command line of the test's own (RunEnvoy), for package
// tests that check Envoy accepts what they generate: a bootstrap, an injected container's
// arguments.
type EnvoyProcess struct {
	proc *Process
	log  logBuffer
}

// RunEnvoy starts EnvoyBinary with exactly args. It is stopped when the test ends, and its
// output is printed if the test failed.
func RunEnvoy(tb testing.TB, args ...string) *EnvoyProcess {
	tb.Helper()
	e := &EnvoyProcess{}
	logOnFailure(tb, "envoy", &e.log)
	proc, err := StartProcess("envoy", EnvoyBinary(tb), args, &e.log)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	e.proc = proc
	tb.Cleanup(func() { proc.Stop(&e.log) })
	return e
}

// Exited is closed once Envoy has exited.
func (e *EnvoyProcess) Exited() <-chan struct{} { return e.proc.done }

// Log is what Envoy has written so far.
func (e *EnvoyProcess) Log() string { return e.log.String() }

// FreePorts returns n distinct ports that were free on ip a moment ago (see FreePort).
func FreePorts(tb testing.TB, ip string, n int) []string {
	tb.Helper()
	mustLoopback(tb, ip)
	ports := make([]string, 0, n)
	for range n {
		// Held open until all are chosen, so the kernel cannot hand out one twice.
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			tb.Fatalf("framework: picking a free port on %s: %v", ip, err)
		}
		defer l.Close()
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return ports
}
