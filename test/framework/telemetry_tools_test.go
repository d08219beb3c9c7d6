package framework

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// TestPrometheusScrapes checks the Prometheus harness end to end: a real
// Prometheus scrapes a counter the test serves on a path of its own, and an
// instant query through the HTTP API returns it with the job's labels.
func TestPrometheusScrapes(t *testing.T) {
	t.Parallel()
	const exposition = "# HELP skiff_test_requests_total Requests the test pretends to have served.\n" +
		"# TYPE skiff_test_requests_total counter\n" +
		"skiff_test_requests_total{code=\"200\"} 42\n"
	up := StartUpstream(t, "127.0.0.1", "metrics", WithHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stats/prometheus" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, exposition)
	})))
	address := net.JoinHostPort(up.IP, strconv.Itoa(up.Port))
	prom := StartPrometheus(t, PrometheusOptions{Targets: []ScrapeTarget{
		{Job: "fake-envoy", Address: address, MetricsPath: "/stats/prometheus"},
	}})

	var got []PromSample
	Eventually(t, func() error {
		var err error
		got, err = prom.TryQuery(`skiff_test_requests_total{job="fake-envoy"}`)
		if err != nil {
			return err
		}
		if len(got) == 0 {
			targets, err := prom.TryTargets()
			return fmt.Errorf("no sample yet; targets: %+v (%v)", targets, err)
		}
		return nil
	})
	if len(got) != 1 {
		t.Fatalf("query returned %d samples, want 1: %+v", len(got), got)
	}
	s := got[0]
	want := map[string]string{"__name__": "skiff_test_requests_total", "job": "fake-envoy", "instance": address, "code": "200"}
	for k, v := range want {
		if s.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, s.Labels[k], v, s.Labels)
		}
	}
	if s.Value != 42 {
		t.Errorf("value = %v, want 42", s.Value)
	}

	// The target is reported up, and a failing query says why.
	if health := prom.Query(t, `up{job="fake-envoy"}`); len(health) != 1 || health[0].Value != 1 {
		t.Errorf("up{job=\"fake-envoy\"} = %+v, want one sample of 1", health)
	}
	if _, err := prom.TryQuery(`sum(`); err == nil || !strings.Contains(err.Error(), "bad_data") {
		t.Errorf("TryQuery of a malformed expression: %v, want a bad_data error", err)
	}
}

