package translate

import (
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/matcher/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typematcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// The outlierDetection part of a traffic policy. The deprecated consecutiveErrors is not
// translated (istiod no longer does); consecutive5xxErrors replaces it.

// enforcingAlways makes Envoy eject every host a detector flags (Envoy's enforcing_* are the
// percentage of detections acted on).
const enforcingAlways = 100

// applyOutlierDetection is istiod's applyOutlierDetection: the consecutive-error detectors
// that are set, each enforced (a threshold of 0 turns it off); success-rate detection off;
// local-origin errors counted apart only when asked. Envoy's defaults apply to what is not
// set (consecutive5xxErrors 5, interval 10s, baseEjectionTime 30s, maxEjectionPercent 10).
// It also sets the healthy panic threshold to minHealthPercent, 0 unless set: Istio turns
// Envoy's panic mode (50%) off, because a service with two or three endpoints would enter it
// after a single ejection and send traffic to the ejected host again.
func applyOutlierDetection(c *clusterv3.Cluster, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	out := &clusterv3.OutlierDetection{
		EnforcingSuccessRate: uint32Value(0),
		Interval:             od.GetInterval(),
		BaseEjectionTime:     od.GetBaseEjectionTime(),
	}
	if n := od.GetConsecutive_5XxErrors(); n != nil {
		out.Consecutive_5Xx = uint32Value(n.GetValue())
		out.EnforcingConsecutive_5Xx = enforcedIf(n.GetValue() > 0)
	}
	if n := od.GetConsecutiveGatewayErrors(); n != nil {
		out.ConsecutiveGatewayFailure = uint32Value(n.GetValue())
		out.EnforcingConsecutiveGatewayFailure = enforcedIf(n.GetValue() > 0)
	}
	if p := od.GetMaxEjectionPercent(); p > 0 {
		out.MaxEjectionPercent = uint32Value(uint32(p))
	}
	if od.GetSplitExternalLocalOriginErrors() {
		out.SplitExternalLocalOriginErrors = true
		if n := od.GetConsecutiveLocalOriginFailures().GetValue(); n > 0 {
			out.ConsecutiveLocalOriginFailure = uint32Value(n)
			out.EnforcingConsecutiveLocalOriginFailure = uint32Value(enforcingAlways)
		}
		out.EnforcingLocalOriginSuccessRate = uint32Value(0)
	}
	// Setting a failure percentage asks for that detector, which Envoy does not enforce by
	// default. It only acts on hosts with enough requests among enough hosts (Envoy's
	// failure_percentage_request_volume 50 and minimum_hosts 5, which Istio does not expose).
	if t := od.GetFailurePercentageThreshold(); t != nil {
		out.FailurePercentageThreshold = uint32Value(t.GetValue())
		out.EnforcingFailurePercentage = uint32Value(enforcingAlways)
	}
	c.OutlierDetection = out
	if p := od.GetMinHealthPercent(); p >= 0 {
		if c.CommonLbConfig == nil {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
		}
		c.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: float64(p)}
	}
}

func enforcedIf(on bool) *wrapperspb.UInt32Value {
	if on {
		return uint32Value(enforcingAlways)
	}
	return uint32Value(0)
}

// applyOutlierDetection narrows what counts as an error to the listed HTTP statuses:
// Envoy's HTTP outlier error matcher, which replaces its "any 5xx" rule.
func (o *protocolOptions) applyOutlierDetection(od *networking.OutlierDetection) {
	codes := od.GetOutlierDetectionHttpErrorCodes()
	if len(codes) == 0 {
		return
	}
	rules := make([]*matcherv3.MatchPredicate, 0, len(codes))
	for _, code := range codes {
		rules = append(rules, &matcherv3.MatchPredicate{Rule: &matcherv3.MatchPredicate_HttpResponseHeadersMatch{
			HttpResponseHeadersMatch: &matcherv3.HttpHeadersMatch{Headers: []*routev3.HeaderMatcher{{
				Name: ":status",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &typematcherv3.StringMatcher{
					MatchPattern: &typematcherv3.StringMatcher_Exact{Exact: strconv.FormatUint(uint64(code), 10)},
				}},
			}}},
		}})
	}
	match := rules[0]
	if len(rules) > 1 { // Envoy's or_match needs at least two rules
		match = &matcherv3.MatchPredicate{Rule: &matcherv3.MatchPredicate_OrMatch{OrMatch: &matcherv3.MatchPredicate_MatchSet{Rules: rules}}}
	}
	o.outlier = &upstreamhttpv3.HttpProtocolOptions_OutlierDetection{ErrorMatcher: match}
}
