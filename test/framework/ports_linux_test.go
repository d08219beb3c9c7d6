package framework

import (
	"net"
	"testing"
)

// TestFreeOnEveryAddress: a port another socket listens on at 127.0.0.5 is not free for a
// wildcard bind (a gateway's 0.0.0.0 listener) though it is free on 127.0.0.1, and FreePort
// never hands it out.
func TestFreeOnEveryAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.5:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := l.Addr().(*net.TCPAddr).Port
	if freeOnEveryAddress(held) {
		t.Fatalf("port %d, listened on at 127.0.0.5, counts as free on every address", held)
	}
	for range 200 {
		if p := FreePort(t, "127.0.0.1"); p == held {
			t.Fatalf("FreePort handed out %d, held on 127.0.0.5", p)
		}
	}
	_ = l.Close()
	if !freeOnEveryAddress(held) {
		t.Errorf("port %d still counts as busy after its listener closed", held)
	}
}
