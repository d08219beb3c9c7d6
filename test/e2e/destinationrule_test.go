package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/test/framework"
)

// DestinationRule traffic policies on real Envoy: what pilot sends is accepted, shows in
// Envoy's /config_dump, and changes what traffic does. Upstreams live on 127.0.1.1–127.0.1.254.

// seedCircuitBreaker is the seed's circuit breaker, verbatim.
const seedCircuitBreaker = `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: temple-api-circuit-breaker
spec:
  host: temple-api-service
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        http1MaxPendingRequests: 50
        maxRequestsPerConnection: 2
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 30s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
`

// TestDestinationRuleSeedCircuitBreaker: the seed's DestinationRule is accepted and every value
// it sets is in Envoy's cluster, in its circuit breaker gauges, and traffic still flows.
func TestDestinationRuleSeedCircuitBreaker(t *testing.T) {
	api := framework.StartUpstream(t, "127.0.1.1", "temple-api")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", serviceEntry("temple-api-service", port, endpoint{upstream: api})+"---\n"+seedCircuitBreaker)
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("dr-seed")})

	name := drClusterName(port, "", "temple-api-service")
	c := drWaitCluster(t, envoy, name, func(c *clusterv3.Cluster) error {
		if c.GetOutlierDetection() == nil {
			return fmt.Errorf("no outlier_detection yet")
		}
		return nil
	})
	th := c.GetCircuitBreakers().GetThresholds()
	if len(th) != 1 {
		t.Fatalf("circuit_breakers.thresholds = %v, want one", th)
	}
	drExpect(t, "max_connections", th[0].GetMaxConnections().GetValue(), uint32(100))
	drExpect(t, "max_pending_requests", th[0].GetMaxPendingRequests().GetValue(), uint32(50))
	// Limits the rule does not set stay lifted, as in Istio.
	drExpect(t, "max_requests", th[0].GetMaxRequests().GetValue(), uint32(1<<32-1))
	drExpect(t, "max_retries", th[0].GetMaxRetries().GetValue(), uint32(1<<32-1))
	opts := drProtocolOptions(t, c)
	drExpect(t, "max_requests_per_connection", opts.GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection().GetValue(), uint32(2))
	od := c.GetOutlierDetection()
	drExpect(t, "consecutive_5xx", od.GetConsecutive_5Xx().GetValue(), uint32(5))
	drExpect(t, "enforcing_consecutive_5xx", od.GetEnforcingConsecutive_5Xx().GetValue(), uint32(100))
	drExpect(t, "interval", od.GetInterval().AsDuration(), 30*time.Second)
	drExpect(t, "base_ejection_time", od.GetBaseEjectionTime().AsDuration(), 30*time.Second)
	drExpect(t, "max_ejection_percent", od.GetMaxEjectionPercent().GetValue(), uint32(50))
	drExpect(t, "healthy_panic_threshold", c.GetCommonLbConfig().GetHealthyPanicThreshold().GetValue(), 0.0)

	// Envoy's own gauges of the limits (track_remaining), and traffic through them: with two
	// requests per upstream connection, Envoy closes a connection after every second request.
	envoy.WaitStat(t, drStat(port, "", "temple-api-service", "circuit_breakers.default.remaining_cx"), drEquals(100))
	envoy.WaitStat(t, drStat(port, "", "temple-api-service", "circuit_breakers.default.remaining_pending"), drEquals(50))
	eventuallyAnswers(t, port, "temple-api-service", "temple-api")
	for range 6 {
		if _, err := get(port, "temple-api-service"); err != nil {
			t.Fatal(err)
		}
	}
	envoy.WaitStat(t, drStat(port, "", "temple-api-service", "upstream_cx_max_requests"), atLeast(3))
	envoy.AssertNoRejections(t)
}

