package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// A DestinationRule's traffic policy reaches Envoy in four parts, one file each:
// loadbalancer.go (lb_policy and its config; the hash policy goes on routes), connectionpool.go
// (circuit breakers, timeouts, keepalive and the upstream HTTP protocol options),
// outlier.go (outlier_detection) and upstreamtls.go (the TLS transport socket). This file picks
// the policy that applies to one cluster, as istiod does, and hands each part to its file.

// applyTrafficPolicy applies a DestinationRule's traffic policy to the cluster of one service
// port, or of one subset of it (subset may be nil; dr may be nil). It also owns the cluster's
// HTTP protocol options, which HTTP/2 ports need even without any DestinationRule, and a
// sniffed port (sniffed: a sidecar's cluster of one) to speak the client's HTTP version.
func applyTrafficPolicy(c *clusterv3.Cluster, dr *networkingv1.DestinationRule, port model.Port, subset *networking.Subset, sniffed bool) {
	var top *networking.TrafficPolicy
	if dr != nil {
		top = dr.Spec.TrafficPolicy
	}
	policy := mergeTrafficPolicy(top, subset.GetTrafficPolicy(), port.Number)
	pool := policy.GetConnectionPool()

	// In istiod's order: the load balancer last, as PASSTHROUGH changes the discovery type.
	applyConnectionPool(c, pool)
	applyOutlierDetection(c, policy.GetOutlierDetection())
	applyLoadBalancer(c, policy.GetLoadBalancer())

	// Several parts meet in the HttpProtocolOptions extension: the protocol (HTTP/2 ports, an
	// h2UpgradePolicy, useClientProtocol), connection pool limits, TLS's auto SNI and outlier
	// error codes. Each fills its fields; the message is packed once at the end.
	opts := protocolOptions{h2: usesHTTP2(port, pool), downstream: pool.GetHttp().GetUseClientProtocol() || sniffed}
	opts.applyConnectionPool(pool)
	opts.applyOutlierDetection(policy.GetOutlierDetection())
	applyUpstreamTLS(c, policy.GetTls(), &opts)
	opts.setOn(c)
}

// HashPolicy is the consistent-hash policy requests to a DestinationRule's host on a port (and
// subset; "" for none) must carry: Envoy's RING_HASH and MAGLEV clusters hash what the route
// tells them to. It follows the same precedence as the cluster's load balancer, so the route
// hashes exactly when the cluster it targets is a hashing one. nil when dr is nil or the
// policy that applies does not hash.
//
// istiod resolves the hash policy field by field instead (a subset's hash beats the port's,
// and port-level settings count only when the route names the port explicitly), which can put
// a hash on a route whose cluster does not hash, or leave a hashing cluster without one.
func HashPolicy(dr *networkingv1.DestinationRule, port model.Port, subset string) []*routev3.RouteAction_HashPolicy {
	if dr == nil {
		return nil
	}
	var s *networking.Subset
	if subset != "" {
		for _, candidate := range dr.Spec.Subsets {
			if candidate.GetName() == subset {
				s = candidate
				break
			}
		}
	}
	policy := mergeTrafficPolicy(dr.Spec.TrafficPolicy, s.GetTrafficPolicy(), port.Number)
	if p := hashPolicy(policy.GetLoadBalancer().GetConsistentHash()); p != nil {
		return []*routev3.RouteAction_HashPolicy{p}
	}
	return nil
}

// mergeTrafficPolicy is istiod's MergeSubsetTrafficPolicy: the DestinationRule's policy, or
// its portLevelSettings entry for the port, which replaces it whole (a sub-policy the entry
// leaves out falls back to the default, not to the top level); then the subset's policy
// overrides whole sub-policies (loadBalancer, connectionPool, outlierDetection, tls) that it
// sets, and its own portLevelSettings entry for the port, if any, replaces all four. The
// inputs are never modified; the result may be one of them.
func mergeTrafficPolicy(top, subset *networking.TrafficPolicy, port uint32) *networking.TrafficPolicy {
	base, _ := portTrafficPolicy(top, port)
	if subset == nil {
		return base
	}
	override, portLevel := portTrafficPolicy(subset, port)
	if base == nil {
		return override
	}
	merged := &networking.TrafficPolicy{
		LoadBalancer:     base.LoadBalancer,
		ConnectionPool:   base.ConnectionPool,
		OutlierDetection: base.OutlierDetection,
		Tls:              base.Tls,
	}
	if override.LoadBalancer != nil || portLevel {
		merged.LoadBalancer = override.LoadBalancer
	}
	if override.ConnectionPool != nil || portLevel {
		merged.ConnectionPool = override.ConnectionPool
	}
	if override.OutlierDetection != nil || portLevel {
		merged.OutlierDetection = override.OutlierDetection
	}
	if override.Tls != nil || portLevel {
		merged.Tls = override.Tls
	}
	return merged
}

// portTrafficPolicy returns the policy's portLevelSettings entry for port as a policy of its
// own, and true; or the policy itself and false when no entry names the port.
func portTrafficPolicy(policy *networking.TrafficPolicy, port uint32) (*networking.TrafficPolicy, bool) {
	for _, p := range policy.GetPortLevelSettings() {
		if p.GetPort().GetNumber() == port {
			return &networking.TrafficPolicy{
				LoadBalancer:     p.LoadBalancer,
				ConnectionPool:   p.ConnectionPool,
				OutlierDetection: p.OutlierDetection,
				Tls:              p.Tls,
			}, true
		}
	}
	return policy, false
}
