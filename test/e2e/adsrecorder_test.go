package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// adsRecorder stands between Envoys and pilot on the plaintext ADS port and keeps every
// private key pilot sends over SDS: the workload keys that Envoy holds and never shows (its
// /config_dump redacts them), so that a test can look for them elsewhere. Each Envoy stream
// is relayed on a connection of its own to pilot, made from the Envoy's own source address,
// so pilot's identity check sees what it would without the recorder.
type adsRecorder struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	pilot   string // pilot's ADS address
	Address string // where Envoys connect

	mu   sync.Mutex
	ids  map[string]bool // SDS secret name and certificate chain of each key in seen
	seen []recordedKey   // in arrival order
}

// recordedKey is a private key pilot sent, with the secret's name and certificate chain.
type recordedKey struct {
	secret   string
	keyPEM   []byte
	chainPEM []byte
}

// startADSRecorder listens on a free port of 127.0.0.1 and relays to pilotAddress until the
// test ends.
func startADSRecorder(t *testing.T, pilotAddress string) *adsRecorder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ADS recorder: %v", err)
	}
	r := &adsRecorder{pilot: pilotAddress, Address: l.Addr().String(), ids: map[string]bool{}}
	// Envoy pings its ADS connection every 30 s (pilot bootstrap's keepalive); allow it, as
	// pilot does.
	server := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(server, r)
	go func() { _ = server.Serve(l) }()
	t.Cleanup(server.Stop)
	return r
}

// StreamAggregatedResources relays one Envoy's stream to pilot and back, recording the keys
// in pilot's Secret responses.
func (r *adsRecorder) StreamAggregatedResources(down discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	p, ok := peer.FromContext(down.Context())
	if !ok {
		return status.Error(codes.Internal, "no peer address")
	}
	tcp, ok := p.Addr.(*net.TCPAddr)
	if !ok {
		return status.Errorf(codes.Internal, "peer address %v is not TCP", p.Addr)
	}
	conn, err := grpc.NewClient("passthrough:///"+r.pilot,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			// From the Envoy's own address: pilot grants workload certificates by it.
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: tcp.IP}}
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		return status.Errorf(codes.Unavailable, "ADS recorder: dialing pilot: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(down.Context())
	defer cancel()
	up, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "ADS recorder: opening the stream to pilot: %v", err)
	}
	errs := make(chan error, 2)
	go func() {
		for {
			req, err := down.Recv()
			if err != nil {
				_ = up.CloseSend()
				errs <- err
				return
			}
			if err := up.Send(req); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		for {
			resp, err := up.Recv()
			if err != nil {
				errs <- err
				return
			}
			r.record(resp)
			if err := down.Send(resp); err != nil {
				errs <- err
				return
			}
		}
	}()
	err = <-errs
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err // pilot's status, so Envoy sees what it would have seen
}

// record keeps the private keys of a Secret response.
func (r *adsRecorder) record(resp *discoveryv3.DiscoveryResponse) {
	if resp.GetTypeUrl() != resourcev3.SecretType {
		return
	}
	for _, res := range resp.GetResources() {
		var s tlsv3.Secret
		if err := res.UnmarshalTo(&s); err != nil {
			continue
		}
		cert := s.GetTlsCertificate()
		key := cert.GetPrivateKey()
		keyPEM := key.GetInlineBytes()
		if keyPEM == nil && key.GetInlineString() != "" {
			keyPEM = []byte(key.GetInlineString())
		}
		if keyPEM == nil {
			continue
		}
		chain := cert.GetCertificateChain().GetInlineBytes()
		if chain == nil {
			chain = []byte(cert.GetCertificateChain().GetInlineString())
		}
		r.mu.Lock()
		id := s.GetName() + "\x00" + string(chain)
		if !r.ids[id] {
			r.ids[id] = true
			r.seen = append(r.seen, recordedKey{secret: s.GetName(), keyPEM: keyPEM, chainPEM: chain})
		}
		r.mu.Unlock()
	}
}

// Keys returns every distinct private key recorded so far.
func (r *adsRecorder) Keys() []recordedKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedKey(nil), r.seen...)
}

func (k recordedKey) String() string { return fmt.Sprintf("%s (%d-byte key)", k.secret, len(k.keyPEM)) }
