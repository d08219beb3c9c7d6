package xds

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/test/framework"
)

// twoServices is meshSnapshot with a second service: a change of clusters.
func twoServices() *model.Snapshot {
	set := &config.Set{}
	for _, name := range []string{"reviews", "ratings"} {
		set.ServiceEntries = append(set.ServiceEntries, &networkingv1.ServiceEntry{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: networking.ServiceEntry{
				Hosts:      []string{name + ".default.svc.cluster.local"},
				Ports:      []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
				Resolution: networking.ServiceEntry_STATIC,
				Endpoints:  []*networking.WorkloadEntry{{Address: "10.0.0.1"}},
			},
		})
	}
	return model.Build(set)
}

// answerAll answers every response on stream as Envoy would, NACKing clusters while nackCDS
// is set, until the stream ends.
func answerAll(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, nackCDS *atomic.Bool) {
	for {
		resp, err := stream.Recv()
		if err != nil {
			return
		}
		answer := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce, VersionInfo: resp.VersionInfo}
		if resp.TypeUrl == resourcev3.ClusterType && nackCDS.Load() {
			answer.VersionInfo = ""
			answer.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "cluster rejected for the test"}
		}
		if err := stream.Send(answer); err != nil {
			return
		}
	}
}

// subscribe opens a stream for node asking for clusters and listeners, as Envoy does.
func subscribe(t *testing.T, conn *grpc.ClientConn, node string) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	stream := openADS(t, conn)
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	return stream
}

func waitSynced(t *testing.T, s *Server, timeout time.Duration) (SyncReport, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	return s.WaitSynced(ctx)
}

func pendingFor(r SyncReport, proxy, typ string) bool {
	return slices.ContainsFunc(r.Pending, func(p SyncPending) bool { return p.Proxy == proxy && p.Type == typ })
}

// WaitSynced returns once every response is answered: an unanswered response, or a proxy that
// has not asked for listeners yet, is pending; a NACK is answered too, and reported.
func TestWaitSyncedFollowsAnswers(t *testing.T) {
	s, conn := startServer(t)
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	stream := openADS(t, conn)
	if err := stream.Send(cdsRequest(testNode)); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	report := s.SyncState()
	if report.Synced || !pendingFor(report, testNode, "cds") || !pendingFor(report, testNode, "lds") {
		t.Fatalf("with clusters unanswered and no listeners asked for: %+v", report)
	}

	// Envoy's next steps: ACK the clusters, ask for listeners, ACK them.
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce, VersionInfo: resp.VersionInfo}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: testNode}, TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	var nackCDS atomic.Bool
	go answerAll(stream, &nackCDS)
	report, err = waitSynced(t, s, framework.Patience)
	if err != nil || report.Proxies != 1 || len(report.Rejected) != 0 {
		t.Fatalf("after the ACKs: %+v, %v", report, err)
	}

	// A change of clusters that the proxy rejects: the wait ends, and says so.
	nackCDS.Store(true)
	s.Push(twoServices(), time.Now())
	report, err = waitSynced(t, s, framework.Patience)
	if err != nil {
		t.Fatalf("after the NACK: %+v, %v", report, err)
	}
	if len(report.Rejected) != 1 || report.Rejected[0].Type != "cds" || report.Rejected[0].Error != "cluster rejected for the test" {
		t.Errorf("rejections = %+v, want the clusters' NACK", report.Rejected)
	}

	// A proxy that never answers holds the wait up until it times out, named in the report.
	other := "sidecar~127.0.0.2~app-2.default~default.svc.cluster.local"
	silent := subscribe(t, conn, other)
	if _, err := silent.Recv(); err != nil {
		t.Fatal(err)
	}
	report, err = waitSynced(t, s, 200*time.Millisecond)
	if err == nil || report.Synced || report.Proxies != 2 || !pendingFor(report, other, "cds") {
		t.Errorf("with a silent proxy: %+v, %v; want it pending", report, err)
	}
	if pendingFor(report, testNode, "cds") {
		t.Errorf("the answering proxy is pending: %+v", report.Pending)
	}
}

// A proxy that pilot disconnects because its class changed configuration is waited for
// until it is back and in sync.
func TestWaitSyncedWaitsForReconnects(t *testing.T) {
	s, conn := startServer(t)
	s.Push(meshSnapshot("10.0.0.1"), time.Now())
	stream := subscribe(t, conn, testNode)
	var never atomic.Bool
	go answerAll(stream, &never)
	if report, err := waitSynced(t, s, framework.Patience); err != nil {
		t.Fatalf("first sync: %+v, %v", report, err)
	}

	_, class, _ := s.tracker.ClassOf(testNode)
	s.tracker.disconnectClass(class)
	report, err := waitSynced(t, s, 200*time.Millisecond)
	if err == nil || !pendingFor(report, testNode, "") {
		t.Fatalf("after the disconnect: %+v, %v; want the proxy pending", report, err)
	}

	again := subscribe(t, conn, testNode)
	go answerAll(again, &never)
	if report, err := waitSynced(t, s, framework.Patience); err != nil || report.Proxies != 1 {
		t.Fatalf("after the reconnect: %+v, %v", report, err)
	}
}

// TestObjectCondition: a wait --for holds once the snapshot has the object, at the
// resourceVersion asked for or a later one; with deleted, once it is gone.
func TestObjectCondition(t *testing.T) {
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "shop", ResourceVersion: "5"}}
	snap := model.Build(config.NewSet(vs))
	for _, c := range []struct {
		kind, rv string
		deleted  bool
		want     bool
	}{
		{"VirtualService", "", false, true},
		{"virtualservice", "5", false, true},
		{"VirtualService", "4", false, true},
		{"VirtualService", "6", false, false},
		{"VirtualService", "", true, false},
		{"DestinationRule", "", false, false},
		{"DestinationRule", "", true, true},
	} {
		cond, err := ObjectCondition(c.kind, "shop", "reviews", c.rv, c.deleted)
		if err != nil {
			t.Fatal(err)
		}
		if got, missing := cond(snap); got != c.want {
			t.Errorf("%s shop/reviews rv %q deleted %v: holds %v (%s), want %v", c.kind, c.rv, c.deleted, got, missing, c.want)
		}
	}
	if _, err := ObjectCondition("VirtualService", "shop", "reviews", "latest", false); err == nil {
		t.Error("resourceVersion \"latest\" accepted")
	}
}
