package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// VirtualService features on real traffic through a sidecar without capture. Upstreams live on
// 127.0.2.1–127.0.2.254; each test has its own pilot, Envoy and service port.

// vsNode is the sidecar every test here uses, with labels for sourceLabels matches.
const vsNode = "sidecar~127.0.0.1~web-1.default~default.svc.cluster.local"

func startVSEnvoy(t *testing.T, p *framework.Pilot) *framework.Envoy {
	t.Helper()
	return framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: vsNode, BootstrapArgs: []string{"--labels", "app=web"}})
}

// applyRoutes writes a VirtualService and waits until Envoy has applied a new version of the
// port's route configuration and check passes.
func applyRoutes(t *testing.T, p *framework.Pilot, envoy *framework.Envoy, port int, name, yaml string, check func() error) {
	t.Helper()
	rds := fmt.Sprintf("http.outbound_127.0.0.1_%d.rds.%d.update_success", port, port)
	envoy.WaitStat(t, rds, atLeast(1))
	before := envoy.Stat(t, rds)
	p.WriteConfig(t, name, yaml)
	envoy.WaitStat(t, rds, atLeast(before+1))
	if check != nil {
		framework.Eventually(t, check)
	}
}

// send makes one request through the sidecar's listener on port.
func send(port int, host, path string, headers map[string]string) (*framework.Response, error) {
	return framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), host, headers)
}

func wantStatus(port int, host, path string, status int) func() error {
	return func() error {
		resp, err := send(port, host, path, nil)
		if err != nil {
			return err
		}
		if resp.Status != status {
			return fmt.Errorf("GET %s: %d %q, want %d", path, resp.Status, resp.Body, status)
		}
		return nil
	}
}

func clusterStat(port int, subset, name, stat string) string {
	return fmt.Sprintf("cluster.outbound|%d|%s|%s.default.svc.cluster.local.%s", port, subset, name, stat)
}

// attemptHandler answers by the attempt number Envoy sends (x-envoy-attempt-count, which Istio's
// virtual hosts ask for), so a test controls what each retry sees.
func attemptHandler(answer func(attempt int, w http.ResponseWriter, r *http.Request)) framework.UpstreamOption {
	return framework.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempt, _ := strconv.Atoi(r.Header.Get("x-envoy-attempt-count"))
		answer(attempt, w, r)
	}))
}

// sleep waits d or until the request is cancelled, so a test ending does not wait for it.
func sleep(r *http.Request, d time.Duration) {
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	}
}

