package fanout

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"
	"unsafe"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// assignment is a ClusterLoadAssignment whose content is set by weight.
func assignment(t testing.TB, name string, weight uint32) *Resource {
	t.Helper()
	r, err := Encode(resourcev3.EndpointType, name, &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LoadBalancingWeight: wrapperspb.UInt32(weight)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func cluster(t testing.TB, name string, seconds int64) *Resource {
	t.Helper()
	r, err := Encode(resourcev3.ClusterType, name, &clusterv3.Cluster{Name: name, ConnectTimeout: &durationpb.Duration{Seconds: seconds}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func set(rs ...*Resource) map[string]*Resource {
	out := map[string]*Resource{}
	for _, r := range rs {
		out[r.Name()] = r
	}
	return out
}

// sotw opens a state-of-the-world watch and returns the answer, or nil if it parked (then
// the channel gets the answer later).
func sotw(t *testing.T, s *Store, req *discoveryv3.DiscoveryRequest) (cachev3.Response, chan cachev3.Response, func()) {
	t.Helper()
	ch := make(chan cachev3.Response, 1)
	cancel, err := s.CreateWatch(req, streamv3.NewSotwSubscription(req.ResourceNames, true), ch)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		return r, ch, cancel
	default:
		return nil, ch, cancel
	}
}

// namesOf lists the names of an answer's resources.
func namesOf(t *testing.T, r cachev3.Response) []string {
	t.Helper()
	out, err := r.GetDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range out.Resources {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, cachev3.GetResourceName(m))
	}
	return names
}

func pending(ch chan cachev3.Response) cachev3.Response {
	select {
	case r := <-ch:
		return r
	default:
		return nil
	}
}

func TestWildcardAnswersEverythingOnlyWhenSomethingChanged(t *testing.T) {
	s := NewStore(resourcev3.ClusterType, "p-")
	s.Update(set(cluster(t, "a", 1), cluster(t, "b", 1)))

	first, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
	if first == nil || !slices.Equal(namesOf(t, first), []string{"a", "b"}) {
		t.Fatalf("first request: want a and b at once, got %v", first)
	}
	v, _ := first.GetVersion()
	ack, ch, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: v, ResponseNonce: "1"})
	if ack != nil {
		t.Fatalf("ACK of the current version answered: %v", namesOf(t, ack))
	}
	// The same content encoded again is no change.
	s.Update(set(cluster(t, "a", 1), cluster(t, "b", 1)))
	if r := pending(ch); r != nil {
		t.Fatalf("an update with equal bytes woke the watch: %v", namesOf(t, r))
	}
	s.Update(set(cluster(t, "a", 2)))
	r := pending(ch)
	if r == nil || !slices.Equal(namesOf(t, r), []string{"a"}) {
		t.Fatalf("after b was removed and a changed: want the whole state [a], got %v", r)
	}
}

func TestNamedAnswersOnlyWhatTheClientLacks(t *testing.T) {
	s := NewStore(resourcev3.EndpointType, "p-")
	s.Update(set(assignment(t, "a", 1), assignment(t, "b", 1), assignment(t, "c", 1)))

	first, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a", "b", "missing"}})
	if first == nil || !slices.Equal(namesOf(t, first), []string{"a", "b"}) {
		t.Fatalf("first request: want the existing named resources a and b, got %v", first)
	}
	v, _ := first.GetVersion()

	// Another client asking the same from scratch shares the answer.
	again, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"missing", "b", "a"}})
	if again == nil || !slices.Equal(namesOf(t, again), []string{"a", "b"}) {
		t.Fatalf("same names in another order: got %v", again)
	}

	ack, ch, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a", "b", "missing"}, VersionInfo: v, ResponseNonce: "1"})
	if ack != nil {
		t.Fatalf("ACK answered: %v", namesOf(t, ack))
	}
	s.Update(set(assignment(t, "a", 1), assignment(t, "b", 1), assignment(t, "c", 2)))
	if r := pending(ch); r != nil {
		t.Fatalf("a change of c, which the client does not ask for, woke it: %v", namesOf(t, r))
	}
	s.Update(set(assignment(t, "a", 1), assignment(t, "b", 2), assignment(t, "c", 2), assignment(t, "missing", 1)))
	r := pending(ch)
	if r == nil || !slices.Equal(namesOf(t, r), []string{"b", "missing"}) {
		t.Fatalf("after b changed and missing appeared: want [b missing], got %v", r)
	}
	v, _ = r.GetVersion()

	// A new name with the current version: only the new one is sent.
	more, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a", "b", "c", "missing"}, VersionInfo: v, ResponseNonce: "2"})
	if more == nil || !slices.Equal(namesOf(t, more), []string{"c"}) {
		t.Fatalf("subscribing to c as well: want [c], got %v", more)
	}
	// A version from another process: everything named.
	foreign, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a", "c"}, VersionInfo: "other-7.1"})
	if foreign == nil || !slices.Equal(namesOf(t, foreign), []string{"a", "c"}) {
		t.Fatalf("foreign version: want [a c], got %v", foreign)
	}
}

