package framework

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// NetNS is a network namespace created by the test (`ip netns add`) and deleted when the test
// ends, whether it passed or not. It is how the harness tests what only exists outside
// loopback, such as traffic capture: everything it adds (addresses, routes, links, nf_tables
// rules) lives in namespaces like this one, and the root namespace is never changed.
//
// The test process reaches into a namespace without leaving its own: Do runs a function on an
// OS thread moved into the namespace, so sockets it creates belong there (Listen, DialContext)
// and processes it starts run there (StartEnvoyInNetNS).
type NetNS struct {
	Name string
}

// NewNetNS creates a namespace with a name unique to this run (prefix, the process ID and
// random bytes; at most 15 bytes of prefix are kept readable) and brings its lo up. It fails
// the test with ip's own message if the namespace cannot be created: tests that need one must
// not pass without it.
func NewNetNS(tb testing.TB, prefix string) *NetNS {
	tb.Helper()
	deleteStale(prefix)
	suffix := make([]byte, 3)
	if _, err := rand.Read(suffix); err != nil {
		tb.Fatalf("framework: naming a network namespace: %v", err)
	}
	ns := &NetNS{Name: fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), hex.EncodeToString(suffix))}
	if out, err := runIP("netns", "add", ns.Name); err != nil {
		tb.Fatalf("framework: creating network namespace %s: `ip netns add %s`: %v\n%s", ns.Name, ns.Name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := runIP("netns", "delete", ns.Name); err != nil {
			tb.Errorf("framework: deleting network namespace %s: %v\n%s", ns.Name, err, out)
		}
	})
	ns.IP(tb, "link", "set", "lo", "up")
	return ns
}

// deleteStale deletes namespaces NewNetNS made with prefix for test processes that are gone
// (killed by `go test -timeout`, say, before their cleanups ran), so that they do not pile up.
// Their processes died with the test process (Pdeathsig), so nothing runs in them.
func deleteStale(prefix string) {
	out, err := runIP("netns", "list")
	if err != nil {
		return // NewNetNS reports ip's problems
	}
	for _, line := range strings.Split(out, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, prefix+"-")
		if !ok {
			continue
		}
		pid, _, ok := strings.Cut(rest, "-")
		if !ok || pid == strconv.Itoa(os.Getpid()) {
			continue
		}
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", pid)); errors.Is(err, os.ErrNotExist) {
			_, _ = runIP("netns", "delete", name)
		}
	}
}

// runIP runs the ip command and returns its combined output. The deadline only turns a hung
// command into an error; ip itself answers in milliseconds.
func runIP(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return string(out), err
}

// path is where `ip netns` keeps the namespace.
func (ns *NetNS) path() string { return filepath.Join("/run/netns", ns.Name) }

// IP runs `ip -n NAME args...` (a command of ip's own, in the namespace) and fails the test
// with ip's message if it fails.
func (ns *NetNS) IP(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := runIP(append([]string{"-n", ns.Name}, args...)...)
	if err != nil {
		tb.Fatalf("framework: `ip -n %s %s`: %v\n%s", ns.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Exec runs a program in the namespace (`ip netns exec NAME path args...`), waits for it for at
// most a minute and returns its combined output, or an error that includes the output.
func (ns *NetNS) Exec(path string, args ...string) (string, error) {
	out, err := runIP(append([]string{"netns", "exec", ns.Name, path}, args...)...)
	if err != nil {
		return out, fmt.Errorf("`ip netns exec %s %s %s`: %w\n%s", ns.Name, path, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// Do runs fn on an OS thread that has entered the namespace, and returns fn's error. Sockets
// created by fn belong to the namespace for their whole life, whichever thread uses them
// later. The thread is never returned to the Go scheduler: it exits with fn's goroutine, so
// no other goroutine ever runs in the namespace by accident.
func (ns *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // and never unlocked: see above
		if err := ns.enter(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// enter moves the calling thread into the namespace. The caller must have locked it.
func (ns *NetNS) enter() error {
	f, err := os.Open(ns.path())
	if err != nil {
		return fmt.Errorf("entering network namespace %s: %w", ns.Name, err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering network namespace %s: setns: %w", ns.Name, err)
	}
	return nil
}

// Listen opens a TCP listener in the namespace, closed when the test ends.
func (ns *NetNS) Listen(tb testing.TB, address string) net.Listener {
	tb.Helper()
	var l net.Listener
	err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp", address)
		return err
	})
	if err != nil {
		tb.Fatalf("framework: listening on %s in network namespace %s: %v", address, ns.Name, err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// DialContext opens a TCP connection from the namespace, with the same signature as
// net.Dialer.DialContext so that it can be an http.Transport's dialer.
func (ns *NetNS) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return conn, err
}

// HTTPClient returns a client whose connections are made from the namespace, one per request
// (no keep-alive, so connection counts equal request counts), with the harness's
// RequestTimeout.
func (ns *NetNS) HTTPClient() *http.Client {
	return &http.Client{
		Timeout:   RequestTimeout,
		Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true},
	}
}

// ConnectVeth links two namespaces with a veth pair, names each end and gives it its address
// (e.g. 10.251.0.1/30), and brings both up. The pair is created inside a, its peer moved into
// b at once, so the root namespace never holds either end; deleting a namespace deletes it.
func ConnectVeth(tb testing.TB, a *NetNS, aName string, aAddr netip.Prefix, b *NetNS, bName string, bAddr netip.Prefix) {
	tb.Helper()
	a.IP(tb, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.IP(tb, "addr", "add", aAddr.String(), "dev", aName)
	b.IP(tb, "addr", "add", bAddr.String(), "dev", bName)
	a.IP(tb, "link", "set", aName, "up")
	b.IP(tb, "link", "set", bName, "up")
}

// Forward accepts connections on l, for as long as the test runs, and copies each both ways
// to a connection made by dial: how a process in one namespace reaches a listener in another
// (say, a pod namespace's Envoy reaching a pilot on the root namespace's loopback) without any
// route between them. The listener is closed, and every connection with it, when the test ends.
func Forward(tb testing.TB, l net.Listener, dial func(ctx context.Context) (net.Conn, error)) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	tb.Cleanup(func() {
		cancel()
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return // closed at the end of the test
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer in.Close()
				track(in, true)
				defer track(in, false)
				dctx, dcancel := context.WithTimeout(ctx, RequestTimeout)
				out, err := dial(dctx)
				dcancel()
				if err != nil {
					return // the client sees its connection closed
				}
				defer out.Close()
				track(out, true)
				defer track(out, false)
				pipe(in, out)
			}()
		}
	}()
}

// pipe copies a to b and b to a until both directions are done, passing on half-closes.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	copyHalf := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok && err == nil {
			_ = tc.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go copyHalf(a, b)
	go copyHalf(b, a)
	<-done
	<-done
}