// TestJaegerReceivesSpans checks the Jaeger harness end to end: spans sent
// to each receiver it hands out (OTLP/HTTP JSON, OTLP/gRPC, Zipkin v2 JSON)
// are read back through the query API, with their IDs, names, durations,
// parentage and tags.
func TestJaegerReceivesSpans(t *testing.T) {
	t.Parallel()
	j := StartJaeger(t)

	t.Run("OTLP-HTTP", func(t *testing.T) {
		traceID, parentID, spanID := randomHex(t, 16), randomHex(t, 8), randomHex(t, 8)
		start := time.Now().Add(-time.Second)
		// OTLP/HTTP's JSON encoding (opentelemetry-proto's docs/specification.md):
		// IDs are hex, not base64, 64-bit integers are strings, and the span
		// kind is the enum's number (2, SERVER).
		body := fmt.Sprintf(`{"resourceSpans": [{
  "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "skiff-otlp"}}]},
  "scopeSpans": [{
    "scope": {"name": "skiff-test"},
    "spans": [{
      "traceId": %q, "spanId": %q, "parentSpanId": %q,
      "name": "GET /ratings", "kind": 2,
      "startTimeUnixNano": "%d", "endTimeUnixNano": "%d",
      "attributes": [{"key": "http.response.status_code", "value": {"intValue": "200"}}]
    }]
  }]
}]}`, traceID, spanID, parentID, start.UnixNano(), start.Add(5*time.Millisecond).UnixNano())
		post(t, j.OTLPHTTPURL+"/v1/traces", "application/json", body)

		span := waitForSpan(t, j, "skiff-otlp", traceID)
		if span.SpanID != spanID || span.OperationName != "GET /ratings" || span.Duration != 5000 {
			t.Errorf("span = %+v, want ID %s, operation GET /ratings, 5000µs", span, spanID)
		}
		if len(span.References) != 1 || span.References[0].RefType != "CHILD_OF" || span.References[0].SpanID != parentID {
			t.Errorf("references = %+v, want CHILD_OF %s", span.References, parentID)
		}
		if v, _ := span.Tag("http.response.status_code"); v != "200" {
			t.Errorf("tag http.response.status_code = %q, want 200 (tags %+v)", v, span.Tags)
		}
	})

	t.Run("OTLP-gRPC", func(t *testing.T) {
		traceID, spanID := randomHex(t, 16), randomHex(t, 8)
		start := time.Now().Add(-time.Second)
		req := otlpExportRequest(t, "skiff-otlp-grpc", traceID, spanID, "POST /details", start, 3*time.Millisecond)
		conn, err := grpc.NewClient(j.OTLPGRPCAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("dialing %s: %v", j.OTLPGRPCAddress, err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), RequestTimeout)
		defer cancel()
		var resp []byte
		if err := conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", req, &resp,
			grpc.ForceCodecV2(rawCodec{})); err != nil {
			t.Fatalf("OTLP/gRPC Export: %v", err)
		}

		span := waitForSpan(t, j, "skiff-otlp-grpc", traceID)
		if span.SpanID != spanID || span.OperationName != "POST /details" || span.Duration != 3000 {
			t.Errorf("span = %+v, want ID %s, operation POST /details, 3000µs", span, spanID)
		}
	})

	t.Run("Zipkin", func(t *testing.T) {
		traceID, spanID := randomHex(t, 16), randomHex(t, 8)
		start := time.Now().Add(-time.Second)
		// Zipkin v2 JSON, what Envoy's Zipkin tracer sends: microseconds.
		body := fmt.Sprintf(`[{
  "traceId": %q, "id": %q, "name": "get /reviews", "kind": "SERVER",
  "timestamp": %d, "duration": 7000,
  "localEndpoint": {"serviceName": "skiff-zipkin", "ipv4": "127.0.0.1"},
  "tags": {"http.status_code": "503"}
}]`, traceID, spanID, start.UnixMicro())
		post(t, j.ZipkinURL+"/api/v2/spans", "application/json", body)

		span := waitForSpan(t, j, "skiff-zipkin", traceID)
		if span.SpanID != spanID || span.OperationName != "get /reviews" || span.Duration != 7000 {
			t.Errorf("span = %+v, want ID %s, operation get /reviews, 7000µs", span, spanID)
		}
		if v, _ := span.Tag("http.status_code"); v != "503" {
			t.Errorf("tag http.status_code = %q, want 503 (tags %+v)", v, span.Tags)
		}
	})

	if traces := j.Traces(t, "never-sent"); len(traces) != 0 {
		t.Errorf("traces of a service never seen: %+v, want none", traces)
	}
}

// otlpExportRequest encodes an ExportTraceServiceRequest
// (opentelemetry-proto's collector/trace/v1) holding one server span of
// service, by hand with protowire: the main module does not depend on the
// OTLP Go protos, and a span needs only a few fields.
func otlpExportRequest(t *testing.T, service, traceID, spanID, name string, start time.Time, d time.Duration) []byte {
	t.Helper()
	tid, err := hex.DecodeString(traceID)
	if err != nil {
		t.Fatal(err)
	}
	sid, err := hex.DecodeString(spanID)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(num protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
	}
	str := func(num protowire.Number, v string) []byte { return msg(num, []byte(v)) }
	fixed := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), v)
	}
	// KeyValue{key = 1, value = 2: AnyValue{string_value = 1}}
	attr := append(str(1, "service.name"), msg(2, str(1, service))...)
	resource := msg(1, attr) // Resource{attributes = 1}
	var span []byte
	span = append(span, msg(1, tid)...)                                                  // trace_id
	span = append(span, msg(2, sid)...)                                                  // span_id
	span = append(span, str(5, name)...)                                                 // name
	span = protowire.AppendVarint(protowire.AppendTag(span, 6, protowire.VarintType), 2) // kind: SPAN_KIND_SERVER
	span = append(span, fixed(7, uint64(start.UnixNano()))...)                           // start_time_unix_nano
	span = append(span, fixed(8, uint64(start.Add(d).UnixNano()))...)                    // end_time_unix_nano
	scopeSpans := msg(2, span)                                                           // ScopeSpans{spans = 2}
	resourceSpans := append(msg(1, resource), msg(2, scopeSpans)...)                     // ResourceSpans{resource = 1, scope_spans = 2}
	return msg(1, resourceSpans)                                                         // ExportTraceServiceRequest{resource_spans = 1}
}