// TestDestinationRuleOutlierEjects: an endpoint answering 503 is ejected after
// consecutive5xxErrors, and traffic then goes only to the healthy one.
func TestDestinationRuleOutlierEjects(t *testing.T) {
	healthy := framework.StartUpstream(t, "127.0.1.2", "healthy")
	broken := framework.StartUpstream(t, "127.0.1.3", "broken", framework.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})))
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", strings.Join([]string{
		serviceEntry("flaky", port, endpoint{upstream: healthy}, endpoint{upstream: broken}),
		drNoRetries("flaky"),
		`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: flaky
  namespace: default
spec:
  host: flaky
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 5m
      maxEjectionPercent: 100
`}, "---\n"))
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("dr-outlier")})
	name := drClusterName(port, "", "flaky")
	drWaitCluster(t, envoy, name, func(c *clusterv3.Cluster) error {
		if c.GetOutlierDetection().GetConsecutive_5Xx().GetValue() != 3 {
			return fmt.Errorf("outlier_detection = %v", c.GetOutlierDetection())
		}
		return nil
	})

	// Round robin alternates, so the broken endpoint sees its third 503 within a few requests;
	// the 503s reach the client, as the route does not retry.
	ejected := drStat(port, "", "flaky", "outlier_detection.ejections_enforced_total")
	fiveXX := 0
	for i := 0; envoy.Stats(t)[ejected] < 1; i++ {
		if i == 50 {
			t.Fatalf("%s still 0 after %d requests (%d answered 503)", ejected, i, fiveXX)
		}
		resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), "flaky", nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status == http.StatusServiceUnavailable {
			fiveXX++
		}
	}
	if fiveXX < 3 {
		t.Errorf("ejected after %d 503s, want at least consecutive5xxErrors (3)", fiveXX)
	}
	envoy.WaitStat(t, drStat(port, "", "flaky", "outlier_detection.ejections_active"), drEquals(1))

	brokenBefore := broken.Requests()
	got, err := count(port, "flaky", 20)
	if err != nil {
		t.Fatalf("after the ejection: %v (answers so far %v)", err, got)
	}
	if got["healthy"] != 20 {
		t.Errorf("after the ejection, answers = %v, want all 20 from healthy", got)
	}
	if n := broken.Requests() - brokenBefore; n != 0 {
		t.Errorf("the ejected endpoint still got %d requests", n)
	}
}

// TestDestinationRuleConnectionPoolOverflow: one connection and one pending request to a slow
// upstream; of 20 concurrent requests the overflow is refused by Envoy with 503 and
// x-envoy-overloaded, and counted in upstream_rq_pending_overflow.
func TestDestinationRuleConnectionPoolOverflow(t *testing.T) {
	slow := framework.StartUpstream(t, "127.0.1.4", "slow", framework.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, "slow")
	})))
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", strings.Join([]string{
		serviceEntry("slow", port, endpoint{upstream: slow}),
		drNoRetries("slow"),
		`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: slow
  namespace: default
spec:
  host: slow
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
`}, "---\n"))
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("dr-overflow")})
	drWaitCluster(t, envoy, drClusterName(port, "", "slow"), func(c *clusterv3.Cluster) error {
		if got := c.GetCircuitBreakers().GetThresholds()[0].GetMaxPendingRequests().GetValue(); got != 1 {
			return fmt.Errorf("max_pending_requests = %d", got)
		}
		return nil
	})
	eventuallyAnswers(t, port, "slow", "slow")

	const n = 20
	type result struct {
		status     int
		overloaded string
		err        error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), "slow", nil)
			if err != nil {
				results[i] = result{err: err}
				return
			}
			results[i] = result{status: resp.Status, overloaded: resp.Header.Get("x-envoy-overloaded")}
		}()
	}
	close(start)
	wg.Wait()
	ok, overloaded := 0, 0
	for _, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("request failed: %v", r.err)
		case r.status == http.StatusOK:
			ok++
		case r.status == http.StatusServiceUnavailable && r.overloaded == "true":
			overloaded++
		default:
			t.Errorf("status %d (x-envoy-overloaded %q), want 200, or 503 from the circuit breaker", r.status, r.overloaded)
		}
	}
	if ok == 0 || overloaded == 0 {
		t.Errorf("%d answered, %d refused as overloaded; want some of each", ok, overloaded)
	}
	envoy.WaitStat(t, drStat(port, "", "slow", "upstream_rq_pending_overflow"), atLeast(uint64(overloaded)))
	t.Logf("%d of %d requests answered, %d refused with x-envoy-overloaded", ok, n, overloaded)
}

