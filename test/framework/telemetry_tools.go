package framework

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The telemetry back ends' versions: what `make telemetry-tools` builds
// (hack/telemetry-tools/*/go.mod) into .cache/telemetry-tools/NAME-VERSION/.
// A version bump changes both places; a mismatch fails with the make target to
// run, since the old folder is then the only one there.
const (
	PrometheusVersion = "v0.316.0"
	JaegerVersion     = "v1.75.0"
)

// PrometheusBinary returns the Prometheus that `make telemetry-tools` built. A
// missing binary fails the test rather than skipping it, as for Envoy: a
// skipped telemetry test looks green while checking nothing.
func PrometheusBinary(tb testing.TB) string {
	tb.Helper()
	return telemetryTool(tb, "prometheus", PrometheusVersion)
}

// JaegerBinary returns the Jaeger (cmd/jaeger, Jaeger v2) that `make
// telemetry-tools` built; a missing binary fails the test.
func JaegerBinary(tb testing.TB) string {
	tb.Helper()
	return telemetryTool(tb, "jaeger", JaegerVersion)
}

func telemetryTool(tb testing.TB, name, version string) string {
	tb.Helper()
	path := filepath.Join(RepoRoot(tb), ".cache", "telemetry-tools", name+"-"+version, name)
	if err := checkExecutable(path); err != nil {
		tb.Fatalf("framework: no %s %s at %s: %v; run `make telemetry-tools` to build it", name, version, path, err)
	}
	return path
}

// ScrapeTarget is one scrape job of a test's Prometheus: one target, scraped
// over plain HTTP.
type ScrapeTarget struct {
	Job         string // job_name, the job label of every series scraped
	Address     string // host:port on loopback
	MetricsPath string // default /metrics
}

// PrometheusOptions configures StartPrometheus.
type PrometheusOptions struct {
	Targets []ScrapeTarget
	// ScrapeInterval is how often every target is scraped (and the scrape
	// timeout); default 1s, so a test sees a new value within seconds instead
	// of Prometheus' default minute.
	ScrapeInterval time.Duration
	// Config, if set, is the whole configuration file (YAML), used instead of one built
	// from Targets and ScrapeInterval: a test of a shipped configuration.
	Config []byte
	// Args are extra flags (--web.enable-otlp-receiver, say), after the
	// ones the harness sets: --config.file, --web.listen-address,
	// --storage.tsdb.path and --scrape.discovery-reload-interval, which
	// cannot be given again (Prometheus rejects a repeated flag).
	Args []string
}

// Prometheus is a running Prometheus server with its TSDB in a temporary
// directory, listening on a free loopback port.
type Prometheus struct {
	Address    string // host:port of the web server: the HTTP API under /api/v1/
	ConfigPath string

	log  logBuffer
	proc *Process
}

// promConfig is the part of Prometheus' configuration file the harness
// writes. It is written as JSON, which YAML parsers accept, so that job names
// and paths need no YAML quoting.
type promConfig struct {
	Global struct {
		ScrapeInterval     string `json:"scrape_interval"`
		ScrapeTimeout      string `json:"scrape_timeout"`
		EvaluationInterval string `json:"evaluation_interval"`
	} `json:"global"`
	ScrapeConfigs []promScrapeConfig `json:"scrape_configs"`
}

type promScrapeConfig struct {
	JobName       string `json:"job_name"`
	MetricsPath   string `json:"metrics_path"`
	StaticConfigs []struct {
		Targets []string `json:"targets"`
	} `json:"static_configs"`
}

