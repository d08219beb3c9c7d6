package translate_test

import (
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/translate"
)

// A rule with several matches and no retries field retries as Istio's default on every one of
// its routes. Its routes share one action, and hoisting the default policy to the virtual host
// once turned the second and later into routes that never retry.
func TestMultiMatchRuleKeepsDefaultRetries(t *testing.T) {
	const file = "testdata/virtualservice-match.yaml"
	snap := loadCase(t, file)
	proxy := caseProxy(t, file)
	found := 0
	for _, rc := range translate.Routes(snap, proxy) {
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				if !strings.HasPrefix(r.Name, "login") {
					continue
				}
				found++
				policy := r.GetRoute().GetRetryPolicy()
				if policy == nil {
					policy = vh.RetryPolicy // Envoy applies the virtual host's to a route without one
				}
				if got := policy.GetNumRetries().GetValue(); got != 2 {
					t.Errorf("%s: route %s (match %v) retries %d times, want Istio's default 2", vh.Name, r.Name, r.Match, got)
				}
			}
		}
	}
	if found < 3 {
		t.Fatalf("found %d routes of the login rule, want its three matches that apply on 9080", found)
	}
}
