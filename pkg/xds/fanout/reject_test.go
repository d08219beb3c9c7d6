package fanout

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

func route(t testing.TB, name string, n int) *Resource {
	t.Helper()
	r, err := Encode(resourcev3.RouteType, name, &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: fmt.Sprint("v", n)}}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var fakeCount int

// fakeEnvoy is a state-of-the-world client that rejects answers holding a bad resource, as
// Envoy does: it NACKs with the version it last accepted and a message that names the
// resource or not, and keeps what it held of a rejected resource.
type fakeEnvoy struct {
	t       *testing.T
	s       *Store
	typeURL string
	names   []string
	node    string
	// bad are the resources it refuses; message makes the error_detail for one of them.
	bad     []*Resource
	message func(name string) string

	ch       chan cachev3.Response
	accepted string
	held     map[string][]byte
	nacks    int
}

func newFakeEnvoy(t *testing.T, s *Store, typeURL string, names []string, message func(string) string, bad ...*Resource) *fakeEnvoy {
	fakeCount++
	return &fakeEnvoy{t: t, s: s, typeURL: typeURL, names: names, node: fmt.Sprintf("sidecar~127.0.0.1~fake-%d.default~default.svc.cluster.local", fakeCount),
		bad: bad, message: message, ch: make(chan cachev3.Response, 1), held: map[string][]byte{}}
}

func (f *fakeEnvoy) request(nonce string, errorDetail *statuspb.Status) {
	req := &discoveryv3.DiscoveryRequest{TypeUrl: f.typeURL, ResourceNames: f.names, VersionInfo: f.accepted,
		ResponseNonce: nonce, ErrorDetail: errorDetail}
	req.Node = nodeOf(f.node)
	if _, err := f.s.CreateWatch(req, streamv3.NewSotwSubscription(f.names, true), f.ch); err != nil {
		f.t.Fatal(err)
	}
}

// converge answers every response until the store leaves the client waiting.
func (f *fakeEnvoy) converge() {
	f.t.Helper()
	for i := 0; ; i++ {
		if i > 50 {
			f.t.Fatal("the store and the client never settled")
		}
		r := pending(f.ch)
		if r == nil {
			return
		}
		resp, err := r.GetDiscoveryResponse()
		if err != nil {
			f.t.Fatal(err)
		}
		var refused []string
		for _, a := range resp.Resources {
			if name := f.refuses(a); name != "" {
				refused = append(refused, name)
			}
		}
		if len(refused) > 0 {
			f.nacks++
			f.request(fmt.Sprint(i), &statuspb.Status{Message: f.message(refused[0])})
			continue
		}
		got := map[string][]byte{}
		for _, a := range resp.Resources {
			got[nameOf(f.t, a)] = a.Value
		}
		if f.typeURL == resourcev3.ListenerType || f.typeURL == resourcev3.ClusterType {
			f.held = got
		} else {
			for n, b := range got {
				f.held[n] = b
			}
		}
		f.accepted = resp.VersionInfo
		f.request(fmt.Sprint(i), nil)
	}
}

func (f *fakeEnvoy) refuses(a *anypb.Any) string {
	for _, b := range f.bad {
		if bytes.Equal(a.Value, b.any.Value) {
			return b.name
		}
	}
	return ""
}

func nameOf(t testing.TB, a *anypb.Any) string {
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	return cachev3.GetResourceName(m)
}

// holds reports whether the client holds r's version of its resource.
func (f *fakeEnvoy) holds(r *Resource) bool { return bytes.Equal(f.held[r.name], r.any.Value) }

func ldsMessage(name string) string {
	return "Error adding/updating listener(s) " + name + ": error adding listener '127.0.0.1:80': address already in use\n"
}

