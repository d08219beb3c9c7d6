package translate

import (
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// corsHTTPFilter is the CORS filter every HTTP connection manager carries after the fault
// filter, as istiod's do; like it, it acts only where a route gives it a policy.
var corsHTTPFilter = &hcmv3.HttpFilter{
	Name:       wellknown.CORS,
	ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: MustAny(&corsv3.Cors{})},
}

// translateCORS converts a CorsPolicy to the CORS filter's per-route policy, as istiod does:
// enabled for every request, origins matched by allowOrigins (or the deprecated exact
// allowOrigin list), lists joined with commas, maxAge in whole seconds, and preflights that
// match no origin forwarded upstream unless unmatchedPreflights is IGNORE.
func translateCORS(in *networking.CorsPolicy) *corsv3.CorsPolicy {
	if in == nil {
		return nil
	}
	out := &corsv3.CorsPolicy{
		AllowMethods:     strings.Join(in.AllowMethods, ","),
		AllowHeaders:     strings.Join(in.AllowHeaders, ","),
		ExposeHeaders:    strings.Join(in.ExposeHeaders, ","),
		AllowCredentials: in.AllowCredentials,
		FilterEnabled: &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
		},
		ForwardNotMatchingPreflights: wrapperspb.Bool(in.UnmatchedPreflights != networking.CorsPolicy_IGNORE),
	}
	if in.MaxAge != nil {
		out.MaxAge = strconv.FormatInt(in.MaxAge.GetSeconds(), 10)
	}
	if len(in.AllowOrigins) > 0 {
		for _, o := range in.AllowOrigins {
			if sm := stringMatcher(o); sm != nil {
				out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, sm)
			}
		}
	} else {
		for _, o := range in.AllowOrigin { //nolint:staticcheck // deprecated, still honoured as istiod does
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch,
				&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}})
		}
	}
	return out
}
