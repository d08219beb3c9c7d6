package ca

import (
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestIssueServing(t *testing.T) {
	c, err := LoadOrCreate(filepath.Join(t.TempDir(), "ca"), "")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.IssueServing([]string{"istiod.istio-system.svc", "localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"istiod.istio-system.svc", "localhost", "127.0.0.1"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.Roots(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: "pilot.example", Roots: c.Roots()}); err == nil {
		t.Error("the serving certificate is valid for a name it was not issued for")
	}
	if _, err := c.IssueServing(nil, nil, time.Hour, time.Now()); err == nil {
		t.Error("a serving certificate without names was issued")
	}
}