// TestNACKedListenerIsHeldWhileTheOthersMoveOn: Envoy names the listener it rejects; that one
// is held at the version the client accepted, the other change of the same answer goes out,
// and a new translation of it is tried again.
func TestNACKedListenerIsHeldWhileTheOthersMoveOn(t *testing.T) {
	s := NewStore(resourcev3.ListenerType, "p-")
	var seen []Rejection
	s.Observe(func(r Rejection) { seen = append(seen, r) })
	a1, b1, c1 := cluster(t, "a", 1), cluster(t, "b", 1), cluster(t, "c", 1)
	s.Update(set(a1, b1, c1))
	a2, b2 := cluster(t, "a", 2), cluster(t, "b", 2)
	f := newFakeEnvoy(t, s, resourcev3.ListenerType, nil, ldsMessage, b2)
	f.request("", nil)
	f.converge()
	accepted := f.accepted

	s.Update(set(a2, b2, c1))
	f.converge()
	if f.nacks != 1 {
		t.Fatalf("NACKs: %d, want 1", f.nacks)
	}
	if !f.holds(a2) || !f.holds(b1) || !f.holds(c1) {
		t.Fatalf("client holds %v; want a at its new version, b at the one it accepted, c", f.held)
	}
	rej := s.Rejections("")
	if len(rej) != 1 || rej[0].Name != "b" || rej[0].HeldVersion != accepted || !strings.Contains(rej[0].Error, "address already in use") || rej[0].Proxy != f.node {
		t.Fatalf("rejections: %+v; want b held at %s with Envoy's message", rej, accepted)
	}
	if len(seen) != 1 || seen[0].Name != "b" {
		t.Fatalf("observed: %+v", seen)
	}

	// The same translation again: still held, nothing sent.
	s.Update(set(a2, b2, c1))
	if r := pending(f.ch); r != nil {
		t.Fatalf("an unchanged translation of the rejected listener was sent: %v", namesOf(t, r))
	}
	// A new translation of b is tried, and accepted.
	b3 := cluster(t, "b", 3)
	s.Update(set(a2, b3, c1))
	f.converge()
	if !f.holds(b3) || len(s.Rejections("")) != 0 || f.nacks != 1 {
		t.Fatalf("after b changed: holds b3 %v, rejections %+v, NACKs %d", f.holds(b3), s.Rejections(""), f.nacks)
	}
}

// TestNewRejectedListenerIsHeldBack: a listener the client never accepted is left out.
func TestNewRejectedListenerIsHeldBack(t *testing.T) {
	s := NewStore(resourcev3.ListenerType, "p-")
	a1, b1 := cluster(t, "a", 1), cluster(t, "b", 1)
	s.Update(set(a1))
	f := newFakeEnvoy(t, s, resourcev3.ListenerType, nil, ldsMessage, b1)
	f.request("", nil)
	f.converge()
	s.Update(set(a1, b1))
	f.converge()
	if _, ok := f.held["b"]; ok || !f.holds(a1) {
		t.Fatalf("client holds %v; want a alone", f.held)
	}
	if rej := s.Rejections(""); len(rej) != 1 || rej[0].Name != "b" || rej[0].HeldVersion != "" {
		t.Fatalf("rejections: %+v; want b, with no held version", rej)
	}
	// Removing it clears the rejection.
	s.Update(set(a1))
	if rej := s.Rejections(""); len(rej) != 0 {
		t.Fatalf("rejections after b was removed: %+v", rej)
	}
}

// TestUnnamedRejectionIsBisected: Envoy does not name the route configuration it rejects; the
// store finds it by serving halves of the change.
func TestUnnamedRejectionIsBisected(t *testing.T) {
	for bad := range 5 {
		t.Run(fmt.Sprint("bad=r", bad), func(t *testing.T) {
			s := NewStore(resourcev3.RouteType, "p-")
			names := []string{"r0", "r1", "r2", "r3", "r4"}
			v1, v2 := map[string]*Resource{}, map[string]*Resource{}
			for _, n := range names {
				v1[n], v2[n] = route(t, n, 1), route(t, n, 2)
			}
			s.Update(v1)
			f := newFakeEnvoy(t, s, resourcev3.RouteType, names, func(string) string {
				return "Invalid regex '(': missing ): ("
			}, v2[names[bad]])
			f.request("", nil)
			f.converge()
			accepted := f.accepted
			s.Update(v2)
			f.converge()
			for i, n := range names {
				want := v2[n]
				if i == bad {
					want = v1[n]
				}
				if !f.holds(want) {
					t.Errorf("client does not hold the expected version of %s", n)
				}
			}
			rej := s.Rejections("")
			if len(rej) != 1 || rej[0].Name != names[bad] || rej[0].HeldVersion != accepted {
				t.Fatalf("rejections: %+v; want %s held at %s", rej, names[bad], accepted)
			}
			if f.nacks > 4 {
				t.Errorf("%d NACKs to find one of five", f.nacks)
			}
			if ov := s.overlays[f.node]; ov != nil && ov.trial != nil {
				t.Errorf("bisection still under way: %+v", ov.trial)
			}
		})
	}
}

