package framework

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// staticBootstrap is an Envoy config needing no control plane: a listener on
// 127.0.0.1:listenPort routing everything to upstream. The admin port is 0:
// Envoy picks one and the harness reads it back.
func staticBootstrap(listenPort int, upstream *Upstream) string {
	return fmt.Sprintf(`node: {id: static, cluster: static}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: up}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: %s, port_value: %d}}}
`, listenPort, upstream.IP, upstream.Port)
}

func TestStaticEnvoy(t *testing.T) {
	up := StartUpstream(t, "127.0.0.2", "backend")
	port := FreePort(t, "127.0.0.1")
	e := startEnvoyWithBootstrap(t, staticBootstrap(port, up), EnvoyOptions{NodeID: "static"})
	url := fmt.Sprintf("http://127.0.0.1:%d", port)

	status, header, body := Do(t, http.MethodGet, url+"/", "app.example", nil)
	if status != http.StatusOK || body != "backend" || header.Get("x-upstream") != "backend" {
		t.Fatalf("GET / through Envoy: %d %q x-upstream=%q, want 200 \"backend\" backend", status, body, header.Get("x-upstream"))
	}
	_, _, body = Do(t, http.MethodGet, url+"/headers", "app.example", map[string]string{"x-test": "1"})
	echoed := EchoedHeaders(t, body)
	if echoed["host"] != "app.example" || echoed["x-test"] != "1" || echoed["x-request-id"] == "" {
		t.Errorf("headers seen by the upstream: %v; want host app.example, x-test 1 and an x-request-id from Envoy", echoed)
	}
	if got := up.Requests(); got != 2 {
		t.Errorf("upstream counted %d requests, want 2", got)
	}

	e.WaitStat(t, "cluster.up.upstream_rq_completed", func(v uint64) bool { return v == 2 })
	if got := e.Stat(t, "cluster.up.upstream_rq_200"); got != 2 {
		t.Errorf("cluster.up.upstream_rq_200 = %d, want 2", got)
	}
	stats := e.Stats(t)
	if stats["http.ingress.downstream_rq_total"] != 2 || len(stats) < 100 {
		t.Errorf("Stats: %d stats, http.ingress.downstream_rq_total = %d; want hundreds and 2",
			len(stats), stats["http.ingress.downstream_rq_total"])
	}

	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal(e.ConfigDump(t), &dump); err != nil || len(dump.Configs) == 0 {
		t.Errorf("ConfigDump: %v, %d configs", err, len(dump.Configs))
	}
	e.AssertNoRejections(t)
}

func TestEnvoysRunSideBySide(t *testing.T) {
	var envoys []*Envoy
	var ports []int
	for i := range 3 {
		up := StartUpstream(t, "127.0.0.1", fmt.Sprintf("up-%d", i))
		port := FreePort(t, "127.0.0.1")
		envoys = append(envoys, startEnvoyWithBootstrap(t, staticBootstrap(port, up), EnvoyOptions{NodeID: up.Name}))
		ports = append(ports, port)
	}
	for i, port := range ports {
		_, _, body := Do(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), "", nil)
		if want := fmt.Sprintf("up-%d", i); body != want {
			t.Errorf("Envoy %d answered %q, want %q", i, body, want)
		}
	}
	if envoys[0].AdminAddress == envoys[1].AdminAddress {
		t.Errorf("two Envoys share admin address %s", envoys[0].AdminAddress)
	}
}

func TestUpstreamCustomHandlerAndHTTP2(t *testing.T) {
	up := StartUpstream(t, "127.0.0.3", "teapot", WithHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, r.Proto)
	})))
	status, header, body := Do(t, http.MethodGet, "http://"+up.Address()+"/", "", nil)
	if status != http.StatusTeapot || body != "HTTP/1.1" || header.Get("x-upstream") != "teapot" {
		t.Errorf("got %d %q x-upstream=%q", status, body, header.Get("x-upstream"))
	}

	// Through Envoy with an HTTP/2 cluster: the upstream must speak h2c.
	port := FreePort(t, "127.0.0.1")
	bootstrap := strings.Replace(staticBootstrap(port, up), "    connect_timeout: 1s\n", `    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
`, 1)
	startEnvoyWithBootstrap(t, bootstrap, EnvoyOptions{NodeID: "h2"})
	_, _, body = Do(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), "", nil)
	if body != "HTTP/2.0" {
		t.Errorf("upstream saw %q through an HTTP/2 cluster, want HTTP/2.0", body)
	}
	if up.Requests() != 2 {
		t.Errorf("upstream counted %d requests, want 2", up.Requests())
	}
}

