package bootstrap

import (
	"cmp"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/skiffmesh/skiff/test/framework"
)

// These tests run the real Envoy, because Validate only checks each field on its own: whether
// Envoy accepts the bootstrap as a whole (extension names, Any types, cluster wiring), and
// whether it then reaches pilot over HTTP/2, only Envoy can say.

// writeBootstrap writes YAML(o) to a temporary file and returns its path.
func writeBootstrap(t *testing.T, o Options) string {
	t.Helper()
	y, err := YAML(o)
	if err != nil {
		t.Fatalf("YAML: %v", err)
	}
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, y, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEnvoyValidate(t *testing.T) {
	envoy := framework.EnvoyBinary(t)
	for name, o := range map[string]Options{
		"sotw":          {NodeID: testNodeID, XDSAddress: testXDS},
		"delta":         {NodeID: testNodeID, XDSAddress: testXDS, Delta: true},
		"ip host":       {NodeID: testNodeID, XDSAddress: "10.96.0.10:15010"},
		"ipv6":          {NodeID: "sidecar~fd00::5~a.ns~ns.svc.cluster.local", XDSAddress: "[fd00::10]:15010", AdminAddress: "[::1]:15000"},
		"upstream bind": {NodeID: boundNodeID, XDSAddress: "127.0.0.1:15010", UpstreamBind: UpstreamBindAuto},
		"dns host":      {NodeID: testNodeID, XDSAddress: "pilot.skiff.svc.cluster.local:15010"},
		"redirect":      {NodeID: testNodeID, XDSAddress: testXDS, Interception: "redirect"},
		"router":        {NodeID: "router~10.0.0.9~gw-6b8f5d9c7d-q2w4z.istio-system~istio-system.svc.cluster.local", XDSAddress: testXDS, Delta: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := writeBootstrap(t, o)
			out, err := exec.Command(envoy, "--mode", "validate", "-c", path, "--log-level", "warn").CombinedOutput()
			if err != nil {
				y, _ := os.ReadFile(path)
				t.Fatalf("envoy --mode validate: %v\n%s\nbootstrap:\n%s", err, out, y)
			}
		})
	}
}

// boundNodeID is a proxy on a loopback address of its own, whose connections `pilot
// bootstrap` binds to it.
const boundNodeID = "sidecar~127.0.0.2~reviews-v1-7f99b6d4c5-x2lqp.default~default.svc.cluster.local"

