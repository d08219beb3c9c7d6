package fanout

import (
	"fmt"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// A shared answer is written from its resources' pre-boxed fields while the store has not
// changed, and resource by resource after: the same bytes as proto.Marshal both ways.
func TestSharedAnswerWrittenFromResourceFields(t *testing.T) {
	answer := func(s *Store) *discoveryv3.DiscoveryResponse {
		t.Helper()
		resp, _, _ := sotw(t, s, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
		if resp == nil {
			t.Fatal("a first wildcard request was not answered")
		}
		msg, err := resp.GetDiscoveryResponse()
		if err != nil {
			t.Fatal(err)
		}
		msg.Nonce = "7"
		return msg
	}
	write := func(msg *discoveryv3.DiscoveryResponse) (buffers int) {
		t.Helper()
		out, ok := codecWrite(t, msg)
		if !ok {
			t.FailNow()
		}
		return len(out)
	}
	small, large := NewStore(resourcev3.ClusterType, "s-"), NewStore(resourcev3.ClusterType, "l-")
	small.Update(set(cluster(t, "a", 1), cluster(t, "b", 2), cluster(t, "c", 3)))
	many := map[string]*Resource{}
	for i := range 30 {
		r := cluster(t, fmt.Sprint("c", i), int64(i))
		many[r.Name()] = r
	}
	large.Update(many)
	smallMsg, largeMsg := answer(small), answer(large)
	// version, then head and value of each of three resources, then type and nonce
	if n := write(smallMsg); n != 8 {
		t.Errorf("the shared answer was written in %d buffers, want 8 (its resources' fields)", n)
	}
	write(largeMsg)
	allocs := func(m *discoveryv3.DiscoveryResponse) float64 {
		return testing.AllocsPerRun(20, func() { _, _ = Codec{}.Marshal(m) })
	}
	if a3, a30 := allocs(smallMsg), allocs(largeMsg); a30 != a3 {
		t.Errorf("writing a shared answer of 3 resources allocated %v times, of 30 %v: it should not depend on its resources", a3, a30)
	}
	small.Update(set(cluster(t, "a", 4)))
	if n := write(smallMsg); n == 8 {
		t.Error("an answer of before the store's change is still registered")
	}
}

// A delta response is written from its resources' registered fields, with allocations that do
// not depend on how many it carries, and resource by resource when one is not from Encoded:
// the same bytes as proto.Marshal both ways.
func TestDeltaResponseWrittenFromResourceFields(t *testing.T) {
	response := func(n int) *discoveryv3.DeltaDiscoveryResponse {
		m := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "3", TypeUrl: resourcev3.ClusterType, Nonce: "9", RemovedResources: []string{"gone"}}
		for i := range n {
			m.Resources = append(m.Resources, cluster(t, fmt.Sprint("c", i), int64(i+1)).deltaMessage())
		}
		return m
	}
	small, large := response(3), response(30)
	out, ok := codecWrite(t, small)
	if !ok {
		t.FailNow()
	}
	// version, then head, value and name of each of three resources, then type, nonce, removal
	if len(out) != 11 {
		t.Errorf("written in %d buffers, want 11 (its resources' fields)", len(out))
	}
	codecWrite(t, large)
	allocs := func(m *discoveryv3.DeltaDiscoveryResponse) float64 {
		return testing.AllocsPerRun(20, func() { _, _ = Codec{}.Marshal(m) })
	}
	if a3, a30 := allocs(small), allocs(large); a30 != a3 {
		t.Errorf("writing 3 resources allocated %v times, 30 %v: it should not depend on the resources", a3, a30)
	}
	a := cluster(t, "a", 1)
	small.Resources = append(small.Resources, &discoveryv3.Resource{Name: "a", Version: a.Hash(), Resource: a.any})
	if out, ok := codecWrite(t, small); ok && len(out) == 14 {
		t.Error("a resource not from Encoded was written as registered fields")
	}
}