// TestDestinationRuleLoadBalancerChange: changing the DestinationRule's load balancer changes
// Envoy's cluster and how requests are spread: ROUND_ROBIN alternates between two endpoints
// (LEAST_REQUEST, Istio's default, picks at random among idle ones); consistentHash by header
// makes a RING_HASH cluster that keeps each header value on one endpoint.
func TestDestinationRuleLoadBalancerChange(t *testing.T) {
	a := framework.StartUpstream(t, "127.0.1.5", "a")
	b := framework.StartUpstream(t, "127.0.1.6", "b")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", serviceEntry("spread", port, endpoint{upstream: a}, endpoint{upstream: b})+"---\n"+drNoRetries("spread"))
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("dr-lb")})
	name := drClusterName(port, "", "spread")
	drWaitCluster(t, envoy, name, drLbPolicy(clusterv3.Cluster_LEAST_REQUEST))

	p.WriteConfig(t, "dr.yaml", drLoadBalancer("spread", "simple: ROUND_ROBIN"))
	drWaitChangedCluster(t, envoy, name, drLbPolicy(clusterv3.Cluster_ROUND_ROBIN))
	var order []string
	for range 10 {
		got, err := get(port, "spread")
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, got)
	}
	for i := 1; i < len(order); i++ {
		if order[i] == order[i-1] {
			t.Fatalf("ROUND_ROBIN answers %v: %s twice in a row", order, order[i])
		}
	}

	p.WriteConfig(t, "dr.yaml", drLoadBalancer("spread", "consistentHash:\n        httpHeaderName: x-user"))
	c := drWaitChangedCluster(t, envoy, name, drLbPolicy(clusterv3.Cluster_RING_HASH))
	drExpect(t, "minimum_ring_size", c.GetRingHashLbConfig().GetMinimumRingSize().GetValue(), uint64(1024))

	t.Run("hash affinity", func(t *testing.T) {
		// The hash policy travels on the route (translate.HashPolicy).
		framework.Eventually(t, func() error {
			if !drRouteHashes(envoy.ConfigDump(t), fmt.Sprintf("spread.default.svc.cluster.local:%d", port)) {
				return fmt.Errorf("no hash_policy on the route yet")
			}
			return nil
		})
		seen := map[string]bool{}
		for i := range 16 {
			user := fmt.Sprintf("user-%d", i)
			first := ""
			for range 4 {
				resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), "spread", map[string]string{"x-user": user})
				if err != nil || resp.Status != http.StatusOK {
					t.Fatalf("x-user %s: %v %v", user, resp, err)
				}
				if first == "" {
					first = resp.Body
				} else if resp.Body != first {
					t.Fatalf("x-user %s answered by %s, then by %s", user, first, resp.Body)
				}
			}
			seen[first] = true
		}
		if len(seen) != 2 {
			t.Errorf("16 users all hashed to %v; want both endpoints used", seen)
		}
	})
}

