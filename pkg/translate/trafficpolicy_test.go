package translate_test

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// TestHashPolicyFollowsClusterPrecedence: the route's hash policy is the consistent hash of the
// load balancer the target cluster gets, with the same precedence (port-level settings replace
// the host's policy, a subset's sub-policies replace the host's, a subset's port-level entry
// replaces all of them), so a route hashes exactly when its cluster does.
func TestHashPolicyFollowsClusterPrecedence(t *testing.T) {
	byHeader := func(h string) *networking.LoadBalancerSettings {
		return &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{
			ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: h}},
		}}
	}
	header := func(h string) []*routev3.RouteAction_HashPolicy {
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h}}}}
	}
	dr := &networkingv1.DestinationRule{Spec: networking.DestinationRule{
		Host: "cart",
		TrafficPolicy: &networking.TrafficPolicy{
			LoadBalancer: byHeader("x-host"),
			PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{
				{Port: &networking.PortSelector{Number: 8080}, LoadBalancer: byHeader("x-port")},
				{Port: &networking.PortSelector{Number: 9090}, ConnectionPool: &networking.ConnectionPoolSettings{}},
			},
		},
		Subsets: []*networking.Subset{
			{Name: "pool", TrafficPolicy: &networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{}}},
			{Name: "simple", TrafficPolicy: &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{
				LbPolicy: &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_RANDOM},
			}}},
			{Name: "subset-port", TrafficPolicy: &networking.TrafficPolicy{
				LoadBalancer: byHeader("x-subset"),
				PortLevelSettings: []*networking.TrafficPolicy_PortTrafficPolicy{
					{Port: &networking.PortSelector{Number: 80}, OutlierDetection: &networking.OutlierDetection{}},
				},
			}},
		},
	}}
	for _, tc := range []struct {
		name   string
		dr     *networkingv1.DestinationRule
		port   uint32
		subset string
		want   []*routev3.RouteAction_HashPolicy
	}{
		{"no rule", nil, 80, "", nil},
		{"host", dr, 80, "", header("x-host")},
		{"port-level load balancer", dr, 8080, "", header("x-port")},
		{"port-level entry without one resets it", dr, 9090, "", nil},
		{"subset inherits the host's", dr, 80, "pool", header("x-host")},
		{"subset inherits the port's", dr, 8080, "pool", header("x-port")},
		{"subset's simple load balancer does not hash", dr, 80, "simple", nil},
		{"subset's port-level entry replaces everything", dr, 80, "subset-port", nil},
		{"subset's own on other ports", dr, 8080, "subset-port", header("x-subset")},
		{"unknown subset", dr, 80, "nope", header("x-host")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := translate.HashPolicy(tc.dr, model.Port{Number: tc.port, Protocol: model.HTTP}, tc.subset)
			if len(got) != len(tc.want) || (len(got) == 1 && !proto.Equal(got[0], tc.want[0])) {
				t.Errorf("HashPolicy = %v, want %v", got, tc.want)
			}
		})
	}
}
