package translate_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// destinationRuleMesh is httpMesh with a DestinationRule per service: a consistent hash, a
// connection pool and outlier detection for the host, and three subsets that override the
// load balancer, the connection pool (upgrading to HTTP/2) and outlier detection in turn. Every
// service then has four clusters that each carry a full traffic policy.
func destinationRuleMesh(n int) *model.Snapshot {
	set := httpMesh(n).Config
	for i := range n {
		set.DestinationRules = append(set.DestinationRules, &networkingv1.DestinationRule{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: "bench"},
			Spec:       benchDestinationRule(fmt.Sprintf("svc-%d.bench.svc.cluster.local", i)),
		})
	}
	return model.Build(set)
}

func benchDestinationRule(host string) networking.DestinationRule {
	d := durationpb.New
	return networking.DestinationRule{
		Host: host,
		TrafficPolicy: &networking.TrafficPolicy{
			LoadBalancer: &networking.LoadBalancerSettings{LbPolicy: &networking.LoadBalancerSettings_ConsistentHash{
				ConsistentHash: &networking.LoadBalancerSettings_ConsistentHashLB{
					HashKey: &networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: "x-user"},
				},
			}},
			ConnectionPool: &networking.ConnectionPoolSettings{
				Tcp: &networking.ConnectionPoolSettings_TCPSettings{MaxConnections: 100, ConnectTimeout: d(time.Second)},
				Http: &networking.ConnectionPoolSettings_HTTPSettings{
					Http1MaxPendingRequests:  50,
					MaxRequestsPerConnection: 10,
					IdleTimeout:              d(time.Minute),
				},
			},
			OutlierDetection: &networking.OutlierDetection{
				Consecutive_5XxErrors: wrapperspb.UInt32(5),
				Interval:              d(10 * time.Second),
				BaseEjectionTime:      d(30 * time.Second),
				MaxEjectionPercent:    50,
			},
		},
		Subsets: []*networking.Subset{
			{
				Name:   "v1",
				Labels: map[string]string{"version": "v1"},
				TrafficPolicy: &networking.TrafficPolicy{LoadBalancer: &networking.LoadBalancerSettings{
					LbPolicy:           &networking.LoadBalancerSettings_Simple{Simple: networking.LoadBalancerSettings_ROUND_ROBIN},
					WarmupDurationSecs: d(time.Minute),
				}},
			},
			{
				Name:   "v2",
				Labels: map[string]string{"version": "v2"},
				TrafficPolicy: &networking.TrafficPolicy{ConnectionPool: &networking.ConnectionPoolSettings{
					Http: &networking.ConnectionPoolSettings_HTTPSettings{
						H2UpgradePolicy:      networking.ConnectionPoolSettings_HTTPSettings_UPGRADE,
						Http2MaxRequests:     1000,
						MaxConcurrentStreams: 100,
					},
				}},
			},
			{
				Name: "all",
				TrafficPolicy: &networking.TrafficPolicy{OutlierDetection: &networking.OutlierDetection{
					ConsecutiveGatewayErrors: wrapperspb.UInt32(3),
					Interval:                 d(5 * time.Second),
					MinHealthPercent:         20,
				}},
			},
		},
	}
}

// BenchmarkDestinationRuleHeavy is BenchmarkGenerate on destinationRuleMesh: one sidecar's
// generation per type, marshalled to Any, when every service has a DestinationRule.
func BenchmarkDestinationRuleHeavy(b *testing.B) {
	proxy, err := model.ParseNodeID("sidecar~10.0.0.1~app-1.bench~bench.svc.cluster.local")
	if err != nil {
		b.Fatal(err)
	}
	const n = 100
	snap := destinationRuleMesh(n)
	// The proxy is captured, so InboundPassthroughCluster joins PassthroughCluster and
	// BlackHoleCluster.
	if got := len(translate.Clusters(snap, proxy)); got != 4*n+3 {
		b.Fatalf("%d clusters, want %d: a cluster per service and subset, and the three fixed ones", got, 4*n+3)
	}
	benchmarkPerType(b, fmt.Sprintf("services=%d", n), snap, proxy)
}