// TestDestinationRuleUpstreamTLS: TLS origination from files on real traffic. SIMPLE verifies
// the server against the CA and subjectAltNames, MUTUAL also presents a client certificate,
// and a name the server certificate lacks fails the handshake.
func TestDestinationRuleUpstreamTLS(t *testing.T) {
	pki := drNewPKI(t, "secure.skiff.test")
	backend := drStartTLSUpstream(t, "127.0.1.7", pki)
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", strings.Join([]string{
		serviceEntry("secure", port, endpoint{upstream: backend}),
		fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: secure
  namespace: default
spec:
  host: secure
  trafficPolicy:
    tls:
      mode: SIMPLE
      caCertificates: %[1]s
      subjectAltNames: [secure.skiff.test]
      sni: secure.skiff.test
  subsets:
  - name: mutual
    trafficPolicy:
      tls:
        mode: MUTUAL
        caCertificates: %[1]s
        clientCertificate: %[2]s
        privateKey: %[3]s
        sni: secure.skiff.test
  - name: wrongname
    trafficPolicy:
      tls:
        mode: SIMPLE
        caCertificates: %[1]s
        subjectAltNames: [other.skiff.test]
`, pki.caFile, pki.clientCertFile, pki.clientKeyFile),
		`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: secure
  namespace: default
spec:
  hosts:
  - secure
  http:
  - match:
    - headers:
        x-subset:
          exact: mutual
    route:
    - destination:
        host: secure
        subset: mutual
    retries:
      attempts: 0
  - match:
    - headers:
        x-subset:
          exact: wrongname
    route:
    - destination:
        host: secure
        subset: wrongname
    retries:
      attempts: 0
  - route:
    - destination:
        host: secure
    retries:
      attempts: 0
`}, "---\n"))
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("dr-tls")})
	c := drWaitCluster(t, envoy, drClusterName(port, "mutual", "secure"), func(c *clusterv3.Cluster) error {
		if c.GetTransportSocket() == nil {
			return fmt.Errorf("no transport socket")
		}
		return nil
	})
	var tlsCtx tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tlsCtx); err != nil {
		t.Fatal(err)
	}
	if certs := tlsCtx.GetCommonTlsContext().GetTlsCertificates(); len(certs) != 1 || certs[0].GetCertificateChain().GetFilename() != pki.clientCertFile {
		t.Errorf("client certificate = %v, want %s", certs, pki.clientCertFile)
	}

	send := func(subset string) (*framework.Response, error) {
		return framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), "secure", map[string]string{"x-subset": subset})
	}
	framework.Eventually(t, func() error {
		for subset, want := range map[string]string{"": "tls", "mutual": "mtls:skiff-client"} {
			resp, err := send(subset)
			if err != nil {
				return err
			}
			if resp.Status != http.StatusOK || resp.Body != want {
				return fmt.Errorf("subset %q: %d %q, want 200 %q", subset, resp.Status, resp.Body, want)
			}
		}
		return nil
	})
	resp, err := send("wrongname")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusServiceUnavailable {
		t.Errorf("a server certificate without the subjectAltName: status %d %q, want 503", resp.Status, resp.Body)
	}
	envoy.WaitStat(t, drStat(port, "wrongname", "secure", "ssl.fail_verify_san"), atLeast(1))
}

// TestDestinationRuleEveryFieldAccepted: a rule using every field Skiff translates is accepted
// by Envoy (no NACK) and traffic flows through each subset; h2UpgradePolicy UPGRADE makes the
// upstream see HTTP/2.
func TestDestinationRuleEveryFieldAccepted(t *testing.T) {
	proto := framework.StartUpstream(t, "127.0.1.8", "proto", framework.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	})))
	port := framework.FreePort(t, "127.0.0.1")
	subsets := []string{"h2", "client", "maglev", "cookie", "query", "least", "local"}
	var vs strings.Builder
	fmt.Fprintf(&vs, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: everything\n  namespace: default\nspec:\n  hosts:\n  - everything\n  http:\n")
	for _, s := range subsets {
		fmt.Fprintf(&vs, "  - match:\n    - headers:\n        x-subset:\n          exact: %[1]s\n    route:\n    - destination:\n        host: everything\n        subset: %[1]s\n", s)
	}
	vs.WriteString("  - route:\n    - destination:\n        host: everything\n")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", strings.Join([]string{serviceEntry("everything", port, endpoint{upstream: proto}), vs.String(), `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: everything
  namespace: default
spec:
  host: everything
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmupDurationSecs: 10s
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 2s
        maxConnectionDuration: 1h
        idleTimeout: 1h
        tcpKeepalive:
          probes: 3
          time: 300s
          interval: 500ms
      http:
        http1MaxPendingRequests: 100
        http2MaxRequests: 100
        maxRequestsPerConnection: 10
        maxRetries: 3
        idleTimeout: 30s
    outlierDetection:
      consecutive5xxErrors: 5
      consecutiveGatewayErrors: 3
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
      minHealthPercent: 10
      failurePercentageThreshold: 90
      outlierDetectionHttpErrorCodes: [500, 503]
  subsets:
  - name: h2
    trafficPolicy:
      connectionPool:
        http:
          h2UpgradePolicy: UPGRADE
          maxConcurrentStreams: 10
  - name: client
    trafficPolicy:
      connectionPool:
        http:
          useClientProtocol: true
  - name: maglev
    trafficPolicy:
      loadBalancer:
        consistentHash:
          useSourceIp: true
          maglev:
            tableSize: 65537
  - name: cookie
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpCookie:
            name: session
            path: /
            ttl: 60s
            attributes:
            - name: SameSite
              value: Lax
          ringHash:
            minimumRingSize: 256
  - name: query
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpQueryParameterName: user
          minimumRingSize: 128
  - name: least
    trafficPolicy:
      loadBalancer:
        simple: LEAST_REQUEST
        warmup:
          duration: 30s
          minimumPercent: 20
          aggression: 1.5
  - name: local
    trafficPolicy:
      outlierDetection:
        splitExternalLocalOriginErrors: true
        consecutiveLocalOriginFailures: 2
        consecutiveGatewayErrors: 0
  - name: passthrough
    trafficPolicy:
      loadBalancer:
        simple: PASSTHROUGH
`}, "---\n"))
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("dr-everything")})
	for _, s := range append([]string{"", "passthrough"}, subsets...) {
		drWaitCluster(t, envoy, drClusterName(port, s, "everything"), func(*clusterv3.Cluster) error { return nil })
	}
	want := map[string]string{"": "HTTP/1.1", "h2": "HTTP/2.0", "client": "HTTP/1.1"}
	for _, s := range append([]string{""}, subsets...) {
		framework.Eventually(t, func() error {
			resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), "everything", map[string]string{"x-subset": s})
			if err != nil {
				return err
			}
			if resp.Status != http.StatusOK {
				return fmt.Errorf("subset %q: status %d: %s", s, resp.Status, resp.Body)
			}
			if w, ok := want[s]; ok && resp.Body != w {
				return fmt.Errorf("subset %q: upstream spoke %s, want %s", s, resp.Body, w)
			}
			return nil
		})
	}
	envoy.AssertNoRejections(t)
}

// drClusterName is the outbound cluster of a ServiceEntry from serviceEntry.
func drClusterName(port int, subset, name string) string {
	return fmt.Sprintf("outbound|%d|%s|%s.default.svc.cluster.local", port, subset, name)
}

func drStat(port int, subset, name, stat string) string {
	return "cluster." + drClusterName(port, subset, name) + "." + stat
}

func drEquals(n uint64) func(uint64) bool { return func(v uint64) bool { return v == n } }

func drExpect[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// drNoRetries routes a host with retries off: Istio's default retries would turn the 503s these
// tests look for into answers from another attempt.
func drNoRetries(name string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %[1]s
  namespace: default
spec:
  hosts:
  - %[1]s
  http:
  - route:
    - destination:
        host: %[1]s
    retries:
      attempts: 0
`, name)
}