// TestNACKIsAnsweredWithTheAcceptedVersion: the one resource a rejected answer changed is held
// at the version the client accepted, and the client is answered with it at once; the next
// change goes out as usual.
func TestNACKIsAnsweredWithTheAcceptedVersion(t *testing.T) {
	s := NewStore(resourcev3.EndpointType, "p-")
	a1 := assignment(t, "a", 1)
	s.Update(set(a1, assignment(t, "b", 1)))
	first, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a", "b"}})
	accepted, _ := first.GetVersion()
	s.Update(set(assignment(t, "a", 2), assignment(t, "b", 1)))

	nack := &discoveryv3.DiscoveryRequest{
		TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a", "b"}, VersionInfo: accepted,
		ErrorDetail: &statuspb.Status{Message: "rejected a"},
	}
	r, _, _ := sotw(t, s, nack)
	if r == nil {
		t.Fatal("the NACK was not answered with the accepted version")
	}
	resp, _ := r.GetDiscoveryResponse()
	if len(resp.Resources) != 1 || !slices.Equal(resp.Resources[0].Value, a1.any.Value) {
		t.Fatalf("answer to the NACK: %v; want a at the version accepted", namesOf(t, r))
	}
	held, _ := r.GetVersion()
	_, ch, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a", "b"}, VersionInfo: held, ResponseNonce: "2"})
	s.Update(set(assignment(t, "a", 2), assignment(t, "b", 2)))
	r = pending(ch)
	if r == nil || !slices.Equal(namesOf(t, r), []string{"b"}) {
		t.Fatalf("after the next change: want [b] (a is held while its translation is the rejected one), got %v", r)
	}
}

func TestResendSendsUnchangedResourcesAgain(t *testing.T) {
	s := NewStore(resourcev3.EndpointType, "p-")
	s.Update(set(assignment(t, "a", 1), assignment(t, "b", 1)))
	first, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a", "b"}})
	v, _ := first.GetVersion()
	_, ch, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{"a", "b"}, VersionInfo: v, ResponseNonce: "1"})

	dch := make(chan cachev3.DeltaResponse, 1)
	sub := streamv3.NewDeltaSubscription([]string{"a", "b"}, nil, map[string]string{"a": s.entries["a"].res.Hash(), "b": s.entries["b"].res.Hash()}, false)
	if _, err := s.CreateDeltaWatch(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: "1"}, &sub, dch); err != nil {
		t.Fatal(err)
	}
	if len(dch) != 0 {
		t.Fatal("a delta client holding every version was answered")
	}

	s.Resend([]string{"a", "unknown"})
	if r := pending(ch); r == nil || !slices.Equal(namesOf(t, r), []string{"a"}) {
		t.Fatalf("state of the world after Resend(a): want [a], got %v", r)
	}
	select {
	case r := <-dch:
		out, _ := r.GetDeltaDiscoveryResponse()
		if len(out.Resources) != 1 || out.Resources[0].Name != "a" {
			t.Fatalf("delta after Resend(a): want a, got %v", out.Resources)
		}
	default:
		t.Fatal("delta client not sent a again")
	}
}

func TestDeltaSendsChangesAndRemovals(t *testing.T) {
	s := NewStore(resourcev3.ClusterType, "p-")
	a, b := cluster(t, "a", 1), cluster(t, "b", 1)
	s.Update(set(a, b))

	// A reconnecting client that holds a (by hash, from any pilot) is sent only b.
	sub := streamv3.NewDeltaSubscription(nil, nil, map[string]string{"a": a.Hash()}, true)
	dch := make(chan cachev3.DeltaResponse, 1)
	if _, err := s.CreateDeltaWatch(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType}, &sub, dch); err != nil {
		t.Fatal(err)
	}
	r := <-dch
	out, _ := r.GetDeltaDiscoveryResponse()
	if len(out.Resources) != 1 || out.Resources[0].Name != "b" || out.Resources[0].Version != b.Hash() {
		t.Fatalf("want b alone with its hash as version, got %v", out.Resources)
	}
	sub.SetReturnedResources(r.GetNextVersionMap())

	if _, err := s.CreateDeltaWatch(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: "1"}, &sub, dch); err != nil {
		t.Fatal(err)
	}
	if len(dch) != 0 {
		t.Fatal("an up-to-date delta client was answered")
	}
	s.Update(set(cluster(t, "a", 2)))
	r = <-dch
	out, _ = r.GetDeltaDiscoveryResponse()
	if len(out.Resources) != 1 || out.Resources[0].Name != "a" || !slices.Equal(out.RemovedResources, []string{"b"}) {
		t.Fatalf("after a changed and b was removed: got resources %v removed %v", out.Resources, out.RemovedResources)
	}
	if _, held := r.GetNextVersionMap()["b"]; held {
		t.Fatal("the removed b is still in the next version map")
	}
}

