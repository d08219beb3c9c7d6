package telemetry

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// bucketQuantile gives what Prometheus' histogram_quantile gives for the same buckets (the
// expected values worked by hand with its algorithm: promql/quantile.go BucketQuantile).
func TestBucketQuantileAsPrometheus(t *testing.T) {
	counts := func(byBound map[float64]uint64, inf uint64) []uint64 {
		c := make([]uint64, len(durationBuckets)+1)
		for i, b := range durationBuckets {
			c[i] = byBound[b]
		}
		c[len(durationBuckets)] = inf
		return c
	}
	for _, tc := range []struct {
		name   string
		q      float64
		counts []uint64
		want   float64
	}{
		// Rank 99 falls in (250, 500] with 90 below: 250 + 250 × 9/10.
		{"tail bucket", 0.99, counts(map[float64]uint64{10: 90, 500: 10}, 0), 475},
		// The first bucket starts at 0.
		{"first bucket", 0.99, counts(map[float64]uint64{0.5: 100}, 0), 0.495},
		{"one observation", 0.99, counts(map[float64]uint64{25: 1}, 0), 24.85},
		{"two buckets", 0.99, counts(map[float64]uint64{5: 50, 10: 50}, 0), 9.9},
		{"median", 0.5, counts(map[float64]uint64{5: 50, 10: 50}, 0), 5},
		// A rank in the +Inf bucket is the highest finite bound.
		{"+Inf", 0.99, counts(nil, 3), 3600000},
		{"empty", 0.99, counts(nil, 0), math.NaN()},
	} {
		got := bucketQuantile(tc.q, durationBuckets, tc.counts)
		if math.IsNaN(tc.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// epoch is a slot boundary, so the tests know which slot each time falls in.
var epoch = time.Unix(1_000_000_000, 0)

var clientToServer = edgeKey{reporter: "destination", srcNamespace: "shop", srcWorkload: "client-1", srcApp: "client",
	srcVersion: "v1", service: "server.shop.svc.cluster.local", serviceName: "server", serviceNamespace: "shop",
	dstNamespace: "shop", dstWorkload: "server-1", dstApp: "server", dstVersion: "v2", protocol: "http"}

func edgeByID(t *testing.T, g Graph, id string) GraphEdge {
	t.Helper()
	for _, e := range g.Edges {
		if e.ID == id {
			return e
		}
	}
	t.Fatalf("no edge %s in %+v", id, g.Edges)
	return GraphEdge{}
}

func TestGraphRatesOverTheWindow(t *testing.T) {
	w := newWindow(time.Minute, epoch)
	at := epoch.Add(time.Second)
	for range 60 {
		w.request(clientToServer, 200, "", "mutual_tls", 2, at)
	}
	for range 20 {
		w.request(clientToServer, 503, "", "mutual_tls", 300, at)
	}
	// The caller's sidecar reported the same requests: they must not count twice.
	source := clientToServer
	source.reporter = "source"
	for range 80 {
		w.request(source, 200, "", unknown, 2, at)
	}

	// Counting began 20 s ago: the rates are over those 20 s, not over a minute.
	g := buildGraph(w, epoch.Add(20*time.Second), "")
	if g.WindowSeconds != 20 {
		t.Errorf("window: %v s, want 20", g.WindowSeconds)
	}
	if len(g.Nodes) != 3 || len(g.Edges) != 2 {
		t.Fatalf("nodes %+v, edges %+v: want client-1 → server → server-1", g.Nodes, g.Edges)
	}
	for _, id := range []string{"workload:shop/client-1>service:server.shop.svc.cluster.local>http",
		"service:server.shop.svc.cluster.local>workload:shop/server-1>http"} {
		e := edgeByID(t, g, id)
		if e.Reporter != "destination" || e.Requests != 80 || e.RequestRate != 4 || e.ErrorRate != 0.25 {
			t.Errorf("%s: reporter %s, %d requests, %v/s, error rate %v; want destination, 80, 4/s, 0.25", id, e.Reporter, e.Requests, e.RequestRate, e.ErrorRate)
		}
		// Rank 79.2 of 80: 60 below 250 ms, 20 in (250, 500]: 250 + 250 × 19.2/20.
		if e.P99Ms == nil || *e.P99Ms != 490 {
			t.Errorf("%s: p99 %v, want 490", id, e.P99Ms)
		}
		if e.Responses["2xx"] != 3 || e.Responses["5xx"] != 1 {
			t.Errorf("%s: responses %v, want 2xx 3/s, 5xx 1/s", id, e.Responses)
		}
		if e.MTLS != "mutual_tls" || e.MTLSShare == nil || *e.MTLSShare != 1 {
			t.Errorf("%s: mtls %s %v, want mutual_tls 1", id, e.MTLS, e.MTLSShare)
		}
	}

	// 62 s later the window reaches back to counting's start: the same requests, over 62 s.
	g = buildGraph(w, epoch.Add(62*time.Second), "")
	if e := edgeByID(t, g, "service:server.shop.svc.cluster.local>workload:shop/server-1>http"); e.RequestRate != round(80.0/62) {
		t.Errorf("at 62 s: %v/s, want %v", e.RequestRate, round(80.0/62))
	}
	// At 70 s the window starts at 10 s (the slot of 65 s is the newest): the requests have left.
	g = buildGraph(w, epoch.Add(70*time.Second), "")
	if g.WindowSeconds != 60 || len(g.Edges) != 0 || len(g.Nodes) != 0 {
		t.Errorf("at 70 s: window %v s, edges %+v; want 60 s and nothing", g.WindowSeconds, g.Edges)
	}
	// The ring's slot is reused for new traffic, emptied first.
	w.request(clientToServer, 200, "", "none", 1, epoch.Add(71*time.Second))
	g = buildGraph(w, epoch.Add(71*time.Second), "")
	if e := edgeByID(t, g, "workload:shop/client-1>service:server.shop.svc.cluster.local>http"); e.Requests != 1 || e.MTLS != "none" {
		t.Errorf("at 71 s: %d requests, mtls %s; want 1, none", e.Requests, e.MTLS)
	}
}

func TestGraphSourceOnlyTCPAndGRPC(t *testing.T) {
	w := newWindow(time.Minute, epoch)
	at := epoch.Add(time.Second)
	// A TCP service outside the mesh: only the caller's sidecar reports, and it cannot see
	// the TLS of the other end.
	external := edgeKey{reporter: "source", srcNamespace: "shop", srcWorkload: "client-1", srcApp: "client", srcVersion: "v1",
		service: "db.example.com", serviceName: "db.example.com", serviceNamespace: unknown,
		dstNamespace: unknown, dstWorkload: unknown, dstApp: unknown, dstVersion: unknown, protocol: "tcp"}
	w.tcp(external, true, false, 100, 40, unknown, at)
	w.tcp(external, false, true, 300, 60, unknown, at)
	// gRPC answers failures with HTTP 200 and a status: UNAVAILABLE (14) is an error.
	grpc := clientToServer
	grpc.protocol = "grpc"
	w.request(grpc, 200, "0", "mutual_tls", 3, at)
	w.request(grpc, 200, "14", "mutual_tls", 3, at)
	w.request(grpc, 200, "0", "none", 3, at)

	g := buildGraph(w, epoch.Add(10*time.Second), "")
	tcp := edgeByID(t, g, "workload:shop/client-1>service:db.example.com>tcp")
	if tcp.Reporter != "source" || tcp.MTLS != unknown || tcp.MTLSShare != nil || tcp.TCPSentRate != 40 || tcp.TCPReceivedRate != 10 ||
		tcp.TCPConnectionsOpened != 1 || tcp.TCPConnectionsClosed != 1 || tcp.P99Ms != nil {
		t.Errorf("tcp edge: %+v", tcp)
	}
	for _, n := range g.Nodes {
		if n.ID == unknown {
			t.Errorf("an unknown destination behind a service is drawn as the service alone, got %+v", g.Nodes)
		}
	}
	e := edgeByID(t, g, "workload:shop/client-1>service:server.shop.svc.cluster.local>grpc")
	if e.Errors != 1 || e.ErrorRate != round(1.0/3) || e.MTLS != "partial" || *e.MTLSShare != round(2.0/3) {
		t.Errorf("grpc edge: %d errors, rate %v, mtls %s %v; want 1, 1/3, partial 2/3", e.Errors, e.ErrorRate, e.MTLS, *e.MTLSShare)
	}

	// A namespace filter keeps the edges with an end in it.
	if g := buildGraph(w, epoch.Add(10*time.Second), "elsewhere"); len(g.Edges) != 0 {
		t.Errorf("namespace elsewhere: %+v", g.Edges)
	}
	if g := buildGraph(w, epoch.Add(10*time.Second), "shop"); len(g.Edges) != 3 {
		t.Errorf("namespace shop: %d edges, want 3", len(g.Edges))
	}
}

// The graph counts what the metrics count, from the same entries and within the same series
// limit, and pilot serves it as a page and as JSON.
func TestGraphFromAccessLogs(t *testing.T) {
	s, snap, _ := testService(t)
	s.metrics.maxSeries = 1
	st := stream(t, s, "sidecar~10.0.0.1~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local", logSource)
	entry := func(code uint32) *accesslogdatav3.HTTPAccessLogEntry {
		return &accesslogdatav3.HTTPAccessLogEntry{
			CommonProperties: &accesslogdatav3.AccessLogCommon{
				UpstreamRemoteAddress:      address("10.0.0.2", 9080),
				UpstreamCluster:            "outbound|80||ratings.prod.svc.cluster.local",
				TimeToLastDownstreamTxByte: durationpb.New(7 * time.Millisecond),
			},
			Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code)},
		}
	}
	now := time.Now()
	st.http(s, snap, entry(200), now)
	st.http(s, snap, entry(200), now)
	st.http(s, snap, entry(404), now) // a second series: over the limit, dropped here as there
	s.now = func() time.Time { return now }

	mux := http.NewServeMux()
	s.RegisterGraph(mux)
	server := httptest.NewServer(mux)
	defer server.Close()
	get := func(path string) (string, string) {
		resp, err := http.Get(server.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return resp.Header.Get("Content-Type"), string(body)
	}
	if ctype, page := get("/graph"); !strings.HasPrefix(ctype, "text/html") || !strings.Contains(page, "<svg") {
		t.Errorf("/graph: %s, %.200s", ctype, page)
	}
	// Offline: nothing loaded from elsewhere.
	if _, page := get("/graph"); strings.Contains(page, `src="`) || strings.Contains(page, `href="`) || strings.Contains(page, "@import") {
		t.Errorf("/graph loads something from elsewhere: %.200s", page)
	}
	_, data := get("/graph/data")
	var g Graph
	if err := json.Unmarshal([]byte(data), &g); err != nil {
		t.Fatalf("/graph/data: %v\n%s", err, data)
	}
	e := edgeByID(t, g, "workload:bookinfo/reviews-v1>service:ratings.prod.svc.cluster.local>http")
	if e.Requests != 2 || e.Reporter != "source" || e.MTLS != unknown || e.P99Ms == nil || *e.P99Ms != 9.95 {
		t.Errorf("reviews → ratings: %+v (p99 %v); want 2 requests, source, unknown, p99 9.95", e, e.P99Ms)
	}
	edgeByID(t, g, "service:ratings.prod.svc.cluster.local>workload:prod/ratings-vm>http")
	if len(g.Nodes) != 3 {
		t.Errorf("nodes: %+v", g.Nodes)
	}
}

// What the graph adds to each counted request: its key from the label set and one slot update
// (compare BenchmarkMetricsCost in test/e2e, the whole path per request).
func BenchmarkGraphRecord(b *testing.B) {
	w := newWindow(time.Minute, time.Now())
	values := make([]string, len(httpLabels))
	for i, name := range httpLabels {
		values[i] = name + "-value"
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		w.request(edgeKeyOf(values), 200, "", "mutual_tls", 3, now)
	}
}

// Building the graph of 1,000 caller-callee pairs with traffic in every slot, as a page
// refresh does.
func BenchmarkGraphBuild(b *testing.B) {
	w := newWindow(time.Minute, epoch)
	for slot := range 13 {
		at := epoch.Add(time.Duration(slot) * graphSlot)
		for i := range 1000 {
			k := clientToServer
			k.srcWorkload = "client-" + strconv.Itoa(i)
			w.request(k, 200, "", "mutual_tls", 3, at)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		buildGraph(w, epoch.Add(64*time.Second), "")
	}
}
