package translate

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// Istio's retry defaults: two retries on connection-level failures and 503, on another host.
const (
	defaultRetryOn       = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
	defaultRetryAttempts = 2
	retriableStatusCodes = "retriable-status-codes"
)

// previousPrioritiesAny is istiod's retry priority for retryRemoteLocalities: move to the next
// priority (locality) after each attempt, updating every 2 attempts. Shared like
// previousHostsAny: it is never modified.
var previousPrioritiesAny = MustAny(&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 2})

// defaultRetryPolicy is what Istio applies when a route says nothing about retries.
func defaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:                       defaultRetryOn,
		NumRetries:                    uint32Value(defaultRetryAttempts),
		RetriableStatusCodes:          []uint32{http.StatusServiceUnavailable},
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{previousHostsPredicate()},
		HostSelectionRetryMaxAttempts: 5,
	}
}

// sharedDefaultRetry and sharedHashedRetry are Istio's default policy, without the
// previous-hosts predicate for hashed routes. Nearly every route carries one, so each is built
// once and shared by every route of every translation, like previousHostsAny: generated protos
// are never modified after construction (retryPolicy builds a fresh one to change anything).
var (
	sharedDefaultRetry = defaultRetryPolicy()
	sharedHashedRetry  = func() *routev3.RetryPolicy {
		p := defaultRetryPolicy()
		p.RetryHostPredicate = nil
		return p
	}()
)

// retryPolicy translates HTTPRetry as istiod's ConvertPolicy does: nil means Istio's default,
// attempts 0 means no retries, and numeric entries in retryOn become retriable status codes.
// With consistent hashing (hashed), a retry must stay on the host the hash picked, so the
// previous-hosts predicate is left out unless retryIgnorePreviousHosts asks for it. The
// result may be shared with other routes: never modify it.
func retryPolicy(r *networking.HTTPRetry, hashed bool) *routev3.RetryPolicy {
	if r == nil {
		if hashed {
			return sharedHashedRetry
		}
		return sharedDefaultRetry
	}
	if r.Attempts <= 0 {
		return nil
	}
	p := defaultRetryPolicy()
	if hashed {
		p.RetryHostPredicate = nil
	}
	p.NumRetries = uint32Value(uint32(r.Attempts))
	p.PerTryTimeout = r.PerTryTimeout
	if r.RetryOn != "" {
		p.RetryOn, p.RetriableStatusCodes = parseRetryOn(r.RetryOn)
	}
	if ignore := r.RetryIgnorePreviousHosts; ignore != nil {
		p.RetryHostPredicate = nil
		if ignore.GetValue() {
			p.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{previousHostsPredicate()}
		}
	}
	if r.RetryRemoteLocalities.GetValue() {
		p.RetryPriority = &routev3.RetryPolicy_RetryPriority{
			Name:       "envoy.retry_priorities.previous_priorities",
			ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: previousPrioritiesAny},
		}
	}
	if r.Backoff != nil {
		p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: r.Backoff}
	}
	return p
}

// parseRetryOn splits retryOn into Envoy's retry_on and the HTTP status codes among it; codes
// only take effect with retriable-status-codes, which is added when missing.
func parseRetryOn(retryOn string) (string, []uint32) {
	var on []string
	var codes []uint32
	for _, part := range strings.Split(retryOn, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		// Any three-digit status counts, not only those Go has a name for: the loader accepts
		// 100–599, and Envoy would reject an unknown word in retry_on.
		if code, err := strconv.Atoi(part); err == nil && code >= 100 && code <= 599 {
			codes = append(codes, uint32(code))
			continue
		}
		on = append(on, part)
	}
	if len(codes) > 0 && !slices.Contains(on, retriableStatusCodes) {
		on = append(on, retriableStatusCodes)
	}
	return strings.Join(on, ","), codes
}

// noRetries is a route's own policy that turns retries off (VirtualService attempts: 0) when
// its virtual host carries Istio's default: an empty policy retries on nothing.
var noRetries = &routev3.RetryPolicy{NumRetries: uint32Value(0)}

// hoistDefaultRetry moves Istio's default retry policy from a sidecar virtual host's routes
// to the virtual host. Envoy applies a virtual host's retry policy to each route that has
// none, and a route's own policy replaces it whole, so every route retries exactly as before;
// but the policy, most of a route's bytes, is sent and held once per service rather than once
// per route (a fifth of a 1,000-service route configuration). Routes that retry otherwise keep
// their own policy, and routes that must not retry get noRetries. vh's routes must be its own:
// they are changed in place. The routes of a rule with several matches share one action
// (httpRoutesFor), so an action is changed once: seen again with no policy, it is one this
// pass cleared, not one that must not retry.
func hoistDefaultRetry(vh *routev3.VirtualHost) {
	var plain, hashed int
	for _, r := range vh.Routes {
		switch r.GetRoute().GetRetryPolicy() {
		case sharedDefaultRetry:
			plain++
		case sharedHashedRetry:
			hashed++
		}
	}
	if plain+hashed == 0 {
		return
	}
	vh.RetryPolicy = sharedDefaultRetry
	if hashed > plain {
		vh.RetryPolicy = sharedHashedRetry
	}
	var few [4]*routev3.RouteAction // a virtual host has a route or a few: no allocation
	cleared := few[:0]
	for _, r := range vh.Routes {
		action := r.GetRoute()
		switch {
		case action == nil:
		case action.RetryPolicy == vh.RetryPolicy:
			action.RetryPolicy = nil
			cleared = append(cleared, action)
		case action.RetryPolicy == nil && !slices.Contains(cleared, action):
			action.RetryPolicy = noRetries
		}
	}
}
