package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// The loadBalancer part of a traffic policy. localityLbSetting and zoneAwareLbSetting are not
// translated: Skiff proxies carry no locality of their own to prefer. backendUtilization (ORCA
// weighted round robin) is not translated either; such clusters keep Istio's default.

// defaultMinimumRingSize is the ring istiod asks for when consistentHash names no algorithm:
// Envoy's own default, written out as istiod does so the config dump shows it.
const defaultMinimumRingSize = 1024

// slowStartAggressionKey is the runtime key of a warmup's aggression. Envoy requires one for
// a runtime-overridable value; Skiff sets no runtime, so the configured value is what applies.
const slowStartAggressionKey = "upstream.slow_start.aggression"

// applyLoadBalancer sets the cluster's lb_policy as istiod's applyLoadBalancer does. Without
// settings the cluster keeps what cluster.go gave it (LEAST_REQUEST, Istio's default, or
// CLUSTER_PROVIDED for original-destination clusters, which cannot use any other).
func applyLoadBalancer(c *clusterv3.Cluster, lb *networking.LoadBalancerSettings) {
	if lb == nil || c.GetType() == clusterv3.Cluster_ORIGINAL_DST {
		return
	}
	switch lb.GetSimple() {
	case networking.LoadBalancerSettings_LEAST_REQUEST, networking.LoadBalancerSettings_LEAST_CONN: //nolint:staticcheck // LEAST_CONN is the deprecated alias
		setLeastRequest(c, lb)
	case networking.LoadBalancerSettings_RANDOM:
		c.LbPolicy = clusterv3.Cluster_RANDOM
	case networking.LoadBalancerSettings_ROUND_ROBIN:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		if ss := slowStart(lb); ss != nil {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{SlowStartConfig: ss}}
		}
	case networking.LoadBalancerSettings_PASSTHROUGH:
		// Forward to the address the application connected to: no endpoints to pick from.
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
		c.EdsClusterConfig = nil
		c.LoadAssignment = nil
		return
	default: // UNSPECIFIED, or a consistentHash (which overrides the policy below)
		setLeastRequest(c, lb)
	}
	applyConsistentHash(c, lb.GetConsistentHash())
}

func setLeastRequest(c *clusterv3.Cluster, lb *networking.LoadBalancerSettings) {
	c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	if ss := slowStart(lb); ss != nil {
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{SlowStartConfig: ss}}
	}
}

// slowStart is the warmup of new endpoints: the warmup field, else the deprecated
// warmupDurationSecs; nil when neither is set.
func slowStart(lb *networking.LoadBalancerSettings) *clusterv3.Cluster_SlowStartConfig {
	if w := lb.GetWarmup(); w.GetDuration() != nil {
		ss := &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: w.GetDuration()}
		if a := w.GetAggression(); a != nil {
			ss.Aggression = &corev3.RuntimeDouble{DefaultValue: a.GetValue(), RuntimeKey: slowStartAggressionKey}
		}
		if p := w.GetMinimumPercent(); p != nil {
			ss.MinWeightPercent = &typev3.Percent{Value: p.GetValue()}
		}
		return ss
	}
	if d := lb.GetWarmupDurationSecs(); d != nil {
		return &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: d}
	}
	return nil
}

// applyConsistentHash makes the cluster a hashing one: MAGLEV when asked for, RING_HASH
// otherwise. What is hashed is the route's business (see HashPolicy).
func applyConsistentHash(c *clusterv3.Cluster, ch *networking.LoadBalancerSettings_ConsistentHashLB) {
	if ch == nil {
		return
	}
	switch {
	case ch.GetMaglev() != nil:
		c.LbPolicy = clusterv3.Cluster_MAGLEV
		c.LbConfig = nil
		if size := ch.GetMaglev().GetTableSize(); size != 0 {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(size)}}
		}
	case ch.GetRingHash() != nil:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = nil
		if size := ch.GetRingHash().GetMinimumRingSize(); size != 0 {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(size)}}
		}
	default:
		size := uint64(defaultMinimumRingSize)
		if deprecated := ch.GetMinimumRingSize(); deprecated != 0 { //nolint:staticcheck // still honoured, as by istiod
			size = deprecated
		}
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(size)}}
	}
}

// hashPolicy is istiod's consistentHashToHashPolicy: what a request is hashed on. nil when ch
// is nil or names no key.
func hashPolicy(ch *networking.LoadBalancerSettings_ConsistentHashLB) *routev3.RouteAction_HashPolicy {
	switch key := ch.GetHashKey().(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: key.HttpHeaderName},
		}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		// Envoy sets the cookie on the response only when a ttl is given (0s: a session cookie);
		// without one it hashes an existing cookie and nothing else, as in Istio.
		cookie := &routev3.RouteAction_HashPolicy_Cookie{
			Name: key.HttpCookie.GetName(),
			Path: key.HttpCookie.GetPath(),
			Ttl:  key.HttpCookie.GetTtl(),
		}
		for _, a := range key.HttpCookie.GetAttributes() {
			cookie.Attributes = append(cookie.Attributes, &routev3.RouteAction_HashPolicy_CookieAttribute{Name: a.GetName(), Value: a.GetValue()})
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: cookie}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: key.UseSourceIp},
		}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: key.HttpQueryParameterName},
		}}
	}
	return nil
}
