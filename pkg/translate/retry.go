package translate

import (
	"slices"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// Istio's retry defaults: two retries on connection-level failures and 503, on another host.
const (
	defaultRetryOn       = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
	defaultRetryAttempts = 2
	retriableStatusCodes = "retriable-status-codes"
)

// defaultRetryPolicy is what Istio applies when a route says nothing about retries.
func defaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:                       defaultRetryOn,
		NumRetries:                    uint32Value(defaultRetryAttempts),
		RetriableStatusCodes:          []uint32{503},
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{previousHostsPredicate()},
		HostSelectionRetryMaxAttempts: 5,
	}
}

// retryPolicy translates HTTPRetry: nil means Istio's default, attempts 0 means no retries, and
// numeric entries in retryOn become retriable status codes.
func retryPolicy(r *networking.HTTPRetry) *routev3.RetryPolicy {
	if r == nil {
		return defaultRetryPolicy()
	}
	if r.Attempts <= 0 {
		return nil
	}
	p := defaultRetryPolicy()
	p.NumRetries = uint32Value(uint32(r.Attempts))
	p.PerTryTimeout = r.PerTryTimeout
	if r.RetryOn != "" {
		var on []string
		p.RetriableStatusCodes = nil
		for _, part := range strings.Split(r.RetryOn, ",") {
			part = strings.TrimSpace(part)
			if code, err := strconv.ParseUint(part, 10, 32); err == nil {
				p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(code))
				continue
			}
			if part != "" {
				on = append(on, part)
			}
		}
		if len(p.RetriableStatusCodes) > 0 && !slices.Contains(on, retriableStatusCodes) {
			on = append(on, retriableStatusCodes)
		}
		p.RetryOn = strings.Join(on, ",")
	}
	return p
}