// StartPrometheus starts Prometheus (see PrometheusBinary) scraping
// opts.Targets, and waits until /-/ready answers 200. It is stopped when the
// test ends; its log is printed if the test failed, and an exit of its own
// before then fails the test.
func StartPrometheus(tb testing.TB, opts PrometheusOptions) *Prometheus {
	tb.Helper()
	bin := PrometheusBinary(tb)
	interval := opts.ScrapeInterval
	if interval == 0 {
		interval = time.Second
	}
	var cfg promConfig
	// In milliseconds: Prometheus' durations have no fractions ("1.5s"). The
	// timeout is set because Prometheus rejects one above the interval, and
	// its default (10s) is above the 1s interval tests want.
	every := fmt.Sprintf("%dms", interval.Milliseconds())
	cfg.Global.ScrapeInterval = every
	cfg.Global.ScrapeTimeout = every
	cfg.Global.EvaluationInterval = every
	cfg.ScrapeConfigs = []promScrapeConfig{}
	for _, t := range opts.Targets {
		host, _, err := net.SplitHostPort(t.Address)
		if err != nil {
			tb.Fatalf("framework: Prometheus scrape target %q: %v", t.Address, err)
		}
		mustLoopback(tb, host)
		sc := promScrapeConfig{JobName: t.Job, MetricsPath: t.MetricsPath}
		if sc.MetricsPath == "" {
			sc.MetricsPath = "/metrics"
		}
		sc.StaticConfigs = append(sc.StaticConfigs, struct {
			Targets []string `json:"targets"`
		}{Targets: []string{t.Address}})
		cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, sc)
	}
	config, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		tb.Fatalf("framework: Prometheus config: %v", err)
	}
	if opts.Config != nil {
		config = opts.Config
	}
	dir := tb.TempDir()
	p := &Prometheus{ConfigPath: filepath.Join(dir, "prometheus.yml")}
	if err := os.WriteFile(p.ConfigPath, config, 0o644); err != nil {
		tb.Fatalf("framework: writing the Prometheus config: %v", err)
	}
	logOnFailure(tb, "prometheus", &p.log)
	fmt.Fprintf(&p.log, "---- %s ----\n%s\n---- end of config ----\n", p.ConfigPath, config)
	tb.Cleanup(func() { stopTool(tb, p.proc, &p.log) })

	// A port from FreeAddress can be taken before Prometheus binds it; on
	// that (rare) race, start again on another.
	for attempt := 1; ; attempt++ {
		p.Address = FreeAddress(tb, "127.0.0.1")
		args := append([]string{
			"--config.file=" + p.ConfigPath,
			"--web.listen-address=" + p.Address,
			// Not the default ./data: the TSDB goes with the test.
			"--storage.tsdb.path=" + filepath.Join(dir, "data"),
			// The scrape manager applies discovered targets on this tick, 5s by
			// default, so the first scrape would come 5s after the start
			// whatever the scrape interval (a hidden flag, kept by v0.316.0).
			"--scrape.discovery-reload-interval=100ms",
		}, opts.Args...)
		mark := len(p.log.String())
		err := p.launch(bin, args)
		if err == nil {
			return p
		}
		if attempt < 3 && addressInUse(p.log.String()[mark:]) {
			continue
		}
		tb.Fatalf("framework: starting Prometheus: %v", err)
	}
}

func (p *Prometheus) launch(bin string, args []string) error {
	proc, err := StartProcess("prometheus", bin, args, &p.log)
	if err != nil {
		return err
	}
	p.proc = proc
	if err := proc.WaitFor(Patience, readyCheck(p.Address, "/-/ready")); err != nil {
		proc.Stop(&p.log)
		return err
	}
	return nil
}

// Log returns what Prometheus has written so far.
func (p *Prometheus) Log() string { return p.log.String() }

// PromSample is one element of an instant vector.
type PromSample struct {
	Labels map[string]string // including __name__ where the result keeps it
	Value  float64
}

// Query runs an instant query (GET /api/v1/query, at the current time) and
// returns the vector; any error, or a result that is not a vector, fails the
// test. Use TryQuery inside Eventually: a series appears only after a scrape.
func (p *Prometheus) Query(tb testing.TB, promql string) []PromSample {
	tb.Helper()
	samples, err := p.TryQuery(promql)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	return samples
}

// TryQuery is Query returning the error instead of failing.
func (p *Prometheus) TryQuery(promql string) ([]PromSample, error) {
	var resp struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				// [unix seconds, "value"]: the value is a string, so that
				// NaN and ±Inf survive JSON.
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := getJSON(p.Address, "/api/v1/query?query="+url.QueryEscape(promql), &resp); err != nil {
		return nil, fmt.Errorf("Prometheus query %q: %w", promql, err)
	}
	if resp.Status != "success" {
		return nil, fmt.Errorf("Prometheus query %q: %s: %s", promql, resp.ErrorType, resp.Error)
	}
	if resp.Data.ResultType != "vector" {
		return nil, fmt.Errorf("Prometheus query %q: result type %q, want vector", promql, resp.Data.ResultType)
	}
	samples := make([]PromSample, 0, len(resp.Data.Result))
	for _, r := range resp.Data.Result {
		s, ok := r.Value[1].(string)
		if !ok {
			return nil, fmt.Errorf("Prometheus query %q: value %v is not a string", promql, r.Value)
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("Prometheus query %q: value %q: %w", promql, s, err)
		}
		samples = append(samples, PromSample{Labels: r.Metric, Value: v})
	}
	return samples, nil
}

