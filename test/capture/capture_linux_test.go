// Package capture tests cmd/skiff-capture end to end: real nf_tables rules in a network
// namespace of the test's own, in front of a real Envoy running as the sidecar's uid 1337 and
// fed by pilot, with traffic going out of and into that "pod".
//
// The shape, every address inside namespaces the test creates and deletes:
//
//	root namespace (the test process): pilot and the backend upstream on 127.0.0.1
//	"node" namespace: 10.251.0.1/30, forwarding :15010 to pilot and :8000 to the backend
//	"pod" namespace:  10.251.0.2/30 (default route via the node), skiff-capture's rules,
//	                  Envoy (uid/gid 1337, admin 127.0.0.1:15000), the app on :8080
//
// The app's client and server are the test process's own sockets, created from a thread that
// entered the pod namespace (framework.NetNS.Do): a process in the pod in all that matters to
// the kernel, running as root, i.e. not as the proxy.
//
// TestCaptureAppProbes (probes_linux_test.go) has the same shape for a pod as the injector
// writes it, under STRICT mTLS, with the node as the kubelet probing it.
//
// It needs root, `ip` and a kernel with network namespaces, veth and nf_tables NAT; without
// them it fails with the error, never skips.
package capture

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// The test's addresses. They exist only inside its namespaces, so fixed ones cannot clash
// with anything, even with another run of this test.
var (
	nodeAddr = netip.MustParsePrefix("10.251.0.1/30")
	podAddr  = netip.MustParsePrefix("10.251.0.2/30")
)

const (
	backendVIP  = "10.96.0.10"
	appVIP      = "10.96.0.20"
	backendPort = 8000 // the backend's port on the node
	appPort     = 8080 // the app's port in the pod
	proxyID     = 1337 // the sidecar's uid and gid

	outboundListener = "virtualOutbound"
	inboundListener  = "virtualInbound"
	backendCluster   = "outbound|80||backend.default.svc.cluster.local"
	appCluster       = "inbound|8080||"
)

// mesh is pilot's config: the backend behind a VIP, a VirtualService whose rewrite and headers
// show in every answer that went through Envoy's routes, and the pod's own workload, which
// gives the sidecar its inbound port.
var mesh = fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: backend
  namespace: default
spec:
  hosts:
  - backend.default.svc.cluster.local
  addresses:
  - %[1]s
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: %[2]s
    ports:
      http: %[3]d
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: backend
  namespace: default
spec:
  hosts:
  - backend.default.svc.cluster.local
  http:
  - match:
    - uri:
        prefix: /api/
    rewrite:
      uri: /
    headers:
      request:
        set:
          x-skiff-route: api
      response:
        set:
          x-skiff-vs: backend
    route:
    - destination:
        host: backend.default.svc.cluster.local
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: app
  namespace: default
spec:
  hosts:
  - app.default.svc.cluster.local
  addresses:
  - %[6]s
  ports:
  - number: %[5]d
    name: http
    protocol: HTTP
  resolution: STATIC
  workloadSelector:
    labels:
      app: app
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: app-1
  namespace: default
spec:
  address: %[4]s
  labels:
    app: app
