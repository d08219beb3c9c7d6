package xds

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	networking "istio.io/api/networking/v1"
	security "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/test/framework"
)

// withDenyDelete is the mesh with a namespace-wide AuthorizationPolicy denying DELETE: a
// policy that selects by no label, so proxies keep their configuration keys.
func withDenyDelete(snap *model.Snapshot) *model.Snapshot {
	set := *snap.Config
	set.AuthorizationPolicies = []*securityv1.AuthorizationPolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "no-delete", Namespace: "default"},
		Spec: security.AuthorizationPolicy{
			Action: security.AuthorizationPolicy_DENY,
			Rules:  []*security.Rule{{To: []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"DELETE"}}}}}},
		},
	}}
	return model.Build(&set)
}

// recvACK reads one response of typeURL and acknowledges it.
func recvACK(t *testing.T, stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, node, typeURL string, names ...string) *discoveryv3.DiscoveryResponse {
	t.Helper()
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.TypeUrl != typeURL {
		t.Fatalf("got a %s response, want %s", resp.TypeUrl, typeURL)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typeURL, ResourceNames: names,
		VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
		t.Fatal(err)
	}
	return resp
}

// An AuthorizationPolicy change translates a sidecar's extension configurations and listeners
// alone (the listeners' TCP chains carry a mark of the TCP rules) and sends it the changed RBAC
// rules, which Envoy swaps in place.
func TestPolicyChangeTranslatesRulesAndListenersOnly(t *testing.T) {
	s, conn := serve(t, Options{IgnoreNodeLabels: true})
	snap := podMesh(1, "10.0.0.1", v1Labels)
	s.Push(snap, time.Now())
	node := podNode(0)
	stream := openADS(t, conn)
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	recvACK(t, stream, node, resourcev3.ListenerType)
	deny := "inbound.rbac.http.deny"
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resourcev3.ExtensionConfigType, ResourceNames: []string{deny}}); err != nil {
		t.Fatal(err)
	}
	first := recvACK(t, stream, node, resourcev3.ExtensionConfigType, deny)
	if len(first.Resources) != 1 {
		t.Fatalf("%d extension configurations for one name", len(first.Resources))
	}
	ctx, cancel := context.WithTimeout(t.Context(), framework.Patience)
	defer cancel()
	if _, err := s.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	translations := counterValue(t, s.metrics.translations)

	s.Push(withDenyDelete(snap), time.Now())
	resp := recvACK(t, stream, node, resourcev3.ExtensionConfigType, deny)
	var got corev3.TypedExtensionConfig
	if len(resp.Resources) != 1 || resp.Resources[0].UnmarshalTo(&got) != nil || got.Name != deny ||
		!strings.Contains(string(got.TypedConfig.GetValue()), "ns[default]-policy[no-delete]-rule[0]") {
		t.Fatalf("after the policy change: %v, want %s with the policy's rule", resp.Resources, deny)
	}
	if _, err := s.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, s.metrics.translations) - translations; n != 2 {
		t.Errorf("a policy change made %v translations, want 2 (the extension configurations and the listeners)", n)
	}
}

// Pending route and policy changes, each of which translates one type, together translate
// everything; with a full or an endpoints push they are the larger.
func TestPushKindsCombine(t *testing.T) {
	for _, c := range []struct{ a, b, want pushKind }{
		{pushRoutes, pushPolicies, pushFull},
		{pushPolicies, pushRoutes, pushFull},
		{pushPolicies, pushPolicies, pushPolicies},
		{pushEndpoints, pushPolicies, pushPolicies},
		{pushNone, pushRoutes, pushRoutes},
		{pushFull, pushPolicies, pushFull},
	} {
		if got := c.a.and(c.b); got != c.want {
			t.Errorf("%v and %v = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// A routes or a policies push leaves endpoints as they were and so does not rebuild them, but
// an endpoints change still pending when a route change arrives must reach the proxies with
// it: the pending push remembers that endpoints may have moved.
func TestPendingPushRemembersMovedEndpoints(t *testing.T) {
	s := New(Options{})
	s.snap = podMesh(1, "10.0.0.1", v1Labels) // as pushed already
	withRoute := func(snap *model.Snapshot) *model.Snapshot {
		set := *snap.Config
		set.VirtualServices = []*networkingv1.VirtualService{{
			ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"},
			Spec: networking.VirtualService{
				Hosts: []string{"reviews.default.svc.cluster.local"},
				Http:  []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "reviews.default.svc.cluster.local"}}}}},
			},
		}}
		return model.Build(&set)
	}
	s.Push(withRoute(s.snap), time.Now())
	if s.pending != pushRoutes || s.pendingEndpoints {
		t.Fatalf("after a route change: pending %v, endpoints %v; want a routes push that leaves endpoints", s.pending, s.pendingEndpoints)
	}
	s.Push(withRoute(podMesh(1, "10.0.0.2", v1Labels)), time.Now())
	if s.pending != pushRoutes || !s.pendingEndpoints {
		t.Fatalf("after a route and an endpoint change: pending %v, endpoints %v; want a routes push that rebuilds endpoints", s.pending, s.pendingEndpoints)
	}
	s.Push(withDenyDelete(withRoute(podMesh(1, "10.0.0.2", v1Labels))), time.Now())
	if !s.pendingEndpoints {
		t.Fatal("a policy change after an endpoint change forgot the endpoints")
	}
}
