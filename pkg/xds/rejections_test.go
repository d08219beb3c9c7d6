package xds

import (
	"bytes"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
)

const reviewsCluster = "outbound|80||reviews.default.svc.cluster.local"

func serviceEntry(name string) *networkingv1.ServiceEntry {
	return &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: networking.ServiceEntry{
			Hosts:      []string{name + ".default.svc.cluster.local"},
			Ports:      []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
			Resolution: networking.ServiceEntry_STATIC,
			Endpoints:  []*networking.WorkloadEntry{{Address: "10.0.0.1"}},
		},
	}
}

// connectionLimit is a DestinationRule that changes the reviews cluster.
func connectionLimit(n int32) *networkingv1.DestinationRule {
	return &networkingv1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"},
		Spec: networking.DestinationRule{
			Host: "reviews.default.svc.cluster.local",
			TrafficPolicy: &networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{
				Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: n},
			}},
		},
	}
}

// clustersOf decodes a CDS response by name.
func clustersOf(t *testing.T, resp *discoveryv3.DiscoveryResponse) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, a := range resp.Resources {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		out[c.Name] = a.Value
	}
	return out
}

func gauge(t *testing.T, reg *prometheus.Registry, name, typ string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{type=%q}", name, typ)
	return 0
}

// A client that NACKs one cluster of a change, naming it as Envoy does, is sent the rest of the
// change with that cluster at the version it accepted; syncz and skiff_xds_rejected_resources
// show it until a new translation of it is tried.
func TestNackedClusterIsHeldAtItsAcceptedVersion(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, conn := serve(t, Options{Registry: reg})
	s.Push(model.Build(&config.Set{ServiceEntries: []*networkingv1.ServiceEntry{serviceEntry("reviews")}}), time.Now())
	stream := openADS(t, conn)
	if err := stream.Send(cdsRequest(testNode)); err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	accepted := clustersOf(t, first)
	ack := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: first.Nonce, VersionInfo: first.VersionInfo}
	if err := stream.Send(ack); err != nil {
		t.Fatal(err)
	}

	// One change modifies reviews and adds ratings; the proxy rejects reviews.
	s.Push(model.Build(&config.Set{
		ServiceEntries:   []*networkingv1.ServiceEntry{serviceEntry("reviews"), serviceEntry("ratings")},
		DestinationRules: []*networkingv1.DestinationRule{connectionLimit(10)},
	}), time.Now())
	rejected, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(clustersOf(t, rejected)[reviewsCluster], accepted[reviewsCluster]) {
		t.Fatal("the change did not modify the reviews cluster")
	}
	message := "Error adding/updating cluster(s) " + reviewsCluster + ": Proto constraint validation failed (ClusterValidationError.ConnectTimeout: value must be greater than 0s)"
	nack := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: rejected.Nonce, VersionInfo: first.VersionInfo,
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: message}}
	if err := stream.Send(nack); err != nil {
		t.Fatal(err)
	}
	held, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := clustersOf(t, held)
	if !bytes.Equal(got[reviewsCluster], accepted[reviewsCluster]) {
		t.Error("the answer to the NACK does not hold reviews at its accepted version")
	}
	if _, ok := got["outbound|80||ratings.default.svc.cluster.local"]; !ok {
		t.Errorf("the answer to the NACK lacks the new ratings cluster: %v", got)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: held.Nonce, VersionInfo: held.VersionInfo}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ACK of the held version", func() bool { return s.Statuses()[0].Types["cds"].Acked == held.VersionInfo })
	cds := s.Statuses()[0].Types["cds"]
	if len(cds.Rejected) != 1 || cds.Rejected[0].Name != reviewsCluster || cds.Rejected[0].Error != message || cds.Rejected[0].HeldVersion != first.VersionInfo {
		t.Fatalf("syncz rejected = %+v; want %s held at %s", cds.Rejected, reviewsCluster, first.VersionInfo)
	}
	if n := gauge(t, reg, "skiff_xds_rejected_resources", "cds"); n != 1 {
		t.Errorf("skiff_xds_rejected_resources{type=cds} = %v, want 1", n)
	}
	// The held version is ACKed, yet the change did not reach the proxy: a wait says so.
	if report := s.SyncState(); len(report.Rejected) != 1 || report.Rejected[0].Type != "cds" ||
		!strings.Contains(report.Rejected[0].Error, reviewsCluster) || report.Rejected[0].Version != first.VersionInfo {
		t.Errorf("/debug/wait after the held version was ACKed: rejected = %+v, want %s held at %s", report.Rejected, reviewsCluster, first.VersionInfo)
	}

	// A new translation of reviews is tried again, and the rejection goes.
	s.Push(model.Build(&config.Set{
		ServiceEntries:   []*networkingv1.ServiceEntry{serviceEntry("reviews"), serviceEntry("ratings")},
		DestinationRules: []*networkingv1.DestinationRule{connectionLimit(20)},
	}), time.Now())
	retried, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if b := clustersOf(t, retried)[reviewsCluster]; bytes.Equal(b, accepted[reviewsCluster]) || bytes.Equal(b, clustersOf(t, rejected)[reviewsCluster]) {
		t.Error("the new translation of reviews was not sent")
	}
	if r := s.Statuses()[0].Types["cds"].Rejected; len(r) != 0 {
		t.Errorf("syncz still shows rejections after the change: %+v", r)
	}
	if n := gauge(t, reg, "skiff_xds_rejected_resources", "cds"); n != 0 {
		t.Errorf("skiff_xds_rejected_resources{type=cds} = %v after the change, want 0", n)
	}
	if report := s.SyncState(); len(report.Rejected) != 0 {
		t.Errorf("/debug/wait still sees a rejection after the change: %+v", report.Rejected)
	}
}
