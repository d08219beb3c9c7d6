package fanout

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
)

// deltaStream is one delta stream as go-control-plane's server drives a store: a subscription
// whose record of returned versions is what the last response it sent returned.
type deltaStream struct {
	t   *testing.T
	s   *Store
	sub streamv3.Subscription
	ch  chan cachev3.DeltaResponse
}

func newDeltaStream(t *testing.T, s *Store) *deltaStream {
	d := &deltaStream{t: t, s: s, sub: streamv3.NewDeltaSubscription(nil, nil, nil, true), ch: make(chan cachev3.DeltaResponse, 1)}
	d.request(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: s.TypeURL()})
	return d
}

func (d *deltaStream) request(req *discoveryv3.DeltaDiscoveryRequest) {
	d.t.Helper()
	if _, err := d.s.CreateDeltaWatch(req, &d.sub, d.ch); err != nil {
		d.t.Fatal(err)
	}
}

// ack acknowledges the last response with a new request, as a delta client does.
func (d *deltaStream) ack() {
	d.request(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: d.s.TypeURL(), ResponseNonce: "1"})
}

// next is the response waiting for the stream, taken into its record; nil when there is none.
func (d *deltaStream) next() *discoveryv3.DeltaDiscoveryResponse {
	d.t.Helper()
	select {
	case r := <-d.ch:
		d.sub.SetReturnedResources(r.GetNextVersionMap())
		out, err := r.GetDeltaDiscoveryResponse()
		if err != nil {
			d.t.Fatal(err)
		}
		return out
	default:
		return nil
	}
}

func resourceNames(out *discoveryv3.DeltaDiscoveryResponse) []string {
	var names []string
	for _, r := range out.GetResources() {
		names = append(names, r.GetName())
	}
	return names
}

// TestDeltaAckIsComparedOnlyWhenTheStoreMoved: a delta client's ACK after an answer at the
// store's current version is taken as current without comparing what it holds; an ACK after a
// change that found the stream unwatched (answered, its ACK not yet in), or a NACK, is compared
// and answered with what the client lacks. Answers update the stream's record in place.
func TestDeltaAckIsComparedOnlyWhenTheStoreMoved(t *testing.T) {
	s := NewStore(resourcev3.ClusterType, "p-")
	s.Update(set(cluster(t, "a", 1), cluster(t, "b", 1)))
	d := newDeltaStream(t, s)
	record := recordID(d.sub.ReturnedResources())
	if out := d.next(); len(out.GetResources()) != 2 {
		t.Fatalf("first answer: %v, want a and b", resourceNames(out))
	}
	if recordID(d.sub.ReturnedResources()) != record {
		t.Fatal("the answer replaced the stream's record instead of updating it")
	}

	// Changed while the stream waits for nothing: its ACK must find a's new version.
	a2 := cluster(t, "a", 2)
	s.Update(set(a2, cluster(t, "b", 1)))
	d.ack()
	out := d.next()
	if names := resourceNames(out); len(names) != 1 || names[0] != "a" || out.Resources[0].Version != a2.Hash() {
		t.Fatalf("ACK after a change it missed: %v, want a at %s", names, a2.Hash())
	}

	// Current: the ACK is not answered, and the next change reaches the watch it left.
	d.ack()
	if out := d.next(); out != nil {
		t.Fatalf("ACK of the current version answered with %v", resourceNames(out))
	}
	s.Update(set(a2, cluster(t, "b", 2)))
	if names := resourceNames(d.next()); len(names) != 1 || names[0] != "b" {
		t.Fatalf("change after a current ACK: %v, want b", names)
	}

	// A NACK of that answer is never taken as current.
	d.request(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: s.TypeURL(), ResponseNonce: "2", ErrorDetail: &status.Status{Message: "cluster b: bad"}})
	if out := d.next(); out == nil {
		t.Fatal("NACK not answered: b should be served at the version the client accepted")
	}
	if len(s.acked) != 0 {
		t.Fatalf("records kept for an overlaid client: %d", len(s.acked))
	}
}