// TestVirtualServiceCanary is the seed's canary: `canary: true` always reaches v2, the rest is
// split 90/10 between DestinationRule subsets v1 and v2.
func TestVirtualServiceCanary(t *testing.T) {
	v1 := framework.StartUpstream(t, "127.0.2.1", "v1")
	v2 := framework.StartUpstream(t, "127.0.2.2", "v2")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "api.yaml", serviceEntry("temple-api", port, endpoint{v1, "v1"}, endpoint{v2, "v2"}))
	envoy := startVSEnvoy(t, p)

	// Make before break: the subsets' clusters first, the routes once Envoy has them.
	p.WriteConfig(t, "subsets.yaml", subsets("temple-api"))
	for _, subset := range []string{"v1", "v2"} {
		envoy.WaitStat(t, clusterStat(port, subset, "temple-api", "update_success"), atLeast(1))
	}
	applyRoutes(t, p, envoy, port, "canary.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: temple-api-canary
  namespace: default
spec:
  hosts:
  - temple-api
  http:
  - match:
    - headers:
        canary:
          exact: "true"
    route:
    - destination:
        host: temple-api
        subset: v2
  - route:
    - destination:
        host: temple-api
        subset: v1
      weight: 90
    - destination:
        host: temple-api
        subset: v2
      weight: 10
`, func() error {
		resp, err := send(port, "temple-api", "/", map[string]string{"canary": "true"})
		if err == nil && resp.Body != "v2" {
			err = fmt.Errorf("canary request answered by %q", resp.Body)
		}
		return err
	})

	for i := range 100 {
		resp, err := send(port, "temple-api", "/", map[string]string{"canary": "true"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != http.StatusOK || resp.Body != "v2" {
			t.Fatalf("canary request %d: %d %q, want v2", i, resp.Status, resp.Body)
		}
	}
	const n = 2000
	got, err := count(port, "temple-api", n)
	if err != nil {
		t.Fatal(err)
	}
	// 90% of 2,000 has a standard deviation of 0.67 points; ±3 points is 4.5 of them.
	share := 100 * float64(got["v1"]) / n
	t.Logf("v1 share over %d requests: %.2f%% (%v)", n, share, got)
	if math.Abs(share-90) > 3 || got["v1"]+got["v2"] != n {
		t.Errorf("v1 got %.2f%% of %d requests (%v), want 90±3", share, n, got)
	}
}

// startFlakyMesh serves service `flaky` on a free port from an upstream on addr that answers
// 503 to its first `failures` attempts of each request (x-envoy-attempt-count) and "flaky"
// after, with the tests' sidecar in front of it.
func startFlakyMesh(t *testing.T, addr string, failures int) (*framework.Pilot, *framework.Envoy, int) {
	t.Helper()
	flaky := framework.StartUpstream(t, addr, "flaky", attemptHandler(func(attempt int, w http.ResponseWriter, _ *http.Request) {
		if attempt <= failures {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "flaky")
	}))
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "flaky.yaml", serviceEntry("flaky", port, endpoint{upstream: flaky}))
	return p, startVSEnvoy(t, p), port
}

// TestVirtualServiceRetries: an upstream that fails the first two attempts with 503 gives the
// client 200 under `retries: {attempts: 3, retryOn: 5xx}`, and Envoy counts the retries; with
// one attempt the client sees the 503.
func TestVirtualServiceRetries(t *testing.T) {
	p, envoy, port := startFlakyMesh(t, "127.0.2.3", 2)
	applyRoutes(t, p, envoy, port, "retries.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: flaky
  namespace: default
spec:
  hosts:
  - flaky
  http:
  - match:
    - uri:
        prefix: /once
    route:
    - destination:
        host: flaky
    retries:
      attempts: 1
      retryOn: 5xx
  - route:
    - destination:
        host: flaky
    retries:
      attempts: 3
      retryOn: 5xx
`, wantStatus(port, "flaky", "/once", http.StatusServiceUnavailable))

	retries := clusterStat(port, "", "flaky", "upstream_rq_retry")
	before := envoy.Stat(t, retries)
	const n = 10
	for i := range n {
		resp, err := send(port, "flaky", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != http.StatusOK || resp.Body != "flaky" {
			t.Fatalf("request %d: %d %q, want 200 after two retries", i, resp.Status, resp.Body)
		}
	}
	if got := envoy.Stat(t, retries) - before; got != 2*n {
		t.Errorf("%s grew by %d over %d requests, want %d (two retries each)", retries, got, n, 2*n)
	}
}

// TestVirtualServiceDefaultRetriesEveryMatch: a rule with several matches and no retries field
// retries as Istio's default (a 503 is retried) on every match, not only the first. Its routes
// share one action, which hoisting the default policy to the virtual host once left without
// retries on all but the first.
func TestVirtualServiceDefaultRetriesEveryMatch(t *testing.T) {
	p, envoy, port := startFlakyMesh(t, "127.0.2.15", 1)
	applyRoutes(t, p, envoy, port, "matches.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: flaky
  namespace: default
spec:
  hosts:
  - flaky
  http:
  - name: paths
    match:
    - uri:
        prefix: /first
    - uri:
        prefix: /second
    - uri:
        prefix: /third
    route:
    - destination:
        host: flaky
  - directResponse:
      status: 404
`, wantStatus(port, "flaky", "/nowhere", http.StatusNotFound))

	for _, path := range []string{"/first", "/second", "/third"} {
		resp, err := send(port, "flaky", path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != http.StatusOK || resp.Body != "flaky" {
			t.Errorf("%s: %d %q, want 200 after one retry of the 503", path, resp.Status, resp.Body)
		}
	}
}

// TestVirtualServiceTimeout: `timeout: 1s` on an upstream that takes 3 s answers 504 after
// 1.0–1.5 s.
func TestVirtualServiceTimeout(t *testing.T) {
	slow := framework.StartUpstream(t, "127.0.2.4", "slow", framework.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sleep(r, 3*time.Second)
		fmt.Fprint(w, "slow")
	})))
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "slow.yaml", serviceEntry("slow", port, endpoint{upstream: slow}))
	envoy := startVSEnvoy(t, p)
	applyRoutes(t, p, envoy, port, "timeout.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: slow
  namespace: default
spec:
  hosts:
  - slow
  http:
  - route:
    - destination:
        host: slow
    timeout: 1s
    retries:
      attempts: 0
`, nil)

	framework.Eventually(t, func() error {
		start := time.Now()
		resp, err := send(port, "slow", "/", nil)
		elapsed := time.Since(start)
		if err != nil {
			return err
		}
		if resp.Status != http.StatusGatewayTimeout || elapsed < time.Second || elapsed > 1500*time.Millisecond {
			return fmt.Errorf("answered %d after %v, want 504 after 1.0–1.5 s", resp.Status, elapsed)
		}
		t.Logf("504 after %v", elapsed)
		return nil
	})
	envoy.WaitStat(t, clusterStat(port, "", "slow", "upstream_rq_timeout"), atLeast(1))
}