// PromTarget is a scrape target as Prometheus reports it, for saying why a
// series never appeared (a refused connection, a parse error).
type PromTarget struct {
	Job       string
	ScrapeURL string
	Health    string // "up", "down" or "unknown" (not scraped yet)
	LastError string
}

// TryTargets returns the active targets (GET /api/v1/targets).
func (p *Prometheus) TryTargets() ([]PromTarget, error) {
	var resp struct {
		Status string `json:"status"`
		Data   struct {
			ActiveTargets []struct {
				ScrapePool string `json:"scrapePool"`
				ScrapeURL  string `json:"scrapeUrl"`
				Health     string `json:"health"`
				LastError  string `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := getJSON(p.Address, "/api/v1/targets?state=active", &resp); err != nil {
		return nil, fmt.Errorf("Prometheus targets: %w", err)
	}
	var targets []PromTarget
	for _, t := range resp.Data.ActiveTargets {
		targets = append(targets, PromTarget{Job: t.ScrapePool, ScrapeURL: t.ScrapeURL, Health: t.Health, LastError: t.LastError})
	}
	return targets, nil
}

// Jaeger is a running Jaeger v2 (cmd/jaeger) all-in-one with in-memory
// storage, receiving spans over OTLP (gRPC and HTTP) and Zipkin, on free
// loopback ports.
type Jaeger struct {
	OTLPGRPCAddress string // host:port of the OTLP/gRPC receiver
	OTLPHTTPURL     string // base URL of the OTLP/HTTP receiver: POST spans to OTLPHTTPURL+"/v1/traces"
	ZipkinURL       string // base URL of the Zipkin receiver: POST spans to ZipkinURL+"/api/v2/spans"
	QueryURL        string // base URL of the query service: its HTTP API is under /api/
	ConfigPath      string

	healthAddress string
	log           logBuffer
	proc          *Process
}

// jaegerConfig is an all-in-one configuration (cmd/jaeger/internal/all-in-one.yaml
// of v1.75.0) cut down to what a test uses, with every port given: the
// defaults are fixed ports on every address (4317, 16686, 8888 for
// Jaeger's own metrics...), which parallel test packages would fight over.
// Spans go straight from the receivers to storage, without the batch processor,
// so they are readable as soon as the receiver has answered.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      exporters: [jaeger_storage_exporter]
  telemetry:
    # No metrics server: by default it would bind :8888.
    metrics:
      level: none
    logs:
      level: info

extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: %[1]s
  jaeger_query:
    storage:
      traces: memstore
    # Jaeger tracing its own queries would send them to an OTLP endpoint of
    # the environment's choosing.
    enable_tracing: false
    http:
      endpoint: %[2]s
    grpc:
      endpoint: %[3]s
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %[4]s
      http:
        endpoint: %[5]s
  zipkin:
    endpoint: %[6]s

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// StartJaeger starts Jaeger (see JaegerBinary) and waits until its health
// check reports every component ready. It is stopped when the test ends; its
// log is printed if the test failed, and an exit of its own before then fails
// the test.
func StartJaeger(tb testing.TB) *Jaeger {
	tb.Helper()
	bin := JaegerBinary(tb)
	j := &Jaeger{ConfigPath: filepath.Join(tb.TempDir(), "jaeger.yaml")}
	logOnFailure(tb, "jaeger", &j.log)
	tb.Cleanup(func() { stopTool(tb, j.proc, &j.log) })
	for attempt := 1; ; attempt++ {
		var addrs []string
		for _, port := range FreePorts(tb, "127.0.0.1", 6) {
			addrs = append(addrs, net.JoinHostPort("127.0.0.1", port))
		}
		j.healthAddress = addrs[0]
		j.QueryURL = "http://" + addrs[1]
		j.OTLPGRPCAddress = addrs[3]
		j.OTLPHTTPURL = "http://" + addrs[4]
		j.ZipkinURL = "http://" + addrs[5]
		config := fmt.Sprintf(jaegerConfig, addrs[0], addrs[1], addrs[2], addrs[3], addrs[4], addrs[5])
		if err := os.WriteFile(j.ConfigPath, []byte(config), 0o644); err != nil {
			tb.Fatalf("framework: writing the Jaeger config: %v", err)
		}
		mark := len(j.log.String())
		fmt.Fprintf(&j.log, "---- %s ----\n%s---- end of config ----\n", j.ConfigPath, config)
		err := j.launch(bin)
		if err == nil {
			return j
		}
		if attempt < 3 && addressInUse(j.log.String()[mark:]) {
			continue
		}
		tb.Fatalf("framework: starting Jaeger: %v", err)
	}
}

func (j *Jaeger) launch(bin string) error {
	proc, err := StartProcess("jaeger", bin, []string{"--config", j.ConfigPath}, &j.log)
	if err != nil {
		return err
	}
	j.proc = proc
	// The v2 health check answers 200 on /status once every receiver,
	// exporter and extension has started; until then 503.
	if err := proc.WaitFor(Patience, readyCheck(j.healthAddress, "/status")); err != nil {
		proc.Stop(&j.log)
		return err
	}
	return nil
}

// Log returns what Jaeger has written so far.
func (j *Jaeger) Log() string { return j.log.String() }

// JaegerTrace is one trace as Jaeger's query API returns it (the JSON of
// GET /api/traces, the API Jaeger's UI reads), cut down to what tests check.
type JaegerTrace struct {
	TraceID string       `json:"traceID"`
	Spans   []JaegerSpan `json:"spans"`
	// Processes maps a span's ProcessID to the process (service) that sent it.
	Processes map[string]JaegerProcess `json:"processes"`
}

// JaegerSpan is one span of a JaegerTrace. Its IDs are lowercase hex: 16
// digits for a span, 32 for a trace (16 if the upper half is zero).
type JaegerSpan struct {
	TraceID       string            `json:"traceID"`
	SpanID        string            `json:"spanID"`
	OperationName string            `json:"operationName"`
	References    []JaegerReference `json:"references"`
	StartTime     int64             `json:"startTime"` // microseconds since the epoch
	Duration      int64             `json:"duration"`  // microseconds
	Tags          []JaegerTag       `json:"tags"`
	ProcessID     string            `json:"processID"`
}

// JaegerReference links a span to another, e.g. its parent (CHILD_OF).
type JaegerReference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// JaegerTag is a span or process attribute; Value is a string, bool, number
// (float64) or base64 string, following Type.
type JaegerTag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// JaegerProcess is the service that emitted spans, with its resource attributes.
type JaegerProcess struct {
	ServiceName string      `json:"serviceName"`
	Tags        []JaegerTag `json:"tags"`
}

// Tag returns the value of the span's tag key, as text, and whether it has one.
func (s JaegerSpan) Tag(key string) (string, bool) {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value), true
		}
	}
	return "", false
}

// Traces returns the traces Jaeger holds for service (GET
// /api/traces?service=...; by default the query service looks back two days
// and returns up to 100 traces). Any error fails the test. Use TryTraces inside
// Eventually: spans are stored only after the receiver has answered.
func (j *Jaeger) Traces(tb testing.TB, service string) []JaegerTrace {
	tb.Helper()
	traces, err := j.TryTraces(service)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	return traces
}

// TryTraces is Traces returning the error instead of failing. A service
// Jaeger has never seen gives no traces and no error.
func (j *Jaeger) TryTraces(service string) ([]JaegerTrace, error) {
	var resp struct {
		Data   []JaegerTrace `json:"data"`
		Errors []struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		} `json:"errors"`
	}
	address := strings.TrimPrefix(j.QueryURL, "http://")
	if err := getJSON(address, "/api/traces?service="+url.QueryEscape(service), &resp); err != nil {
		return nil, fmt.Errorf("Jaeger traces of %q: %w", service, err)
	}
	if len(resp.Errors) > 0 {
		return nil, fmt.Errorf("Jaeger traces of %q: %d %s", service, resp.Errors[0].Code, resp.Errors[0].Msg)
	}
	return resp.Data, nil
}

// getJSON GETs path from address and decodes a 200 answer's JSON body into v.
// The Prometheus and Jaeger APIs also answer errors with a JSON body, but with
// a 4xx or 5xx status; that body is returned in the error.
func getJSON(address, path string, v any) error {
	status, body, err := httpGet(address, path)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s: status %d: %s", path, status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: decoding %q: %w", path, body, err)
	}
	return nil
}

// stopTool stops a telemetry back end at the end of a test, failing the test
// if it had exited on its own: spans or samples a test saw could then come
// from before a crash, and a crash is a finding in itself.
func stopTool(tb testing.TB, proc *Process, log *logBuffer) {
	tb.Helper()
	if proc == nil {
		return
	}
	if err := proc.UnexpectedExit(); err != nil {
		tb.Errorf("framework: %v", err)
	}
	proc.Stop(log)
}
