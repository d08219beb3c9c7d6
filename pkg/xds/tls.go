package xds

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/skiffmesh/skiff/pkg/ca"
)

// ServingNames are the names pilot's TLS xDS certificate is valid for: istiod's in-cluster
// name (what Istio bootstraps verify) and loopback for a laptop.
var ServingNames = []string{"istiod.istio-system.svc", "localhost"}

// ServingNamesIn are the names of pilot's TLS xDS certificate when it runs in namespace ns of
// a cluster: its own Service's (skiff-pilot), istiod's, and localhost.
func ServingNamesIn(ns string) []string {
	if ns == "" || ns == "istio-system" {
		return append([]string{"skiff-pilot.istio-system.svc"}, ServingNames...)
	}
	return []string{"skiff-pilot." + ns + ".svc", "istiod." + ns + ".svc", "localhost"}
}

// ServingIPs are the IP SANs of pilot's TLS xDS certificate.
var ServingIPs = []net.IP{net.IPv4(127, 0, 0, 1)}

// ServingTLS returns a TLS configuration for the xDS port whose certificate the CA issues for
// names and ips, re-issued at half-life on the next handshake, so pilot never has to restart
// to renew it.
func ServingTLS(authority *ca.CA, names []string, ips []net.IP, ttl time.Duration) (*tls.Config, error) {
	r := &servingCert{ca: authority, names: names, ips: ips, ttl: ttl}
	if _, err := r.get(nil); err != nil { // fail at start, not at the first handshake
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2"},
		GetCertificate: r.get,
	}, nil
}

type servingCert struct {
	ca    *ca.CA
	names []string
	ips   []net.IP
	ttl   time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

func (r *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.cert != nil && now.Before(r.renewAt) {
		return r.cert, nil
	}
	cert, err := r.ca.IssueServing(r.names, r.ips, r.ttl, now)
	if err != nil {
		if r.cert != nil {
			return r.cert, nil // still valid until its NotAfter; try again next handshake
		}
		return nil, fmt.Errorf("xDS serving certificate: %w", err)
	}
	r.cert = &cert
	r.renewAt = now.Add(cert.Leaf.NotAfter.Sub(now) / 2)
	return r.cert, nil
}

// ServeTLS accepts TLS connections on lis and serves them the same ADS, health and reflection
// as Serve. Identity is still checked against the connection's source address: the TLS layer
// authenticates pilot to the proxy, not the proxy to pilot.
func (s *Server) ServeTLS(lis net.Listener, cfg *tls.Config) error {
	return s.grpc.Serve(tls.NewListener(lis, cfg))
}