// TestVirtualServicePerTryTimeout: a first try that hangs is cut by perTryTimeout and the
// retry answers, long before the hanging try would have.
func TestVirtualServicePerTryTimeout(t *testing.T) {
	hangs := framework.StartUpstream(t, "127.0.2.5", "hangs-once", attemptHandler(func(attempt int, w http.ResponseWriter, r *http.Request) {
		if attempt == 1 {
			sleep(r, 3*time.Second)
		}
		fmt.Fprintf(w, "attempt %d", attempt)
	}))
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "hangs.yaml", serviceEntry("hangs", port, endpoint{upstream: hangs}))
	envoy := startVSEnvoy(t, p)
	applyRoutes(t, p, envoy, port, "pertry.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hangs
  namespace: default
spec:
  hosts:
  - hangs
  http:
  - route:
    - destination:
        host: hangs
    retries:
      attempts: 2
      perTryTimeout: 300ms
      retryOn: 5xx
`, nil)

	framework.Eventually(t, func() error {
		start := time.Now()
		resp, err := send(port, "hangs", "/", nil)
		elapsed := time.Since(start)
		if err != nil {
			return err
		}
		if resp.Status != http.StatusOK || resp.Body != "attempt 2" || elapsed < 300*time.Millisecond || elapsed > 1500*time.Millisecond {
			return fmt.Errorf("answered %d %q after %v, want 200 from attempt 2 after 0.3–1.5 s", resp.Status, resp.Body, elapsed)
		}
		t.Logf("%q after %v", resp.Body, elapsed)
		return nil
	})
	envoy.WaitStat(t, clusterStat(port, "", "hangs", "upstream_rq_per_try_timeout"), atLeast(1))
}

// TestVirtualServiceFault: an abort for 50% of requests fails about half of 1,000, and a fixed
// delay of 500 ms is observed, both injected by Envoy's fault filter.
func TestVirtualServiceFault(t *testing.T) {
	up := framework.StartUpstream(t, "127.0.2.6", "ratings")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "ratings.yaml", serviceEntry("ratings", port, endpoint{upstream: up}))
	envoy := startVSEnvoy(t, p)
	applyRoutes(t, p, envoy, port, "fault.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
  namespace: default
spec:
  hosts:
  - ratings
  http:
  - match:
    - uri:
        prefix: /delay
    fault:
      delay:
        fixedDelay: 500ms
        percentage:
          value: 100
    route:
    - destination:
        host: ratings
  - fault:
      abort:
        httpStatus: 503
        percentage:
          value: 50
    route:
    - destination:
        host: ratings
    retries:
      attempts: 0
`, func() error {
		start := time.Now()
		_, err := send(port, "ratings", "/delay", nil)
		if err == nil && time.Since(start) < 450*time.Millisecond {
			err = errors.New("no delay yet")
		}
		return err
	})

	// Envoy's timers may fire a few milliseconds early (its clock is coarse), hence 450 ms.
	for range 3 {
		start := time.Now()
		resp, err := send(port, "ratings", "/delay", nil)
		elapsed := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("/delay answered %d after %v", resp.Status, elapsed)
		if resp.Status != http.StatusOK || elapsed < 450*time.Millisecond || elapsed > 1500*time.Millisecond {
			t.Errorf("/delay answered %d after %v, want 200 after about 500 ms", resp.Status, elapsed)
		}
	}
	const n = 1000
	codes := map[int]int{}
	for range n {
		resp, err := send(port, "ratings", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		codes[resp.Status]++
	}
	// 50% of 1,000 has a standard deviation of 1.6 points; ±6 is nearly four of them.
	share := 100 * float64(codes[http.StatusServiceUnavailable]) / n
	t.Logf("aborted %.1f%% of %d requests (%v)", share, n, codes)
	if math.Abs(share-50) > 6 || codes[http.StatusOK]+codes[http.StatusServiceUnavailable] != n {
		t.Errorf("statuses %v over %d requests: want 50±6%% 503 and the rest 200", codes, n)
	}
	stats := envoy.Stats(t)
	if got := stats[fmt.Sprintf("http.outbound_127.0.0.1_%d.fault.aborts_injected", port)]; got != uint64(codes[http.StatusServiceUnavailable]) {
		t.Errorf("fault.aborts_injected = %d, want %d", got, codes[http.StatusServiceUnavailable])
	}
	if got := stats[fmt.Sprintf("http.outbound_127.0.0.1_%d.fault.delays_injected", port)]; got < 4 {
		t.Errorf("fault.delays_injected = %d, want at least 4", got)
	}
}