// rawCodec passes gRPC messages through as bytes, for a request encoded by
// hand; the response is kept undecoded.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot send %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot receive into %T", v)
	}
	*p = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// waitForSpan polls Jaeger's query API until service has a trace traceID, and
// returns that trace's only span, checking it is attributed to service.
func waitForSpan(t *testing.T, j *Jaeger, service, traceID string) JaegerSpan {
	t.Helper()
	var trace JaegerTrace
	Eventually(t, func() error {
		traces, err := j.TryTraces(service)
		if err != nil {
			return err
		}
		for _, tr := range traces {
			if tr.TraceID == traceID {
				trace = tr
				return nil
			}
		}
		return fmt.Errorf("no trace %s among %d traces of %s", traceID, len(traces), service)
	})
	if len(trace.Spans) != 1 {
		t.Fatalf("trace %s has %d spans, want 1: %+v", traceID, len(trace.Spans), trace.Spans)
	}
	span := trace.Spans[0]
	if got := trace.Processes[span.ProcessID].ServiceName; got != service {
		t.Errorf("span's process %q is service %q, want %q", span.ProcessID, got, service)
	}
	return span
}

// randomHex returns n random bytes in lowercase hex. The first byte is at
// least 0x10, so that a trace ID's upper half is never zero: Jaeger prints a
// trace ID with a zero upper half as 16 digits, not 32.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random ID: %v", err)
	}
	b[0] |= 0x10
	return hex.EncodeToString(b)
}

// post sends body to url and fails the test unless the answer is a 2xx. It
// uses the harness's client, which has a timeout and never a proxy.
func post(t *testing.T, url, contentType, body string) {
	t.Helper()
	resp, err := adminClient.Post(url, contentType, bytes.NewBufferString(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var answer bytes.Buffer
		_, _ = answer.ReadFrom(resp.Body)
		t.Fatalf("POST %s: status %d: %s", url, resp.StatusCode, answer.String())
	}
}

// A telemetry tool that was not built fails the test with the make target
// that builds it; it is never skipped.
func TestMissingTelemetryToolFails(t *testing.T) {
	msgs := failures(func(tb testing.TB) { telemetryTool(tb, "prometheus", "v0.0.0-missing") })
	if len(msgs) != 1 || !strings.Contains(msgs[0], "run `make telemetry-tools`") {
		t.Errorf("a missing Prometheus failed with %q", msgs)
	}
}

// The versions the harness looks for are the ones `make telemetry-tools`
// builds, so a bump in hack/telemetry-tools cannot leave the tests running
// (or failing to find) the previous release.
func TestTelemetryToolVersionsMatchGoMod(t *testing.T) {
	for _, c := range []struct{ dir, module, version string }{
		{"prometheus", "github.com/prometheus/prometheus", PrometheusVersion},
		{"jaeger", "github.com/jaegertracing/jaeger", JaegerVersion},
	} {
		path := filepath.Join(RepoRoot(t), "hack", "telemetry-tools", c.dir, "go.mod")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(c.module) + ` ` + regexp.QuoteMeta(c.version) + `\b`).Match(data) {
			t.Errorf("%s does not require %s %s, the version the harness looks for", path, c.module, c.version)
		}
	}
}