`, backendVIP, nodeAddr.Addr(), backendPort, podAddr.Addr(), appPort, appVIP)

// TestCaptureWithEnvoy installs skiff-capture's rules in a pod namespace, starts Envoy there
// as uid 1337, and checks that (a) the app's call to a service VIP goes through
// virtualOutbound and pilot's routes, (b) a call from the node to the app's port goes through
// virtualInbound, (c) Envoy's own connections (to pilot, to the backend, to the app) are not
// captured, and (d) --cleanup removes the capture.
func TestCaptureWithEnvoy(t *testing.T) {
	node := framework.NewNetNS(t, "skf-node")
	pod := framework.NewNetNS(t, "skf-pod")
	framework.ConnectVeth(t, node, "veth-pod", nodeAddr, pod, "eth0", podAddr)
	pod.IP(t, "route", "add", "default", "via", nodeAddr.Addr().String())

	configDir := t.TempDir()
	framework.WriteFile(t, configDir, "mesh.yaml", mesh)
	pilot := framework.StartPilot(t, framework.PilotOptions{ConfigDir: configDir})
	backend := framework.StartUpstream(t, "127.0.0.1", "backend")
	xdsOnNode := forwardFromNode(t, node, 15010, pilot.XDSAddress)
	forwardFromNode(t, node, backendPort, backend.Address())
	app := startApp(t, pod)

	// The init container's part: install (twice, to show a re-run is harmless), before Envoy.
	capture := framework.BuildBinary(t, "./cmd/skiff-capture")
	dry := mustExec(t, pod, capture, "--dry-run")
	t.Logf("skiff-capture --dry-run:\n%s", dry)
	first := mustExec(t, pod, capture)
	if again := mustExec(t, pod, capture); again != first || !strings.Contains(first, "installed table ip skiff_capture") {
		t.Fatalf("skiff-capture run twice: %q then %q, want the same install report", first, again)
	}
	if s := mustExec(t, pod, capture, "--status"); !strings.Contains(s, "is installed") {
		t.Fatalf("skiff-capture --status after install: %q", s)
	}

	// (c) Envoy's connection to pilot is its own (uid 1337): were it captured, it would meet
	// a closed 15001 before the first LDS, and this would time out.
	envoy := framework.StartEnvoyInNetNS(t, pilot, pod, framework.NetNSEnvoyOptions{
		NodeID:       fmt.Sprintf("sidecar~%s~app-1.default~default.svc.cluster.local", podAddr.Addr()),
		XDSAddress:   xdsOnNode,
		Interception: "redirect",
		UID:          proxyID,
		GID:          proxyID,
	})
	framework.Eventually(t, func() error {
		dump := string(envoy.ConfigDump(t))
		for _, want := range []string{outboundListener, inboundListener, backendCluster, appCluster} {
			if !strings.Contains(dump, `"name": "`+want+`"`) {
				return fmt.Errorf("Envoy's config_dump lacks %s", want)
			}
		}
		return nil
	})
	envoy.WaitStat(t, "cluster."+backendCluster+".membership_healthy", atLeast(1))

	// (a) The app calls the backend's VIP, which nothing in the pod or the node answers: only
	// Envoy, through the capture, knows it.
	client := newCountingClient(pod)
	var resp *http.Response
	var body string
	framework.Eventually(t, func() error {
		var err error
		resp, body, err = client.get("http://" + backendVIP + "/api/headers")
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return err
	})
	if got := resp.Header.Get("x-upstream"); got != "backend" {
		t.Errorf("answer's x-upstream = %q, want backend (the upstream)", got)
	}
	if got := resp.Header.Get("x-skiff-vs"); got != "backend" {
		t.Errorf("answer's x-skiff-vs = %q, want the VirtualService's response header", got)
	}
	headers := framework.EchoedHeaders(t, body) // /api/headers rewritten to /headers
	if headers["x-skiff-route"] != "api" {
		t.Errorf("the backend saw no x-skiff-route: api from the VirtualService: %v", headers)
	}
	envoy.WaitStat(t, "cluster."+backendCluster+".upstream_rq_total", atLeast(1))
	// virtualOutbound hands a connection to the service's listener, 0.0.0.0_80, which binds no
	// port: Envoy counts it there, and it can only have come through 15001.
	serviceCx := "listener.0.0.0.0_80.downstream_cx_total"
	envoy.WaitStat(t, serviceCx, atLeast(1))

	// A destination no service has (the backend's own address on the node) stays on
	// virtualOutbound and passes through, as Istio's ALLOW_ANY does: answered by the backend,
	// without the VirtualService.
	direct := "http://" + net.JoinHostPort(nodeAddr.Addr().String(), fmt.Sprint(backendPort)) + "/api/headers"
	resp, body, err := client.get(direct)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("x-upstream") != "backend" || resp.Header.Get("x-skiff-vs") != "" {
		t.Fatalf("app calling %s: %v %v: %s", direct, err, resp, body)
	}
	outboundCx := "listener." + listenerStat(t, envoy, outboundListener, "0.0.0.0_15001") + ".downstream_cx_total"
	envoy.WaitStat(t, outboundCx, atLeast(1))
	envoy.WaitStat(t, "cluster.PassthroughCluster.upstream_cx_total", atLeast(1))

	// (c) again: every connection Envoy took on the way out is one the app made (one per
	// request); Envoy's own, to pilot and to the backend, are not among them.
	stats := envoy.Stats(t)
	if got, want := stats[outboundCx]+stats[serviceCx], client.connections(); got != want {
		t.Errorf("Envoy took %d outbound connections (%s %d, %s %d), the app made %d",
			got, outboundCx, stats[outboundCx], serviceCx, stats[serviceCx], want)
	}

	// (b) The node calls the app's port on the pod's address; the app sees it come from
	// Envoy, on localhost, having gone through virtualInbound.
	nodeClient := node.HTTPClient()
	inbound := fmt.Sprintf("http://%s/hello", net.JoinHostPort(podAddr.Addr().String(), fmt.Sprint(appPort)))
	if got := mustGet(t, nodeClient, inbound); got != "app" {
		t.Errorf("app answered %q", got)
	}
	if from := app.lastFrom(); from != "127.0.0.1" {
		t.Errorf("the app saw the node's call come from %s, want 127.0.0.1 (Envoy's inbound cluster)", from)
	}
	inboundCx := "listener." + listenerStat(t, envoy, inboundListener, "0.0.0.0_15006") + ".downstream_cx_total"
	envoy.WaitStat(t, inboundCx, atLeast(1))
	envoy.WaitStat(t, "cluster."+appCluster+".upstream_rq_total", atLeast(1))

	// The hairpin: the app calls its own service's VIP. Envoy sends that to the service's
	// endpoint, the pod's own IP, over lo; the capture makes Envoy's call an inbound one
	// (istio-iptables' rule for the proxy calling its own pod), so it goes through
	// virtualInbound too and reaches the app from 127.0.0.1, not from the pod's IP.
	inboundBefore := envoy.Stat(t, inboundCx)
	hairpin := fmt.Sprintf("http://%s/hairpin", net.JoinHostPort(appVIP, fmt.Sprint(appPort)))
	if resp, body, err := client.get(hairpin); err != nil || resp.StatusCode != http.StatusOK || body != "app" {
		t.Fatalf("app calling its own VIP %s: %v %v: %s", hairpin, err, resp, body)
	}
	if from := app.lastFrom(); from != "127.0.0.1" {
		t.Errorf("the app saw its call to its own VIP come from %s, want 127.0.0.1 (through virtualInbound)", from)
	}
	envoy.WaitStat(t, inboundCx, atLeast(inboundBefore+1))

	// (d) --cleanup: the table is gone, and so is the capture both ways.
	if out := mustExec(t, pod, capture, "--cleanup"); !strings.Contains(out, "removed") {
		t.Errorf("skiff-capture --cleanup: %q", out)
	}
	if s := mustExec(t, pod, capture, "--status"); !strings.Contains(s, "is not installed") {
		t.Fatalf("skiff-capture --status after --cleanup: %q", s)
	}
	before := envoy.Stat(t, outboundCx) + envoy.Stat(t, serviceCx)
	short := newCountingClient(pod)
	short.http.Timeout = 2 * time.Second
	if resp, body, err := short.get("http://" + backendVIP + "/api/headers"); err == nil {
		t.Errorf("after --cleanup the VIP still answers: %d %s", resp.StatusCode, body)
	}
	if after := envoy.Stat(t, outboundCx) + envoy.Stat(t, serviceCx); after != before {
		t.Errorf("after --cleanup Envoy's outbound connections went from %d to %d", before, after)
	}
	if got := mustGet(t, nodeClient, inbound); got != "app" {
		t.Errorf("app answered %q after --cleanup", got)
	}
	if from := app.lastFrom(); from != nodeAddr.Addr().String() {
		t.Errorf("after --cleanup the app saw the node's call come from %s, want %s (directly)", from, nodeAddr.Addr())
	}
}

// forwardFromNode listens on the node's address at port and forwards to target on the root
// namespace's loopback; it returns the node's address.
func forwardFromNode(t *testing.T, node *framework.NetNS, port int, target string) string {
	t.Helper()
	address := net.JoinHostPort(nodeAddr.Addr().String(), fmt.Sprint(port))
	l := node.Listen(t, address)
	framework.Forward(t, l, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", target)
	})
	return address
}

// app is the pod's application: it answers "app" on appPort and remembers where the last
// request came from.
type app struct {
	mu   sync.Mutex
	from string
}

func startApp(t *testing.T, pod *framework.NetNS) *app {
	t.Helper()
	a := &app{}
	l := pod.Listen(t, fmt.Sprintf("0.0.0.0:%d", appPort))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		a.mu.Lock()
		a.from = host
		a.mu.Unlock()
		_, _ = io.WriteString(w, "app")
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return a
}

func (a *app) lastFrom() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.from
}

// countingClient is an HTTP client in a namespace that counts the connections it opened.
type countingClient struct {
	http  *http.Client
	conns atomic.Uint64
}

func newCountingClient(ns *framework.NetNS) *countingClient {
	c := &countingClient{}
	c.http = ns.HTTPClient()
	c.http.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := ns.DialContext(ctx, network, addr)
		if err == nil {
			c.conns.Add(1)
		}
		return conn, err
	}
	return c
}

func (c *countingClient) connections() uint64 { return c.conns.Load() }

func (c *countingClient) get(url string) (*http.Response, string, error) {
	resp, err := c.http.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: reading the body: %w", url, err)
	}
	return resp, string(b), nil
}

func mustGet(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, %v: %s", url, resp.StatusCode, err, b)
	}
	return string(b)
}

func mustExec(t *testing.T, ns *framework.NetNS, path string, args ...string) string {
	t.Helper()
	out, err := ns.Exec(path, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// listenerStat names a listener's stats: Envoy keys them by stat_prefix if the listener has
// one, else by address.
func listenerStat(t *testing.T, e *framework.Envoy, name, address string) string {
	t.Helper()
	stats := e.Stats(t)
	for _, prefix := range []string{name, address} {
		if _, ok := stats["listener."+prefix+".downstream_cx_total"]; ok {
			return prefix
		}
	}
	var seen []string
	for s := range stats {
		if strings.HasPrefix(s, "listener.") && strings.HasSuffix(s, ".downstream_cx_total") {
			seen = append(seen, s)
		}
	}
	t.Fatalf("no downstream_cx_total stat for listener %s (%s); listener stats: %v", name, address, seen)
	return ""
}

func atLeast(n uint64) func(uint64) bool { return func(v uint64) bool { return v >= n } }

func equal(n uint64) func(uint64) bool { return func(v uint64) bool { return v == n } }