func TestManyStreamsShareOneAnswer(t *testing.T) {
	s := NewStore(resourcev3.EndpointType, "p-")
	var names []string
	want := map[string]*Resource{}
	for i := range 100 {
		n := fmt.Sprintf("outbound|8080||svc-%d", i)
		names = append(names, n)
		want[n] = assignment(t, n, 1)
	}
	s.Update(want)
	first, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: names})
	v, _ := first.GetVersion()
	var chans []chan cachev3.Response
	for range 50 {
		_, ch, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: slices.Clone(names), VersionInfo: v, ResponseNonce: "1"})
		chans = append(chans, ch)
	}
	if got := len(s.sets.byID); got != 1 {
		t.Fatalf("51 requests for the same names: %d interned sets, want 1", got)
	}
	want[names[7]] = assignment(t, names[7], 2)
	s.Update(want)
	var first0 *discoveryv3.DiscoveryResponse
	for i, ch := range chans {
		r := pending(ch)
		if r == nil {
			t.Fatalf("stream %d not answered", i)
		}
		out, _ := r.GetDiscoveryResponse()
		if len(out.Resources) != 1 {
			t.Fatalf("stream %d: %d resources, want the one that changed", i, len(out.Resources))
		}
		if first0 == nil {
			first0 = out
		} else if out.Resources[0] != first0.Resources[0] {
			t.Fatal("streams were sent copies of the resource, not the shared encoding")
		}
	}
}

// codecWrite writes m with the Codec and reports an error unless the bytes are
// proto.Marshal's; ok says whether they were.
func codecWrite(t *testing.T, m proto.Message) (out mem.BufferSlice, ok bool) {
	t.Helper()
	want, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out, err = Codec{}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Materialize(); string(got) != string(want) {
		t.Errorf("%T: codec wrote %d bytes that differ from proto.Marshal's %d", m, len(got), len(want))
		return out, false
	}
	return out, true
}

func TestCodecWritesWhatProtoMarshalWrites(t *testing.T) {
	a, b := cluster(t, "a", 1), cluster(t, "b", 2)
	sotwMsg := &discoveryv3.DiscoveryResponse{VersionInfo: "p-3", TypeUrl: resourcev3.ClusterType, Nonce: "12", Resources: []*anypb.Any{a.any, b.any}}
	deltaMsg := &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: "3", TypeUrl: resourcev3.ClusterType, Nonce: "4",
		Resources: []*discoveryv3.Resource{a.delta, b.delta}, RemovedResources: []string{"c", "d"},
	}
	other := &discoveryv3.DiscoveryResponse{VersionInfo: "1", Canary: true, Resources: []*anypb.Any{a.any}}
	for _, m := range []proto.Message{sotwMsg, deltaMsg, other} {
		codecWrite(t, m)
	}
	if out, _ := (Codec{}).Marshal(sotwMsg); len(out) < 3 {
		t.Errorf("the SotW response was not written around its resources' buffers: %d buffers", len(out))
	}
}

func TestCodecDecodesRequestsWithInternedNames(t *testing.T) {
	served := cluster(t, "outbound|8080||served.default.svc.cluster.local", 1) // interns its name
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo: "p-1.2", TypeUrl: resourcev3.EndpointType, ResponseNonce: "9",
		Node:          &corev3.Node{Id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local"},
		ResourceNames: []string{served.Name(), "outbound|8080||other.default.svc.cluster.local"},
		ErrorDetail:   &statuspb.Status{Code: 3, Message: "rejected"},
	}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	got := &discoveryv3.DiscoveryRequest{}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, req) {
		t.Fatalf("decoded %v, want %v", got, req)
	}
	if unsafe.StringData(got.ResourceNames[0]) != unsafe.StringData(served.Name()) {
		t.Error("a served name was decoded to a new string, not the interned one")
	}
	again := &discoveryv3.DiscoveryRequest{}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, again); err != nil {
		t.Fatal(err)
	}
	if unsafe.SliceData(again.ResourceNames) != unsafe.SliceData(got.ResourceNames) {
		t.Error("the same names decoded twice: not shared")
	}
	// A request that cannot be decoded is decoded empty, and Rejected says why (see Unmarshal).
	bad := protowire.AppendString(protowire.AppendTag(nil, 3, protowire.BytesType), "\xff")
	badReq := &discoveryv3.DiscoveryRequest{}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, badReq); err != nil {
		t.Fatal(err)
	}
	if err := Rejected(badReq); err == nil || len(badReq.ResourceNames) != 0 {
		t.Errorf("a resource name that is not UTF-8 was accepted: %v, names %q", err, badReq.ResourceNames)
	}
	if Rejected(badReq) != nil {
		t.Error("Rejected did not forget the request")
	}
	var many []byte
	for i := range MaxRequestNames + 1 {
		many = protowire.AppendString(protowire.AppendTag(many, 3, protowire.BytesType), strconv.Itoa(i))
	}
	manyReq := &discoveryv3.DiscoveryRequest{}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(many)}, manyReq); err != nil {
		t.Fatal(err)
	}
	if err := Rejected(manyReq); !errors.Is(err, ErrTooManyNames) {
		t.Errorf("a request of %d names: %v, want ErrTooManyNames", MaxRequestNames+1, err)
	}
}