// drLoadBalancer is a DestinationRule with only a load balancer (lb is indented for its place).
func drLoadBalancer(name, lb string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: %s
  namespace: default
spec:
  host: %s
  trafficPolicy:
    loadBalancer:
      %s
`, name, name, lb)
}

func drLbPolicy(want clusterv3.Cluster_LbPolicy) func(*clusterv3.Cluster) error {
	return func(c *clusterv3.Cluster) error {
		if c.GetLbPolicy() != want {
			return fmt.Errorf("lb_policy %v, want %v", c.GetLbPolicy(), want)
		}
		return nil
	}
}

// drWaitCluster waits until Envoy holds the cluster and check accepts it, and returns it.
func drWaitCluster(t *testing.T, envoy *framework.Envoy, name string, check func(*clusterv3.Cluster) error) *clusterv3.Cluster {
	t.Helper()
	var c *clusterv3.Cluster
	framework.Eventually(t, func() error {
		var err error
		if c, err = drDumpedCluster(envoy.ConfigDump(t), name); err != nil {
			return err
		}
		return check(c)
	})
	return c
}

// drWaitChangedCluster is drWaitCluster for a cluster pilot has changed. Envoy warms the new
// version of an EDS cluster until it receives its ClusterLoadAssignment again, which pilot
// re-sends with the cluster; had it not, Envoy would give up waiting after its initial fetch
// timeout (15 s) and activate the cluster without endpoints. That shows in the cluster's
// init_fetch_timeout counter, whatever the machine's speed, so the check is on the counter and
// not on how long the change took.
func drWaitChangedCluster(t *testing.T, envoy *framework.Envoy, name string, check func(*clusterv3.Cluster) error) *clusterv3.Cluster {
	t.Helper()
	c := drWaitCluster(t, envoy, name, check)
	if n := envoy.Stat(t, "cluster."+name+".init_fetch_timeout"); n != 0 {
		t.Fatalf("cluster %s became active only after %d initial fetch timeout(s): pilot did not re-send its endpoints", name, n)
	}
	return c
}

// drDumpedCluster finds a dynamic cluster in Envoy's /config_dump and decodes it.
func drDumpedCluster(dump []byte, name string) (*clusterv3.Cluster, error) {
	var doc struct {
		Configs []struct {
			Type     string `json:"@type"`
			Clusters []struct {
				Cluster json.RawMessage `json:"cluster"`
			} `json:"dynamic_active_clusters"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(dump, &doc); err != nil {
		return nil, fmt.Errorf("config_dump: %w", err)
	}
	for _, cfg := range doc.Configs {
		for _, dc := range cfg.Clusters {
			var any anypb.Any
			if err := protojson.Unmarshal(dc.Cluster, &any); err != nil {
				return nil, fmt.Errorf("config_dump cluster: %w", err)
			}
			var c clusterv3.Cluster
			if err := any.UnmarshalTo(&c); err != nil {
				return nil, err
			}
			if c.GetName() == name {
				return &c, nil
			}
		}
	}
	return nil, fmt.Errorf("Envoy has no cluster %s", name)
}