// TestVirtualServiceRewriteRedirectDirectResponse: uri rewrites (prefix and exact), an
// authority rewrite, header operations, redirects with Location, a direct response with its
// body, a CORS preflight answered by Envoy, and a match that only applies to proxies with the
// source labels it names.
func TestVirtualServiceRewriteRedirectDirectResponse(t *testing.T) {
	echo := framework.StartUpstream(t, "127.0.2.7", "echo", framework.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-seen-host", r.Host)
		w.Header().Set("x-seen-route", r.Header.Get("x-route"))
		fmt.Fprint(w, r.URL.RequestURI())
	})))
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "echo.yaml", serviceEntry("echo", port, endpoint{upstream: echo}))
	envoy := startVSEnvoy(t, p)
	other := framework.StartEnvoy(t, p, framework.EnvoyOptions{
		NodeID:        "sidecar~127.0.2.8~api-1.default~default.svc.cluster.local",
		BootstrapArgs: []string{"--labels", "app=api", "--interception", "redirect"},
	})
	applyRoutes(t, p, envoy, port, "echo-vs.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo
  namespace: default
spec:
  hosts:
  - echo
  http:
  - match:
    - uri:
        prefix: /v1/api/
    rewrite:
      uri: /api/
    headers:
      request:
        set:
          x-route: rewritten
      response:
        add:
          x-mesh: skiff
    route:
    - destination:
        host: echo
  - match:
    - uri:
        exact: /login
    rewrite:
      uri: /auth/sign-in
      authority: auth.internal
    route:
    - destination:
        host: echo
  - match:
    - uri:
        prefix: /old/
    redirect:
      uri: /new/place
  - match:
    - uri:
        prefix: /shop
    redirect:
      authority: store.example.com
      redirectCode: 302
  - match:
    - uri:
        exact: /teapot
    directResponse:
      status: 418
      body:
        string: short and stout
  - match:
    - uri:
        prefix: /web-only
      sourceLabels:
        app: web
    directResponse:
      status: 200
      body:
        string: for web
  - match:
    - uri:
        prefix: /cors
    corsPolicy:
      allowOrigins:
      - exact: https://app.example.com
      allowMethods:
      - GET
      - PUT
      maxAge: 1h
    route:
    - destination:
        host: echo
  - route:
    - destination:
        host: echo
`, wantStatus(port, "echo", "/teapot", 418))

	check := func(path string, headers map[string]string, wantStatus int, wantBody string, wantHeaders map[string]string) {
		t.Helper()
		resp, err := send(port, "echo", path, headers)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if resp.Status != wantStatus || (wantBody != "" && resp.Body != wantBody) {
			t.Errorf("GET %s: %d %q, want %d %q", path, resp.Status, resp.Body, wantStatus, wantBody)
		}
		for k, v := range wantHeaders {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("GET %s: header %s = %q, want %q", path, k, got, v)
			}
		}
	}
	check("/v1/api/items?x=1", nil, 200, "/api/items?x=1", map[string]string{"x-seen-route": "rewritten", "x-mesh": "skiff", "x-seen-host": "echo"})
	check("/login", nil, 200, "/auth/sign-in", map[string]string{"x-seen-host": "auth.internal"})
	check("/login/more", nil, 200, "/login/more", nil) // exact match only
	check("/old/thing", nil, 301, "", map[string]string{"location": "http://echo/new/place"})
	check("/shop/cart?id=7", nil, 302, "", map[string]string{"location": "http://store.example.com/shop/cart?id=7"})
	check("/teapot", nil, 418, "short and stout", nil)
	check("/web-only", nil, 200, "for web", nil)
	check("/anything", nil, 200, "/anything", map[string]string{"x-mesh": ""})

	// A CORS preflight from an allowed origin is answered by Envoy's CORS filter itself.
	resp, err := framework.Send(http.MethodOptions, fmt.Sprintf("http://127.0.0.1:%d/cors", port), "echo", map[string]string{
		"Origin": "https://app.example.com", "Access-Control-Request-Method": "PUT",
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || resp.Header.Get("access-control-allow-origin") != "https://app.example.com" ||
		resp.Header.Get("access-control-allow-methods") != "GET,PUT" || resp.Header.Get("access-control-max-age") != "3600" {
		t.Errorf("CORS preflight: %d %v", resp.Status, resp.Header)
	}

	// The proxy labelled app=api does not get the web-only route. It is captured (its listeners
	// do not bind, so it can run beside the first), so its routes are read from its config dump.
	// Its route configuration comes by RDS after its listeners, so wait for the routes.
	var dump string
	framework.Eventually(t, func() error {
		dump = string(other.ConfigDump(t))
		if !strings.Contains(dump, `"prefix": "/teapot"`) && !strings.Contains(dump, `"path": "/teapot"`) {
			return fmt.Errorf("the app=api proxy has not got the VirtualService's routes yet")
		}
		return nil
	})
	if strings.Contains(dump, "/web-only") {
		t.Errorf("the app=api proxy got the route for sourceLabels app=web")
	}
}

// TestVirtualServiceMirror: a mirror target receives a copy of every request while the client
// sees the primary's answer; Envoy marks the copy's Host with -shadow.
func TestVirtualServiceMirror(t *testing.T) {
	primary := framework.StartUpstream(t, "127.0.2.9", "primary")
	var shadowHost atomic.Value
	mirror := framework.StartUpstream(t, "127.0.2.10", "mirror", framework.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		shadowHost.Store(r.Host)
		fmt.Fprint(w, "mirror")
	})))
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "svc.yaml", serviceEntry("orders", port, endpoint{upstream: primary})+"---\n"+
		serviceEntry("orders-shadow", port, endpoint{upstream: mirror}))
	envoy := startVSEnvoy(t, p)
	envoy.WaitStat(t, clusterStat(port, "", "orders-shadow", "update_success"), atLeast(1))
	applyRoutes(t, p, envoy, port, "mirror.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: orders
  namespace: default
spec:
  hosts:
  - orders
  http:
  - route:
    - destination:
        host: orders
    mirror:
      host: orders-shadow
    mirrorPercentage:
      value: 100
`, func() error {
		if _, err := get(port, "orders"); err != nil {
			return err
		}
		if mirror.Requests() == 0 {
			return errors.New("the mirror has seen nothing yet")
		}
		return nil
	})

	before := mirror.Requests()
	const n = 50
	for range n {
		got, err := get(port, "orders")
		if err != nil {
			t.Fatal(err)
		}
		if got != "primary" {
			t.Fatalf("client answered by %q, want primary", got)
		}
	}
	// Mirrored requests are fire-and-forget: wait for the last copies to land.
	framework.Eventually(t, func() error {
		if got := mirror.Requests() - before; got < n {
			return fmt.Errorf("the mirror received %d copies of %d", got, n)
		}
		return nil
	})
	if h, _ := shadowHost.Load().(string); !strings.HasSuffix(h, "-shadow") {
		t.Errorf("mirrored request Host %q, want a -shadow suffix", h)
	}
}