// TestTwoBadRoutesAreBothFound: bisection goes on after the first culprit.
func TestTwoBadRoutesAreBothFound(t *testing.T) {
	s := NewStore(resourcev3.RouteType, "p-")
	names := []string{"r0", "r1", "r2", "r3"}
	v1, v2 := map[string]*Resource{}, map[string]*Resource{}
	for _, n := range names {
		v1[n], v2[n] = route(t, n, 1), route(t, n, 2)
	}
	s.Update(v1)
	f := newFakeEnvoy(t, s, resourcev3.RouteType, names, func(string) string { return "bad" }, v2["r0"], v2["r3"])
	f.request("", nil)
	f.converge()
	s.Update(v2)
	f.converge()
	var got []string
	for _, r := range s.Rejections("") {
		got = append(got, r.Name)
	}
	if !slices.Equal(got, []string{"r0", "r3"}) {
		t.Fatalf("rejected: %v, want [r0 r3]", got)
	}
	if !f.holds(v2["r1"]) || !f.holds(v2["r2"]) || !f.holds(v1["r0"]) || !f.holds(v1["r3"]) {
		t.Fatalf("client holds the wrong versions")
	}
}

// TestDeltaNACKIsHeld: a delta client's NACK, with what the rejected answer sent, holds the
// named cluster at the version it had.
func TestDeltaNACKIsHeld(t *testing.T) {
	s := NewStore(resourcev3.ClusterType, "p-")
	a1, b1 := cluster(t, "a", 1), cluster(t, "b", 1)
	s.Update(set(a1, b1))
	sub := streamv3.NewDeltaSubscription(nil, nil, map[string]string{"a": a1.hash, "b": b1.hash}, true)
	a2, b2 := cluster(t, "a", 2), cluster(t, "b", 2)
	s.Update(set(a2, b2))
	// The answer sent a2 and b2; the client rejects b.
	sub.SetReturnedResources(map[string]string{"a": a2.hash, "b": b2.hash})
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: "2",
		ErrorDetail: &statuspb.Status{Message: "Error adding/updating cluster(s) b: bad field"}}
	NoteNack(req, NackInfo{RejectedVersion: "2", Sent: map[string]string{"a": a2.hash, "b": b2.hash}})
	ch := make(chan cachev3.DeltaResponse, 1)
	if _, err := s.CreateDeltaWatch(req, sub, ch); err != nil {
		t.Fatal(err)
	}
	var resp *discoveryv3.DeltaDiscoveryResponse
	select {
	case r := <-ch:
		resp, _ = r.GetDeltaDiscoveryResponse()
	default:
		t.Fatal("the NACK was not answered with the held version")
	}
	if len(resp.Resources) != 1 || resp.Resources[0].Name != "b" || resp.Resources[0].Version != b1.hash {
		t.Fatalf("answer: %v; want b at %s", resp.Resources, b1.hash)
	}
	if rej := s.Rejections(""); len(rej) != 1 || rej[0].Name != "b" || rej[0].HeldVersion != b1.hash {
		t.Fatalf("rejections: %+v", rej)
	}
}

func nodeOf(id string) *corev3.Node { return &corev3.Node{Id: id} }

// TestRejectionIsHeldForTheRejectingProxyOnly: Envoys differ (a port in use on one host), so
// a proxy that accepts what another rejected is served the new version, and a proxy that joins
// later too; the one that rejected keeps its accepted version.
func TestRejectionIsHeldForTheRejectingProxyOnly(t *testing.T) {
	s := NewStore(resourcev3.ListenerType, "p-")
	a1, b1 := cluster(t, "a", 1), cluster(t, "b", 1)
	s.Update(set(a1, b1))
	b2 := cluster(t, "b", 2)
	rejecting := newFakeEnvoy(t, s, resourcev3.ListenerType, nil, ldsMessage, b2)
	accepting := newFakeEnvoy(t, s, resourcev3.ListenerType, nil, ldsMessage)
	for _, f := range []*fakeEnvoy{rejecting, accepting} {
		f.request("", nil)
		f.converge()
	}
	s.Update(set(a1, b2))
	rejecting.converge()
	accepting.converge()
	if !rejecting.holds(b1) || !accepting.holds(b2) {
		t.Fatalf("rejecting holds b1: %v; accepting holds b2: %v", rejecting.holds(b1), accepting.holds(b2))
	}
	late := newFakeEnvoy(t, s, resourcev3.ListenerType, nil, ldsMessage)
	late.request("", nil)
	late.converge()
	if !late.holds(b2) {
		t.Fatal("a proxy that joined later is not served the new version")
	}
	if rej := s.Rejections(accepting.node); len(rej) != 0 {
		t.Errorf("rejections of the accepting proxy: %+v", rej)
	}
	if rej := s.Rejections(rejecting.node); len(rej) != 1 || rej[0].Name != "b" {
		t.Errorf("rejections of the rejecting proxy: %+v", rej)
	}
	// Its stream ends: nothing is kept for it.
	s.Forget(rejecting.node)
	if len(s.overlays) != 0 {
		t.Errorf("overlays after Forget: %v", s.overlays)
	}
}

