package framework

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FreePort returns a TCP port that is free on ip, and on every other address, and that no
// other FreePort of any test process hands out while this test runs.
//
// Ports are taken from below the kernel's ephemeral range (ip_local_port_range, usually
// 32768–60999; from 20000 up to it), so that no port the kernel picks on its own — for a
// listener on port 0 or an outgoing connection — can take one between this call and the
// caller's bind; and each is claimed with a file in a folder every test process shares
// (os.TempDir()/skiff-test-ports), so that two packages' tests running side by side never get
// the same one. The claim is released when the test ends. A port is kept only if it can be
// bound on ip and on the wildcard address: tests listen on many 127.x addresses, and an Envoy
// binding a port on 0.0.0.0 (a gateway) is refused if any of them holds it.
func FreePort(tb testing.TB, ip string) int {
	tb.Helper()
	mustLoopback(tb, ip)
	lo, hi := freePortRange()
	const attempts = 200
	for range attempts {
		port := lo + rand.IntN(hi-lo)
		release, ok := claimPort(port)
		if !ok {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err == nil {
			_ = l.Close()
		}
		if err != nil || !freeOnEveryAddress(port) {
			release()
			continue
		}
		tb.Cleanup(release)
		return port
	}
	tb.Fatalf("framework: no free port on %s in %d tries between %d and %d", ip, attempts, lo, hi)
	return 0
}

// freePortRange is where FreePort looks: below the kernel's ephemeral range when there is room
// (from 20000, above the fixed ports the docs and tools use), else the ephemeral range itself.
func freePortRange() (lo, hi int) {
	ephemeralLo, ephemeralHi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if l, err := strconv.Atoi(f[0]); err == nil {
				if h, err := strconv.Atoi(f[1]); err == nil && l < h {
					ephemeralLo, ephemeralHi = l, h
				}
			}
		}
	}
	if ephemeralLo-20000 >= 4096 {
		return 20000, ephemeralLo
	}
	return ephemeralLo, ephemeralHi + 1
}

// portClaims is the folder of claims shared by every test process on the machine.
var portClaims = filepath.Join(os.TempDir(), "skiff-test-ports")

// portClaimTTL is how old a claim may get before it counts as left behind by a test process
// that was killed: longer than any test holds a port.
const portClaimTTL = time.Hour

// claimPort claims port for this process, unless another holds it; release gives it back.
func claimPort(port int) (release func(), ok bool) {
	if err := os.MkdirAll(portClaims, 0o777); err != nil {
		return func() {}, true // cannot coordinate: behave as without claims
	}
	path := filepath.Join(portClaims, strconv.Itoa(port))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if errors.Is(err, fs.ErrExist) {
		if fi, serr := os.Stat(path); serr != nil || time.Since(fi.ModTime()) < portClaimTTL {
			return nil, false
		}
		_ = os.Remove(path) // left behind: take it over
		f, err = os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	}
	if err != nil {
		return nil, false
	}
	_ = f.Close()
	return func() { _ = os.Remove(path) }, true
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
