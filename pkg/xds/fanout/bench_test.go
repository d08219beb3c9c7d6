package fanout

import (
	"fmt"
	"strconv"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
)

// benchStreams and benchResources are the scale of issue 11 for one store: 2,000 proxies
// watching 1,000 resources.
const (
	benchStreams   = 2000
	benchResources = 1000
)

// BenchmarkPushWildcard is one change of one cluster reaching 2,000 state-of-the-world
// streams, each of which ACKs and waits again: the hot path of a push.
func BenchmarkPushWildcard(b *testing.B) {
	s, clusters := benchClusters(b)
	chans := make([]chan cachev3.Response, benchStreams)
	for i := range chans {
		chans[i] = make(chan cachev3.Response, 1)
		req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType}
		if _, err := s.CreateWatch(req, streamv3.NewSotwSubscription(nil, true), chans[i]); err != nil {
			b.Fatal(err)
		}
	}
	ack := func() {
		for _, ch := range chans {
			r := <-ch
			v, _ := r.GetVersion()
			req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: v, ResponseNonce: "1"}
			if _, err := s.CreateWatch(req, streamv3.NewSotwSubscription(nil, true), ch); err != nil {
				b.Fatal(err)
			}
		}
	}
	changeOneCluster(b, s, clusters, ack)
}

// benchClusters is a store of benchResources clusters, and the clusters.
func benchClusters(b *testing.B) (*Store, map[string]*Resource) {
	s := NewStore(resourcev3.ClusterType, "p-")
	clusters := map[string]*Resource{}
	for i := range benchResources {
		clusters[fmt.Sprint("c", i)] = cluster(b, fmt.Sprint("c", i), 1)
	}
	s.Update(clusters)
	return s, clusters
}

// changeOneCluster has every stream ACK what it was sent, then measures changes of one
// cluster, each followed by every stream's ACK.
func changeOneCluster(b *testing.B, s *Store, clusters map[string]*Resource, ack func()) {
	ack()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		clusters["c0"] = cluster(b, "c0", int64(i+2))
		s.Update(clusters)
		ack()
	}
}

// BenchmarkPushNamed is one change of ten assignments reaching 2,000 EDS streams that each ask
// for all 1,000, in ten distinct subscriptions, each stream ACKing and waiting again.
func BenchmarkPushNamed(b *testing.B) {
	s := NewStore(resourcev3.EndpointType, "p-")
	all := map[string]*Resource{}
	var names []string
	for i := range benchResources {
		n := "a" + strconv.Itoa(i)
		names = append(names, n)
		all[n] = assignment(b, n, 1)
	}
	s.Update(all)
	sets := make([][]string, 10)
	for i := range sets {
		sets[i] = names[:len(names)-i]
	}
	chans := make([]chan cachev3.Response, benchStreams)
	for i := range chans {
		chans[i] = make(chan cachev3.Response, 1)
		req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: sets[i%len(sets)]}
		if _, err := s.CreateWatch(req, streamv3.NewSotwSubscription(nil, true), chans[i]); err != nil {
			b.Fatal(err)
		}
	}
	ack := func() {
		for i, ch := range chans {
			r := <-ch
			v, _ := r.GetVersion()
			req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: v, ResponseNonce: "1", ResourceNames: sets[i%len(sets)]}
			if _, err := s.CreateWatch(req, streamv3.NewSotwSubscription(nil, true), ch); err != nil {
				b.Fatal(err)
			}
		}
	}
	ack()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j := range 10 {
			n := "a" + strconv.Itoa(j*97)
			all[n] = assignment(b, n, uint32(i+2))
		}
		s.Update(all)
		ack()
	}
}

// BenchmarkPushDelta is BenchmarkPushWildcard for delta streams: one change of one cluster
// reaching 2,000 delta streams that each hold all 1,000, each ACKing with a new request (as
// delta clients do) and waiting again. Its cost must not grow with the names each holds.
func BenchmarkPushDelta(b *testing.B) {
	s, clusters := benchClusters(b)
	type stream struct {
		sub streamv3.Subscription
		ch  chan cachev3.DeltaResponse
	}
	streams := make([]*stream, benchStreams)
	for i := range streams {
		st := &stream{sub: streamv3.NewDeltaSubscription(nil, nil, nil, true), ch: make(chan cachev3.DeltaResponse, 1)}
		streams[i] = st
		if _, err := s.CreateDeltaWatch(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType}, &st.sub, st.ch); err != nil {
			b.Fatal(err)
		}
	}
	ack := func() {
		for _, st := range streams {
			r := <-st.ch
			st.sub.SetReturnedResources(r.GetNextVersionMap())
			req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: "1"}
			if _, err := s.CreateDeltaWatch(req, &st.sub, st.ch); err != nil {
				b.Fatal(err)
			}
		}
	}
	changeOneCluster(b, s, clusters, ack)
}
