package translate

import (
	"math"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Istio's defaults for outbound clusters when no DestinationRule says otherwise.
const defaultConnectTimeout = 10 * time.Second

// What every outbound cluster carries unless its traffic policy says otherwise, built once and
// shared like previousHostsAny: generated protos are never modified after construction (a
// traffic policy replaces these pointers, see applyConnectionPool, never what they point to).
var (
	sharedConnectTimeout  = Duration(defaultConnectTimeout)
	sharedCircuitBreakers = defaultCircuitBreakers()
	sharedADSConfigSource = ADSConfigSource()
	edsDiscoveryType      = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
)

// edsCluster is an EDS cluster's messages allocated together: a sidecar has a cluster per
// service port and subset, and allocation is most of what building one costs.
type edsCluster struct {
	cluster clusterv3.Cluster
	eds     clusterv3.Cluster_EdsClusterConfig
}

// outboundClusters builds `outbound|PORT|SUBSET|HOST` for every port of every service the proxy
// sees, one more per DestinationRule subset, and the two fixed clusters.
func outboundClusters(snap *model.Snapshot, proxy *model.Proxy) []*clusterv3.Cluster {
	var out []*clusterv3.Cluster
	ctx := clusterContext{
		// Auto-mTLS presents the proxy's own certificate, which one that can never hold one lacks.
		autoMTLS: snap.MayHoldIdentity(proxy),
		sidecar:  proxy.Type == model.SidecarProxy,
	}
	for _, svc := range snap.ServicesFor(proxy) {
		dr := snap.DestinationRuleFor(svc.Hostname, proxy.Namespace)
		for _, port := range svc.Ports {
			if port.Protocol == model.UDP {
				continue // Envoy sidecars do not proxy UDP; neither does Istio.
			}
			out = append(out, outboundCluster(snap, svc, port, dr, nil, ctx))
			if dr == nil {
				continue
			}
			for _, subset := range dr.Spec.Subsets {
				out = append(out, outboundCluster(snap, svc, port, dr, subset, ctx))
			}
		}
	}
	return append(out, passthroughCluster(), blackHoleCluster())
}

// clusterContext is what outbound clusters need to know of the proxy they are built for.
type clusterContext struct {
	autoMTLS bool // the proxy may use auto-mTLS (see applyMeshTLS)
	// sidecar: the proxy sniffs ports whose protocol nothing declares, so their clusters speak
	// the HTTP version the client spoke, as istiod's sidecars' do (gateways do not sniff).
	sidecar bool
}

// outboundCluster builds the cluster of one service port, or of one subset of it, with the
// DestinationRule's traffic policy (dr may be nil).
func outboundCluster(snap *model.Snapshot, svc *model.Service, port model.Port, dr *networkingv1.DestinationRule, subset *networking.Subset, ctx clusterContext) *clusterv3.Cluster {
	name := OutboundClusterName(port.Number, subset.GetName(), svc.Hostname)
	parts := &edsCluster{}
	c := &parts.cluster
	c.Name = name
	c.ConnectTimeout = sharedConnectTimeout
	c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST // Istio's default since 1.14
	c.CircuitBreakers = sharedCircuitBreakers
	c.Metadata = istioMetadata2("services", svc.Hostname, "config", svc.Source)
	switch svc.Resolution {
	case networking.ServiceEntry_STATIC:
		c.ClusterDiscoveryType = edsDiscoveryType
		parts.eds.EdsConfig, parts.eds.ServiceName = sharedADSConfigSource, name
		c.EdsClusterConfig = &parts.eds
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN, networking.ServiceEntry_DYNAMIC_DNS:
		// DNS names are resolved by Envoy, so the endpoints travel inside the cluster.
		typ := clusterv3.Cluster_STRICT_DNS
		if svc.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN {
			typ = clusterv3.Cluster_LOGICAL_DNS
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
		c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
		c.LoadAssignment = dnsLoadAssignment(snap, name, svc, port, subset)
	default: // NONE: forward to wherever the application was connecting.
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	}
	// The traffic policy also sets the upstream HTTP protocol (HTTP/2 for HTTP2 and GRPC ports).
	applyTrafficPolicy(c, dr, port, subset, ctx.sidecar && port.Protocol.IsSniffed())
	// The mesh's own mTLS needs the service (its endpoints' identities, the SNI), which the
	// traffic policy does not see; it follows the same policy precedence.
	var top *networking.TrafficPolicy
	if dr != nil {
		top = dr.Spec.TrafficPolicy
	}
	policy := mergeTrafficPolicy(top, subset.GetTrafficPolicy(), port.Number)
	pool := policy.GetConnectionPool()
	h2 := usesHTTP2(port, pool) && !pool.GetHttp().GetUseClientProtocol()
	applyMeshTLS(c, snap, svc, port.Number, subset.GetName(), policy.GetTls(), h2, ctx.autoMTLS)
	return c
}

// dnsLoadAssignment lists the hostnames Envoy resolves: the entry's endpoints, or the host itself.
func dnsLoadAssignment(snap *model.Snapshot, name string, svc *model.Service, port model.Port, subset *networking.Subset) *endpointv3.ClusterLoadAssignment {
	cla := loadAssignment(snap, name, svc, port, subset.GetLabels())
	if len(svc.Endpoints) == 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(svc.Hostname, port.Number, 0)}}}
	}
	return cla
}

// defaultCircuitBreakers lifts Envoy's small built-in limits (1024) to the maximum, as Istio
// does, so that limits only apply where a DestinationRule asks for them. A new value, which
// the caller may change; clusters without limits of their own share sharedCircuitBreakers.
func defaultCircuitBreakers() *clusterv3.CircuitBreakers {
	max := wrapperspb.UInt32(math.MaxUint32)
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections:     max,
		MaxPendingRequests: max,
		MaxRequests:        max,
		MaxRetries:         max,
		TrackRemaining:     true,
	}}}
}

// passthroughCluster forwards to the original destination: the exit for unknown hosts under
// ALLOW_ANY.
func passthroughCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 PassthroughCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		ConnectTimeout:       sharedConnectTimeout,
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		CircuitBreakers:      sharedCircuitBreakers,
	}
}

// blackHoleCluster has no endpoints: whatever is sent there fails.
func blackHoleCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 BlackHoleCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       sharedConnectTimeout,
	}
}