// TestVirtualServiceTCPRoutes: a TCP service's listener splits connections by the weights of
// its tcp route.
func TestVirtualServiceTCPRoutes(t *testing.T) {
	a := startTCPNamer(t, "127.0.2.11", "a")
	b := startTCPNamer(t, "127.0.2.12", "b")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "tcp.yaml", tcpServiceEntry("db-a", port, "TCP", a)+"---\n"+tcpServiceEntry("db-b", port, "TCP", b)+"---\n"+
		`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: db
  namespace: default
spec:
  hosts:
  - db-a
  tcp:
  - match:
    - sourceLabels:
        app: reporting
    route:
    - destination:
        host: db-b
  - route:
    - destination:
        host: db-a
      weight: 70
    - destination:
        host: db-b
      weight: 30
`)
	startVSEnvoy(t, p)

	framework.Eventually(t, func() error {
		got, err := readTCPName(fmt.Sprintf("127.0.0.1:%d", port), nil)
		if err == nil && got != "a" && got != "b" {
			err = fmt.Errorf("answered %q", got)
		}
		return err
	})
	const n = 400
	got := map[string]int{}
	for range n {
		name, err := readTCPName(fmt.Sprintf("127.0.0.1:%d", port), nil)
		if err != nil {
			t.Fatal(err)
		}
		got[name]++
	}
	// 70% of 400 has a standard deviation of 2.3 points; ±10 is over four of them.
	share := 100 * float64(got["a"]) / n
	t.Logf("db-a share over %d connections: %.1f%% (%v)", n, share, got)
	if math.Abs(share-70) > 10 || got["a"]+got["b"] != n {
		t.Errorf("connections %v: want 70±10%% to db-a, the rest to db-b", got)
	}
}

