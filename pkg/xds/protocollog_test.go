package xds

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/xdslog"
)

// followLog follows proxy's protocol log on s through a real HTTP server and xdslog.Follow,
// and returns once pilot has started it.
func followLog(t *testing.T, s *Server, proxy string) <-chan xdslog.Event {
	t.Helper()
	web := httptest.NewServer(http.HandlerFunc(s.XDSLogHandler))
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan xdslog.Event, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = xdslog.Follow(ctx, web.URL, proxy, func(ev xdslog.Event) { events <- ev })
	}()
	t.Cleanup(func() { cancel(); <-done; web.Close() })
	if ev := nextEvent(t, events); ev.Kind != xdslog.KindFollowing || ev.Proxy != proxy {
		t.Fatalf("first event: %+v, want following %s", ev, proxy)
	}
	return events
}

func nextEvent(t *testing.T, events <-chan xdslog.Event) xdslog.Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event from the protocol log")
	}
	return xdslog.Event{}
}

// TestProtocolLogShowsTheConversation: a real gRPC client's requests (a subscription, an ACK,
// an EDS subscription by name, a NACK) and pilot's responses appear in order in the log of its
// node ID, with versions, nonces, names, sizes and the NACK's error_detail.
func TestProtocolLogShowsTheConversation(t *testing.T) {
	s, conn := serve(t, Options{Registry: prometheus.NewRegistry()})
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	events := followLog(t, s, "app-1.default") // POD.NAMESPACE of testNode
	stream := openADS(t, conn)

	if err := stream.Send(cdsRequest(testNode)); err != nil {
		t.Fatal(err)
	}
	cds, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, events)
	if ev.Kind != xdslog.KindRequest || ev.Type != "cds" || ev.Status != xdslog.StatusSubscribe || ev.Proxy != testNode || ev.Protocol != "sotw" || ev.Bytes == 0 {
		t.Errorf("first event: %+v, want the CDS subscription", ev)
	}
	ev = nextEvent(t, events)
	if ev.Kind != xdslog.KindResponse || ev.Type != "cds" || ev.Version != cds.VersionInfo || ev.Nonce != cds.Nonce ||
		ev.Count != len(cds.Resources) || !containsName(ev.Resources, "outbound|80||reviews.default.svc.cluster.local") || ev.Bytes < 50 {
		t.Errorf("second event: %+v, want the CDS response (version %s, nonce %s)", ev, cds.VersionInfo, cds.Nonce)
	}

	ack := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: cds.VersionInfo, ResponseNonce: cds.Nonce}
	eds := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"outbound|80||reviews.default.svc.cluster.local"}}
	for _, r := range []*discoveryv3.DiscoveryRequest{ack, eds} {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	ev = nextEvent(t, events)
	if ev.Status != xdslog.StatusACK || ev.Type != "cds" || ev.Version != cds.VersionInfo || ev.Nonce != cds.Nonce {
		t.Errorf("third event: %+v, want the CDS ACK", ev)
	}
	ev = nextEvent(t, events)
	if ev.Status != xdslog.StatusSubscribe || ev.Type != "eds" || len(ev.Resources) != 1 || ev.Resources[0] != eds.ResourceNames[0] {
		t.Errorf("fourth event: %+v, want the EDS subscription with its name", ev)
	}
	edsResp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	ev = nextEvent(t, events)
	if ev.Kind != xdslog.KindResponse || ev.Type != "eds" || ev.Count != 1 || ev.Nonce != edsResp.Nonce {
		t.Errorf("fifth event: %+v, want the EDS response", ev)
	}
	nack := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: eds.ResourceNames, ResponseNonce: edsResp.Nonce,
		ErrorDetail: &statuspb.Status{Message: "no"}}
	if err := stream.Send(nack); err != nil {
		t.Fatal(err)
	}
	for {
		ev = nextEvent(t, events)
		if ev.Kind == xdslog.KindRequest {
			break
		}
	}
	if ev.Status != xdslog.StatusNACK || ev.ErrorDetail != "no" || ev.Nonce != edsResp.Nonce {
		t.Errorf("NACK event: %+v", ev)
	}
	// Another proxy's conversation is not in this log.
	other := openADS(t, conn)
	if err := other.Send(cdsRequest("sidecar~127.0.0.2~app-2.default~default.svc.cluster.local")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Recv(); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Proxy != testNode {
			t.Errorf("the log of %s shows %s", testNode, ev.Proxy)
		}
	default:
	}
}

func containsName(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// TestSlowReaderLosesEventsAndIsTold: publishing never waits for a reader; one that falls
// behind by more than its buffer is told how many events it missed, in place.
func TestSlowReaderLosesEventsAndIsTold(t *testing.T) {
	l := newProtocolLog("", nil)
	f, _ := l.follow("p")
	const extra = 76
	for i := range followerBuffer + extra {
		l.publish(xdslog.Event{Kind: xdslog.KindRequest, Proxy: "p", Nonce: fmt.Sprint(i)})
	}
	for i := range followerBuffer {
		if ev := <-f.events; ev.Nonce != fmt.Sprint(i) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	l.publish(xdslog.Event{Kind: xdslog.KindRequest, Proxy: "p", Nonce: "after"})
	if ev := <-f.events; ev.Kind != xdslog.KindDropped || ev.Dropped != extra {
		t.Fatalf("after the gap: %+v, want %d dropped", ev, extra)
	}
	if ev := <-f.events; ev.Nonce != "after" {
		t.Fatalf("after the notice: %+v", ev)
	}
}

// TestProtocolLogNeverHoldsSecretBytes: an SDS response is logged by names and sizes.
func TestProtocolLogNeverHoldsSecretBytes(t *testing.T) {
	tr := newTracker(newMetrics(prometheus.NewRegistry()), nil, func(string) {}, time.Now)
	tr.streams[1] = &ProxyStatus{NodeID: testNode, Protocol: "sotw", Types: map[string]*TypeStatus{}}
	f, _ := tr.xlog.follow(testNode)
	secret, err := anypb.New(&tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "-----BEGIN PRIVATE KEY-----SECRETBYTES"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	tr.logResponse(1, &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.SecretType, Resources: []*anypb.Any{secret}, Nonce: "1"})
	ev := <-f.events
	line, _ := json.Marshal(ev)
	if strings.Contains(string(line), "SECRETBYTES") || strings.Contains(string(line), "PRIVATE") {
		t.Fatalf("the log holds key material: %s", line)
	}
	if ev.Type != "sds" || len(ev.Resources) != 1 || ev.Resources[0] != "default" || ev.Bytes == 0 {
		t.Fatalf("SDS event: %s", line)
	}
	if text := xdslog.Format(ev); !strings.Contains(text, "default") {
		t.Errorf("formatted: %s", text)
	}
}
