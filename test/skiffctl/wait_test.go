package skiffctl

import (
	"fmt"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

const ratingsCluster = "outbound|9080||ratings.shop.svc.cluster.local"

// ratings is a second service, added and removed by the test.
func ratings(u *framework.Upstream) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings.shop.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: %s, ports: {http: %d}}]
`, u.IP, u.Port)
}

// TestWaitReturnsOnceEnvoyHasTheChange: right after a file is written, `skiffctl wait --for`
// returns only once the Envoy holds the change: each check below runs once, straight after
// the wait, on Envoy's own config_dump and on traffic through it. A changed object (the
// reviews route moves to v2), a new one (a ratings service) and a deleted one (--deleted); an
// object that never comes times out with exit 1, naming what it waited for.
func TestWaitReturnsOnceEnvoyHasTheChange(t *testing.T) {
	s := startShop(t, false)
	s.mustCtl(t, "wait", "--timeout", "2m")
	url := fmt.Sprintf("http://%s:%d/", apiIP, reviewsPort)
	if _, _, body := framework.Do(t, "GET", url, "reviews.shop.svc.cluster.local", nil); !strings.Contains(body, "reviews-v1") {
		t.Fatalf("before the change: reviews answered %q, want reviews-v1", body)
	}

	s.pilot.WriteConfig(t, "route.yaml", reviewsRoute("v2"))
	out := s.mustCtl(t, "wait", "--for", "VirtualService/shop/reviews", "--timeout", "2m")
	if !strings.Contains(out, "VirtualService/shop/reviews: on every proxy (1)") {
		t.Errorf("wait: %s", out)
	}
	if dump := string(s.envoy.ConfigDump(t)); !strings.Contains(dump, `"cluster": "outbound|9080|v2|reviews.shop.svc.cluster.local"`) {
		t.Fatalf("after wait: Envoy's routes do not send reviews to v2")
	}
	if _, _, body := framework.Do(t, "GET", url, "reviews.shop.svc.cluster.local", nil); !strings.Contains(body, "reviews-v2") {
		t.Fatalf("after wait: reviews answered %q, want reviews-v2", body)
	}

	up := framework.StartUpstream(t, "127.0.77.13", "ratings")
	s.pilot.WriteConfig(t, "ratings.yaml", ratings(up))
	s.mustCtl(t, "wait", "--for", "ServiceEntry/shop/ratings", "--timeout", "2m")
	if dump := string(s.envoy.ConfigDump(t)); !strings.Contains(dump, ratingsCluster) {
		t.Fatalf("after wait --for a new ServiceEntry: Envoy has no %s", ratingsCluster)
	}
	if _, _, body := framework.Do(t, "GET", url, "ratings.shop.svc.cluster.local", nil); !strings.Contains(body, "ratings") {
		t.Fatalf("after wait: ratings answered %q", body)
	}

	s.pilot.RemoveConfig(t, "ratings.yaml")
	s.mustCtl(t, "wait", "--for", "ServiceEntry/shop/ratings", "--deleted", "--timeout", "2m")
	if dump := string(s.envoy.ConfigDump(t)); strings.Contains(dump, ratingsCluster) {
		t.Fatalf("after wait --deleted: Envoy still has %s", ratingsCluster)
	}

	// The subject here is the timeout itself: a short one is the point.
	r := s.ctl(t, "wait", "--for", "ServiceEntry/shop/never", "--timeout", "2s")
	if r.code != 1 || !strings.Contains(r.stderr, "the configuration to hold ServiceEntry shop/never") ||
		!strings.Contains(r.stderr, "timed out waiting for ServiceEntry/shop/never") {
		t.Errorf("wait for an object that never comes: want exit 1 naming it: %s", r)
	}
}