// TestEnvoyConnects starts Envoy with the bootstrap against a stand-in ADS server and checks
// that the first request arrives on the right stream (SotW or delta) with the node pilot needs,
// from the source address pilot's identity check will see. Validate mode cannot show this: it
// does not connect, so a cluster speaking HTTP/1.1 or an unreachable address would pass it.
func TestEnvoyConnects(t *testing.T) {
	for name, tc := range map[string]struct {
		host         string // pilot host as written in XDSAddress
		delta        bool
		interception string
		wantMode     string
		nodeID       string // default testNodeID
		upstreamBind string
		wantSource   string // the ADS connection's source IP; default 127.0.0.1
	}{
		"sotw ip":  {host: "127.0.0.1", wantMode: "NONE"},
		"delta ip": {host: "127.0.0.1", delta: true, wantMode: "NONE"},
		// STRICT_DNS, and V4_PREFERRED reaching a listener on IPv4 only.
		"sotw dns": {host: "localhost", wantMode: "NONE"},
		// A trailing dot is trimmed; kept, Envoy would not find "localhost." in /etc/hosts.
		"fqdn":      {host: "localhost.", wantMode: "NONE"},
		"delta dns": {host: "localhost", delta: true, wantMode: "NONE"},
		"redirect":  {host: "127.0.0.1", interception: "redirect", wantMode: "REDIRECT"},
		// A second "pod" on this machine connects from its own address: pilot can tell it apart.
		"bound to the node's loopback IP": {host: "127.0.0.1", wantMode: "NONE", nodeID: boundNodeID, upstreamBind: UpstreamBindAuto, wantSource: "127.0.0.2"},
		"bound over DNS":                  {host: "localhost", delta: true, wantMode: "NONE", nodeID: boundNodeID, upstreamBind: UpstreamBindAuto, wantSource: "127.0.0.2"},
		"explicit bind":                   {host: "127.0.0.1", wantMode: "NONE", upstreamBind: "127.0.0.3", wantSource: "127.0.0.3"},
		"bind turned off":                 {host: "127.0.0.1", wantMode: "NONE", nodeID: boundNodeID, upstreamBind: ""},
		// 127.0.0.1 is the source already; binding it would only cut off the rest of the network.
		"auto on 127.0.0.1": {host: "127.0.0.1", wantMode: "NONE", nodeID: "sidecar~127.0.0.1~reviews-v1-7f99b6d4c5-x2lqp.default~default.svc.cluster.local", upstreamBind: UpstreamBindAuto},
	} {
		nodeID := cmp.Or(tc.nodeID, testNodeID)
		wantSource := cmp.Or(tc.wantSource, "127.0.0.1")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			lis, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ads := &firstRequest{got: make(chan received, 1)}
			srv := grpc.NewServer()
			discoverygrpc.RegisterAggregatedDiscoveryServiceServer(srv, ads)
			go func() { _ = srv.Serve(lis) }()
			t.Cleanup(srv.Stop)

			_, port, _ := net.SplitHostPort(lis.Addr().String())
			path := writeBootstrap(t, Options{
				NodeID:       nodeID,
				XDSAddress:   net.JoinHostPort(tc.host, port),
				Delta:        tc.delta,
				Interception: tc.interception,
				UpstreamBind: tc.upstreamBind,
				// Port 0, so parallel Envoys do not fight over 15000.
				AdminAddress: "127.0.0.1:0",
			})

			// Hot restart is off so parallel Envoys do not share (and clash on) its shared memory.
			envoy := framework.RunEnvoy(t, "-c", path, "--disable-hot-restart", "--log-level", "warn")
			var r received
			select {
			case r = <-ads.got:
			case <-envoy.Exited():
				t.Fatalf("envoy exited before sending a request")
			case <-time.After(framework.Patience):
				t.Fatalf("no ADS request within %v", framework.Patience)
			}
			if r.delta != tc.delta {
				t.Errorf("request came on the delta stream = %v, want %v", r.delta, tc.delta)
			}
			if r.node.GetId() != nodeID {
				t.Errorf("node.id = %q, want %q", r.node.GetId(), nodeID)
			}
			if r.source != wantSource {
				t.Errorf("the ADS connection came from %s, want %s", r.source, wantSource)
			}
			if got := r.node.GetCluster(); got != "reviews-v1.default" {
				t.Errorf("node.cluster = %q, want reviews-v1.default", got)
			}
			if got := r.node.GetMetadata().GetFields()[interceptionModeKey].GetStringValue(); got != tc.wantMode {
				t.Errorf("INTERCEPTION_MODE = %q, want %q", got, tc.wantMode)
			}
			// Envoy subscribes to clusters first, then listeners once clusters are warm.
			if r.typeURL != "type.googleapis.com/envoy.config.cluster.v3.Cluster" {
				t.Errorf("first type_url = %q, want CDS", r.typeURL)
			}
		})
	}
}

type received struct {
	delta   bool
	typeURL string
	node    *corev3.Node
	source  string // the connection's source IP
}

// sourceIP is the IP a stream's connection comes from.
func sourceIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	host, _, _ := net.SplitHostPort(p.Addr.String())
	return host
}

// firstRequest is a stand-in ADS server: it reports the first request of the first stream and
// then holds the stream open without answering, which is all Envoy needs to stay connected.
type firstRequest struct {
	discoverygrpc.UnimplementedAggregatedDiscoveryServiceServer
	got chan received
}

func (f *firstRequest) report(r received) {
	select {
	case f.got <- r:
	default: // a reconnect after the first report; the test already has what it needs
	}
}

func (f *firstRequest) StreamAggregatedResources(s discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	req, err := s.Recv()
	if err != nil {
		return err
	}
	f.report(received{typeURL: req.GetTypeUrl(), node: req.GetNode(), source: sourceIP(s.Context())})
	<-s.Context().Done()
	return errors.New("stream closed")
}

func (f *firstRequest) DeltaAggregatedResources(s discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	req, err := s.Recv()
	if err != nil {
		return err
	}
	f.report(received{delta: true, typeURL: req.GetTypeUrl(), node: req.GetNode(), source: sourceIP(s.Context())})
	<-s.Context().Done()
	return errors.New("stream closed")
}
