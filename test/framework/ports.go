package framework

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
)

// FreePort returns a TCP port that was free on ip a moment ago: the kernel
// picks it for a listener that is closed at once. Another process may take it
// before the caller binds it, which is rare because the kernel hands out
// ephemeral ports in turn; the starters in this package retry on "address
// already in use" where they can. Prefer binding port 0 directly, as
// StartUpstream does, whenever the listener is in this process.
func FreePort(tb testing.TB, ip string) int {
	tb.Helper()
	mustLoopback(tb, ip)
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		tb.Fatalf("framework: picking a free port on %s: %v", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeAddress returns "ip:port" with a port from FreePort.
func FreeAddress(tb testing.TB, ip string) string {
	tb.Helper()
	return net.JoinHostPort(ip, strconv.Itoa(FreePort(tb, ip)))
}

// mustLoopback fails the test unless ip is in 127.0.0.0/8 (or ::1): the
// harness must never listen on, or send to, an address that leaves the
// machine.
func mustLoopback(tb testing.TB, ip string) {
	tb.Helper()
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.IsLoopback() {
		tb.Fatalf("framework: %q is not a loopback IP address; the harness only uses 127.0.0.0/8", ip)
	}
}