// drProtocolOptions decodes the cluster's upstream HTTP protocol options.
func drProtocolOptions(t *testing.T, c *clusterv3.Cluster) *upstreamhttpv3.HttpProtocolOptions {
	t.Helper()
	packed := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if packed == nil {
		t.Fatalf("cluster %s has no HttpProtocolOptions", c.GetName())
	}
	var opts upstreamhttpv3.HttpProtocolOptions
	if err := packed.UnmarshalTo(&opts); err != nil {
		t.Fatal(err)
	}
	return &opts
}

// drRouteHashes reports whether a route of the virtual host carries a hash policy in Envoy's
// /config_dump (read as plain JSON: routes hold filter configs this test does not decode).
func drRouteHashes(dump []byte, virtualHost string) bool {
	var doc struct {
		Configs []struct {
			Routes []struct {
				Config struct {
					VirtualHosts []struct {
						Name   string `json:"name"`
						Routes []struct {
							Route struct {
								HashPolicy []json.RawMessage `json:"hash_policy"`
							} `json:"route"`
						} `json:"routes"`
					} `json:"virtual_hosts"`
				} `json:"route_config"`
			} `json:"dynamic_route_configs"`
		} `json:"configs"`
	}
	if json.Unmarshal(dump, &doc) != nil {
		return false
	}
	for _, cfg := range doc.Configs {
		for _, rc := range cfg.Routes {
			for _, vh := range rc.Config.VirtualHosts {
				if vh.Name != virtualHost {
					continue
				}
				for _, r := range vh.Routes {
					if len(r.Route.HashPolicy) > 0 {
						return true
					}
				}
			}
		}
	}
	return false
}

// drPKI is a fresh CA with a server certificate for one name and a client certificate, as PEM
// files Envoy reads.
type drPKI struct {
	roots                                 *x509.CertPool
	server                                tls.Certificate
	caFile, clientCertFile, clientKeyFile string
}

func drNewPKI(t *testing.T, serverName string) *drPKI {
	t.Helper()
	p := framework.NewPKI(t, serverName, "skiff-client")
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return &drPKI{
		roots:          p.Roots,
		server:         p.Server,
		caFile:         write("ca.pem", p.CAPEM),
		clientCertFile: write("client.pem", p.ClientCertPEM),
		clientKeyFile:  write("client-key.pem", p.ClientKeyPEM),
	}
}

// drStartTLSUpstream serves HTTPS on ip with the PKI's server certificate, verifying a client
// certificate when one is sent; it answers "mtls:CN" for a client with a certificate, "tls"
// otherwise.
func drStartTLSUpstream(t *testing.T, ip string, pki *drPKI) *framework.Upstream {
	t.Helper()
	l, err := tls.Listen("tcp", net.JoinHostPort(ip, "0"), &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientCAs:    pki.roots,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatalf("listening on %s: %v", ip, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if certs := r.TLS.PeerCertificates; len(certs) > 0 {
			_, _ = io.WriteString(w, "mtls:"+certs[0].Subject.CommonName)
			return
		}
		_, _ = io.WriteString(w, "tls")
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("TLS upstream on %s stopped serving: %v", ip, err)
		}
	})
	return &framework.Upstream{Name: "secure", IP: ip, Port: l.Addr().(*net.TCPAddr).Port}
}