// Without a change, a rejected answer in which no resource can be found at fault (the client
// rejects a version whose resources it accepted before) is sent once more after nackRetry:
// the rejection may have been transient.
func TestNACKIsRetriedWithoutAChange(t *testing.T) {
	defer func(d time.Duration) { nackRetry = d }(nackRetry)
	nackRetry = 10 * time.Millisecond
	s := NewStore(resourcev3.ClusterType, "p-")
	s.Update(set(cluster(t, "a", 1)))
	first, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
	v, _ := first.GetVersion()
	_, ch, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{
		TypeUrl: resourcev3.ClusterType, VersionInfo: v, ErrorDetail: &statuspb.Status{Message: "port in use"},
	})
	select {
	case r := <-ch:
		if !slices.Equal(namesOf(t, r), []string{"a"}) {
			t.Fatalf("retry sent %v, want [a]", namesOf(t, r))
		}
	case <-time.After(time.Minute):
		t.Fatal("a NACKed answer was never sent again")
	}
}

// TestWildcardAnswersAnEmptyStore: a wildcard client that does not hold the store's version is
// answered even when the store is empty, so that a proxy whose configuration has no listeners
// drops those it had from another configuration, and a new one is not left waiting. A client
// that holds the empty version is not answered again.
func TestWildcardAnswersAnEmptyStore(t *testing.T) {
	s := NewStore(resourcev3.ListenerType, "empty-")
	s.Update(set())
	for _, version := range []string{"", "other-3"} {
		r, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, VersionInfo: version})
		if r == nil {
			t.Fatalf("a client holding version %q of another store is not answered", version)
		}
		if names := namesOf(t, r); len(names) != 0 {
			t.Fatalf("empty store answered %v", names)
		}
		v, _ := r.GetVersion()
		if again, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, VersionInfo: v, ResponseNonce: "1"}); again != nil {
			t.Fatalf("the ACK of the empty answer (%s) was answered again", v)
		}
	}
}

// TestNewStreamIsAnsweredWhenItHoldsTheCurrentVersion: a proxy back on a new stream (pilot
// ended its old one) can hold exactly what the store has. Its first request is answered all
// the same, so that the new stream's record starts from an answer: state of the world with
// everything it asks for, delta with an empty response naming the store's version. Its ACK
// (a request with a nonce) is not answered again.
func TestNewStreamIsAnsweredWhenItHoldsTheCurrentVersion(t *testing.T) {
	s := NewStore(resourcev3.ClusterType, "p-")
	a := cluster(t, "a", 1)
	s.Update(set(a))
	first, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
	v, _ := first.GetVersion()

	back, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: v})
	if back == nil || !slices.Equal(namesOf(t, back), []string{"a"}) {
		t.Fatalf("state of the world, new stream holding %s: want [a] again, got %v", v, back)
	}
	if again, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: v, ResponseNonce: "1"}); again != nil {
		t.Fatalf("the ACK of that answer was answered: %v", namesOf(t, again))
	}

	sub := streamv3.NewDeltaSubscription(nil, nil, map[string]string{"a": a.Hash()}, true)
	dch := make(chan cachev3.DeltaResponse, 1)
	if _, err := s.CreateDeltaWatch(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType}, &sub, dch); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-dch:
		out, _ := r.GetDeltaDiscoveryResponse()
		if len(out.Resources) != 0 || len(out.RemovedResources) != 0 || out.SystemVersionInfo == "" {
			t.Fatalf("delta, new stream holding a: want an empty response with a version, got %v", out)
		}
		if next := r.GetNextVersionMap(); next["a"] != a.Hash() {
			t.Fatalf("the empty response forgot that the client holds a: %v", next)
		}
	default:
		t.Fatal("delta, new stream holding a: not answered")
	}
}