// TestVirtualServiceTLSRoutes: TLS services without addresses share one listener; connections
// are forwarded still encrypted by SNI, by a tls route or, without one, by the service's own
// hostname.
func TestVirtualServiceTLSRoutes(t *testing.T) {
	partner := startTCPNamer(t, "127.0.2.13", "partner", withTLS())
	legacy := startTCPNamer(t, "127.0.2.14", "legacy", withTLS())
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "tls.yaml", tcpServiceEntry("partner", port, "TLS", partner)+"---\n"+tcpServiceEntry("legacy", port, "TLS", legacy)+"---\n"+
		`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: partner
  namespace: default
spec:
  hosts:
  - partner
  tls:
  - match:
    - sniHosts:
      - api.partner.example.com
      - "*.eu.partner.example.com"
    route:
    - destination:
        host: partner
  - match:
    - sniHosts:
      - old.partner.example.com
    route:
    - destination:
        host: legacy
`)
	startVSEnvoy(t, p)

	address := fmt.Sprintf("127.0.0.1:%d", port)
	for sni, want := range map[string]string{
		"api.partner.example.com":          "partner",
		"fr.eu.partner.example.com":        "partner",
		"old.partner.example.com":          "legacy",
		"legacy.default.svc.cluster.local": "legacy",
	} {
		framework.Eventually(t, func() error {
			got, err := readTCPName(address, &tls.Config{ServerName: sni, InsecureSkipVerify: true}) //nolint:gosec // test upstreams use a throwaway self-signed certificate
			if err == nil && got != want {
				err = fmt.Errorf("SNI %s answered by %q, want %q", sni, got, want)
			}
			return err
		})
	}
	// An SNI nobody routes finds no filter chain: Envoy closes the connection.
	if got, err := readTCPName(address, &tls.Config{ServerName: "unknown.example.com", InsecureSkipVerify: true}); err == nil { //nolint:gosec // as above
		t.Errorf("unrouted SNI answered by %q, want the connection closed", got)
	}
}

// tcpServiceEntry is a ServiceEntry for a TCP or TLS port with one endpoint, without addresses.
func tcpServiceEntry(name string, port int, protocol string, u *tcpNamer) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: %[1]s
  namespace: default
spec:
  hosts:
  - %[1]s.default.svc.cluster.local
  ports:
  - number: %[2]d
    name: tcp
    protocol: %[3]s
  resolution: STATIC
  endpoints:
  - address: %[4]s
    ports:
      tcp: %[5]d
`, name, port, protocol, u.ip, u.port)
}

// tcpNamer is a TCP (or TLS) server that writes its name and a newline to every connection.
type tcpNamer struct {
	ip   string
	port int
}

type tcpNamerOption func(net.Listener) net.Listener

func withTLS() tcpNamerOption {
	return func(l net.Listener) net.Listener {
		return tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{selfSignedCert()}})
	}
}

func startTCPNamer(t *testing.T, ip, name string, opts ...tcpNamerOption) *tcpNamer {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listening on %s: %v", ip, err)
	}
	u := &tcpNamer{ip: ip, port: l.Addr().(*net.TCPAddr).Port}
	for _, o := range opts {
		l = o(l)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = fmt.Fprintln(c, name)
			}()
		}
	}()
	return u
}

// readTCPName connects (over TLS when cfg is set) and reads the server's name.
func readTCPName(address string, cfg *tls.Config) (string, error) {
	c, err := net.DialTimeout("tcp", address, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if cfg != nil {
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			return "", err
		}
		c = tc
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading from %s: %w", address, err)
	}
	return strings.TrimSpace(line), nil
}

// selfSignedCert is a throwaway certificate for the TLS test upstreams; clients skip
// verification, since what is tested is which upstream Envoy picks by SNI.
func selfSignedCert() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "skiff-e2e"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
