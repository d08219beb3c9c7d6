package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// mirrorPolicies translates mirror (with mirrorPercentage or the deprecated mirrorPercent) and
// mirrors into Envoy's request_mirror_policies, as istiod does: each mirror is a cluster named
// like a route destination (host resolved in the VirtualService's namespace, subset, port), at
// 100% unless a percentage says otherwise, and an explicit 0% mirrors nothing. Mirrored
// requests are not trace-sampled, so a shadow never shows up as the real request in a trace.
func mirrorPolicies(snap *model.Snapshot, proxy *model.Proxy, ns string, rule *networking.HTTPRoute, port model.Port) []*routev3.RouteAction_RequestMirrorPolicy {
	var out []*routev3.RouteAction_RequestMirrorPolicy
	add := func(d *networking.Destination, fraction *typev3.FractionalPercent) {
		if d == nil || fraction == nil {
			return
		}
		out = append(out, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster:         destinationCluster(snap, proxy, ns, d, port),
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: fraction},
			TraceSampled:    falseValue(),
		})
	}
	if rule.Mirror != nil {
		add(rule.Mirror, mirrorFraction(rule))
	}
	for _, m := range rule.Mirrors {
		add(m.GetDestination(), percentageOrAll(m.GetPercentage()))
	}
	return out
}

// mirrorFraction is the share of requests the single `mirror` receives.
func mirrorFraction(rule *networking.HTTPRoute) *typev3.FractionalPercent {
	if rule.MirrorPercentage != nil {
		return percentageOrAll(rule.MirrorPercentage)
	}
	if p := rule.MirrorPercent; p != nil { //nolint:staticcheck // deprecated, still honoured as istiod does
		if p.GetValue() == 0 {
			return nil
		}
		return &typev3.FractionalPercent{Numerator: min(p.GetValue(), 100), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return allRequests()
}

// percentageOrAll: no percentage means every request; an explicit zero means none (nil).
func percentageOrAll(p *networking.Percent) *typev3.FractionalPercent {
	if p == nil {
		return allRequests()
	}
	if p.GetValue() <= 0 {
		return nil
	}
	return percentOfMillion(p.GetValue())
}

func allRequests() *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}
}