// TestDeltaUnnamedRejectionIsBisected: a delta client's bisection steps re-send what the
// stream's record says the client holds (it rejected it), and find the bad route
// configuration.
func TestDeltaUnnamedRejectionIsBisected(t *testing.T) {
	s := NewStore(resourcev3.RouteType, "p-")
	names := []string{"r0", "r1", "r2", "r3"}
	v1, v2 := map[string]*Resource{}, map[string]*Resource{}
	returned := map[string]string{}
	for _, n := range names {
		v1[n], v2[n] = route(t, n, 1), route(t, n, 2)
		returned[n] = v1[n].hash
	}
	s.Update(v1)
	s.Update(v2)
	bad := v2["r2"]
	sub := streamv3.NewDeltaSubscription(names, nil, nil, false)
	node := nodeOf("sidecar~127.0.0.1~delta-fake.default~default.svc.cluster.local")
	// The change was sent (the record holds v2), and rejected.
	sent := map[string]string{}
	for _, n := range names {
		returned[n], sent[n] = v2[n].hash, v2[n].hash
	}
	sub.SetReturnedResources(returned)
	held := map[string]string{}
	for _, n := range names {
		held[n] = v1[n].hash // what the client holds: it rejected v2
	}
	nonce := 1
	req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.RouteType, ResponseNonce: fmt.Sprint(nonce),
		ErrorDetail: &statuspb.Status{Message: "missing ]: ["}}
	NoteNack(req, NackInfo{Sent: sent})
	nacks := 1
	for i := 0; ; i++ {
		if i > 20 {
			t.Fatal("never settled")
		}
		ch := make(chan cachev3.DeltaResponse, 1)
		if _, err := s.CreateDeltaWatch(req, sub, ch); err != nil {
			t.Fatal(err)
		}
		var r cachev3.DeltaResponse
		select {
		case r = <-ch:
		default:
		}
		if r == nil {
			break
		}
		resp, _ := r.GetDeltaDiscoveryResponse()
		sub.SetReturnedResources(r.GetNextVersionMap())
		nonce++
		req = &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.RouteType, ResponseNonce: fmt.Sprint(nonce)}
		rejected := false
		for _, res := range resp.Resources {
			if res.Version == bad.hash {
				rejected = true
			}
		}
		if rejected {
			nacks++
			req.ErrorDetail = &statuspb.Status{Message: "missing ]: ["}
			sent := map[string]string{}
			for _, res := range resp.Resources {
				sent[res.Name] = res.Version
			}
			NoteNack(req, NackInfo{Sent: sent})
			continue
		}
		for _, res := range resp.Resources {
			held[res.Name] = res.Version
		}
	}
	for _, n := range names {
		want := v2[n].hash
		if n == "r2" {
			want = v1[n].hash
		}
		if held[n] != want {
			t.Errorf("client holds %s at %s, want %s", n, held[n], want)
		}
	}
	if rej := s.Rejections(node.Id); len(rej) != 1 || rej[0].Name != "r2" || rej[0].HeldVersion != v1["r2"].hash {
		t.Fatalf("rejections: %+v", rej)
	}
	if nacks > 3 {
		t.Errorf("%d NACKs to find one of four", nacks)
	}
}

// TestHeldResourceIsTriedAgain: a rejection may be transient (a port held for a moment by
// another process); the held resource is tried again after nackRetry without a change, and
// once accepted the hold is gone.
func TestHeldResourceIsTriedAgain(t *testing.T) {
	defer func(d time.Duration) { nackRetry = d }(nackRetry)
	nackRetry = 10 * time.Millisecond
	s := NewStore(resourcev3.ListenerType, "p-")
	a1 := cluster(t, "a", 1)
	s.Update(set(a1))
	f := newFakeEnvoy(t, s, resourcev3.ListenerType, nil, ldsMessage)
	f.request("", nil)
	f.converge()
	a2 := cluster(t, "a", 2)
	f.bad = []*Resource{a2}
	s.Update(set(a2))
	f.converge()
	if !f.holds(a1) || len(s.Rejections("")) != 1 {
		t.Fatalf("not held: holds a1 %v, rejections %+v", f.holds(a1), s.Rejections(""))
	}
	f.bad = nil // the port is free now
	select {
	case r := <-f.ch:
		f.ch <- r
	case <-time.After(time.Minute):
		t.Fatal("the held listener was never tried again")
	}
	f.converge()
	if !f.holds(a2) || len(s.Rejections("")) != 0 || len(s.overlays) != 0 {
		t.Fatalf("after the retry: holds a2 %v, rejections %+v, overlays %d", f.holds(a2), s.Rejections(""), len(s.overlays))
	}
}