func TestParseMetrics(t *testing.T) {
	samples, err := ParseMetrics(`# HELP a_total Help.
# TYPE a_total counter
a_total{type="cds",node="x\"y\\z"} 3
a_total{type="lds"} 4 1700000000000
plain 1.5e3
h_bucket{le="+Inf"} 7
{"dotted.name",k="v"} NaN
empty{} -Inf
`)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(samples))
	for i, s := range samples {
		got[i] = s.String()
	}
	want := []string{
		`a_total{node="x\"y\\z",type="cds"} 3`,
		`a_total{type="lds"} 4`,
		`plain{} 1500`,
		`h_bucket{le="+Inf"} 7`,
		`dotted.name{k="v"} NaN`,
		`empty{} -Inf`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if sum, n := sumMatching(samples, "a_total", nil); sum != 7 || n != 2 {
		t.Errorf("sum of a_total = %v over %d series, want 7 over 2", sum, n)
	}
	if sum, _ := sumMatching(samples, "a_total", map[string]string{"type": "lds"}); sum != 4 {
		t.Errorf("a_total{type=lds} = %v, want 4", sum)
	}
	for _, bad := range []string{"novalue", `x{a="b} 1`, "x{a} 1", "x one"} {
		if _, err := ParseMetrics(bad); err == nil {
			t.Errorf("ParseMetrics(%q) did not fail", bad)
		}
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	WriteFile(t, dir, "sub/a.yaml", "one")
	WriteFile(t, dir, "sub/a.yaml", "two")
	b, err := os.ReadFile(filepath.Join(dir, "sub", "a.yaml"))
	if err != nil || string(b) != "two" {
		t.Fatalf("read %q, %v; want two", b, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "sub"))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	RemoveFile(t, dir, "sub/a.yaml")
	if _, err := os.Stat(filepath.Join(dir, "sub", "a.yaml")); !os.IsNotExist(err) {
		t.Errorf("RemoveFile left the file: %v", err)
	}
}

// fakeTB records failures instead of failing the real test, to check the
// messages helpers fail with.
type fakeTB struct {
	testing.TB // nil: calling anything not overridden panics
	msgs       []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}

// failures runs fn on its own goroutine, as the testing package does, so
// Fatalf can end it, and returns the messages it failed with.
func failures(fn func(tb testing.TB)) []string {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msgs
}

func TestHelpersFailClearly(t *testing.T) {
	msgs := failures(func(tb testing.TB) {
		n := 0
		EventuallyWithin(tb, 150*time.Millisecond, func() error {
			n++
			return fmt.Errorf("attempt %d", n)
		})
	})
	if len(msgs) != 1 || !strings.Contains(msgs[0], "still failing after 150ms: attempt") {
		t.Errorf("Eventually failed with %q", msgs)
	}
	if msgs := failures(func(tb testing.TB) { Eventually(tb, func() error { return nil }) }); len(msgs) != 0 {
		t.Errorf("Eventually of a passing check failed: %q", msgs)
	}
	msgs = failures(func(tb testing.TB) { FreePort(tb, "10.0.0.1") })
	if len(msgs) != 1 || !strings.Contains(msgs[0], "not a loopback") {
		t.Errorf("FreePort(10.0.0.1) failed with %q", msgs)
	}
	msgs = failures(func(tb testing.TB) { Do(tb, http.MethodGet, "http://127.0.0.1:1/", "", nil) })
	if len(msgs) != 1 || !strings.Contains(msgs[0], "http://127.0.0.1:1/") {
		t.Errorf("Do to a closed port failed with %q", msgs)
	}
}

func TestEnvoyBinaryFromEnv(t *testing.T) {
	t.Setenv("ENVOY", filepath.Join(t.TempDir(), "missing"))
	msgs := failures(func(tb testing.TB) { EnvoyBinary(tb) })
	if len(msgs) != 1 || !strings.Contains(msgs[0], "make envoy") {
		t.Errorf("EnvoyBinary with a missing $ENVOY failed with %q", msgs)
	}
}

func TestEnvoyCrashIsNoticed(t *testing.T) {
	up := StartUpstream(t, "127.0.0.1", "up")
	e := startEnvoyWithBootstrap(t, staticBootstrap(FreePort(t, "127.0.0.1"), up), EnvoyOptions{NodeID: "doomed"})
	if err := e.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	msgs := failures(func(tb testing.TB) {
		e.WaitStat(tb, "server.live", func(v uint64) bool { return v == 2 })
	})
	if len(msgs) != 1 || !strings.Contains(msgs[0], "exited (signal: killed)") || time.Since(start) > 5*time.Second {
		t.Errorf("WaitStat on a dead Envoy failed after %v with %q", time.Since(start), msgs)
	}
	if err := e.proc.UnexpectedExit(); err == nil || !strings.Contains(err.Error(), "exited unexpectedly") {
		t.Errorf("unexpectedExit() = %v", err)
	}
	e.proc.stopping.Store(true) // the crash was on purpose: keep the cleanup from failing the test
}
