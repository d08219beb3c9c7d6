package translate

import (
	"math"

	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	networking "istio.io/api/networking/v1alpha3"
)

// faultHTTPFilter is the fault filter every HTTP connection manager carries, as istiod's do. It
// is empty, so it does nothing until a route's typed_per_filter_config gives it a fault; being
// always there means a VirtualService that adds a fault changes routes only, never listeners.
var faultHTTPFilter = &hcmv3.HttpFilter{
	Name:       wellknown.Fault,
	ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: MustAny(&faultv3.HTTPFault{})},
}

// grpcStatusCodes are the gRPC status names Istio accepts for abort.grpcStatus.
var grpcStatusCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
	"NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
	"FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
	"INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// translateFault converts HTTPFaultInjection to the fault filter's per-route configuration, as
// istiod does: a delay or abort without a percentage applies to no request (Istio's documented
// default); exponential delays, HTTP/2 errors and unknown gRPC status names are not supported
// and leave that half out. nil when nothing is left.
func translateFault(in *networking.HTTPFaultInjection) *faultv3.HTTPFault {
	if in == nil {
		return nil
	}
	out := &faultv3.HTTPFault{}
	if d := in.Delay; d != nil {
		if fixed := d.GetFixedDelay(); fixed != nil {
			out.Delay = &faultcommonv3.FaultDelay{
				FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: fixed},
				Percentage:         faultPercent(d.Percentage, d.Percent), //nolint:staticcheck // percent is deprecated but still honoured, as istiod does
			}
		}
	}
	if a := in.Abort; a != nil {
		abort := &faultv3.FaultAbort{Percentage: faultPercent(a.Percentage, 0)}
		switch e := a.ErrorType.(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(e.HttpStatus)}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			if code, ok := grpcStatusCodes[e.GrpcStatus]; ok {
				abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: code}
			}
		}
		if abort.ErrorType != nil {
			out.Abort = abort
		}
	}
	if out.Delay == nil && out.Abort == nil {
		return nil
	}
	return out
}

// faultPercent is Istio's percentage as a fraction of a million, or the deprecated integer
// percent when no percentage is given.
func faultPercent(p *networking.Percent, legacy int32) *typev3.FractionalPercent {
	if p == nil {
		return &typev3.FractionalPercent{Numerator: uint32(max(legacy, 0)), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return percentOfMillion(p.GetValue())
}

// percentOfMillion turns an Istio percentage (0–100, fractional) into Envoy's per-million
// fraction. It rounds, where istiod truncates: 33.3% must be 333000 in a million, not 332999.
func percentOfMillion(percent float64) *typev3.FractionalPercent {
	n := math.Round(percent * 10000)
	n = min(max(n, 0), 1_000_000)
	return &typev3.FractionalPercent{Numerator: uint32(n), Denominator: typev3.FractionalPercent_MILLION}
}
