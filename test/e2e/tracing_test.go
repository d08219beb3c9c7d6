package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// Tracing configured the Istio way, end to end with a real Jaeger: a mesh configuration names
// the tracer (extensionProviders), a Telemetry in the root namespace turns it on at 100%, and
// one request crossing gateway → frontend's sidecar → frontend → frontend's sidecar →
// backend's sidecar → backend is one trace, whose spans Jaeger's query API returns with their
// parents and the services that reported them.

// tracingPlace is where a tracing mesh runs: its /24 on loopback.
type tracingPlace struct {
	net string // gateway .10, frontend .2 (app .12), backend .3 (app .13)
}

// propagatedHeaders are the headers an application copies from the request it serves to the
// requests it makes, as Istio asks of applications: the trace context of either tracer and
// the request ID.
var propagatedHeaders = []string{"traceparent", "tracestate", "x-request-id",
	"x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3"}

// startTracingMesh starts pilot with the mesh configuration meshYAML and the configuration
// extraConfig (Telemetry objects, ...) beside the mesh's, a gateway and two sidecars, and
// returns them.
func startTracingMesh(t *testing.T, place tracingPlace, meshYAML, extraConfig string) *tracingMesh {
	t.Helper()
	gwIP, feIP, beIP := place.net+".10", place.net+".2", place.net+".3"
	backend := framework.StartUpstream(t, place.net+".13", "backend")
	egressPort := framework.FreePort(t, feIP)
	frontend := framework.StartUpstream(t, place.net+".12", "frontend", framework.WithHandler(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s:%d%s", feIP, egressPort, r.URL.Path), nil)
			req.Host = "backend.shop.svc.cluster.local"
			for _, h := range propagatedHeaders {
				if v := r.Header.Get(h); v != "" {
					req.Header.Set(h, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
		})))
	feIn, beIn := framework.FreePort(t, feIP), framework.FreePort(t, beIP)
	gwPort := framework.FreePort(t, "127.0.0.1")
	meshFile := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(meshFile, []byte(meshYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	p := framework.StartPilot(t, framework.PilotOptions{Args: []string{"--mesh-config", meshFile}})
	p.WriteConfig(t, "mesh.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: frontend, namespace: shop}
spec:
  hosts: [frontend.shop.svc.cluster.local]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: %[1]s, ports: {http: %[3]d}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend.shop.svc.cluster.local]
  ports: [{number: %[5]d, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: %[2]s, ports: {http: %[4]d}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: frontend, namespace: shop}
spec:
  workloadSelector: {labels: {app: frontend}}
  ingress:
  - {port: {number: %[3]d, protocol: HTTP, name: http}, bind: %[1]s, defaultEndpoint: %[6]s}
  egress:
  - {port: {number: %[5]d, protocol: HTTP, name: http}, bind: %[1]s, hosts: ["./*"]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: backend, namespace: shop}
spec:
  workloadSelector: {labels: {app: backend}}
  ingress:
  - {port: {number: %[4]d, protocol: HTTP, name: http}, bind: %[2]s, defaultEndpoint: %[7]s}
  egress:
  - hosts: ["istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {app: istio-ingressgateway}
  servers:
  - port: {number: %[8]d, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: frontend, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [ingress]
  http:
  - route:
    - destination: {host: frontend.shop.svc.cluster.local, port: {number: 8000}}
%[9]s`, feIP, beIP, feIn, beIn, egressPort, frontend.Address(), backend.Address(), gwPort, extraConfig))
	start := func(nodeID, app string) *framework.Envoy {
		return framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: nodeID, BootstrapArgs: []string{"--labels", "app=" + app}})
	}
	envoys := []*framework.Envoy{
		start(fmt.Sprintf("sidecar~%s~backend-1.shop~shop.svc.cluster.local", beIP), "backend"),
		start(fmt.Sprintf("sidecar~%s~frontend-1.shop~shop.svc.cluster.local", feIP), "frontend"),
		start(fmt.Sprintf("router~%s~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local", gwIP), "istio-ingressgateway"),
	}
	return &tracingMesh{gateway: fmt.Sprintf("127.0.0.1:%d", gwPort), envoys: envoys, pilot: p, meshFile: meshFile}
}

// tracingMesh is a running tracing mesh.
type tracingMesh struct {
	gateway  string             // the gateway's HTTP address
	envoys   []*framework.Envoy // backend, frontend, gateway
	pilot    *framework.Pilot
	meshFile string // pilot's --mesh-config
}

// startTracingMeshWithGateway is startTracingMesh followed by one request through the gateway.
func startTracingMeshWithGateway(t *testing.T, place tracingPlace, meshYAML, extraConfig string) (string, []*framework.Envoy) {
	t.Helper()
	m := startTracingMesh(t, place, meshYAML, extraConfig)
	getThrough(t, m.gateway)
	return m.gateway, m.envoys
}

// getThrough sends one request through the gateway until it is answered 200 (the gateway's
// listener and routes arrive over xDS).
func getThrough(t *testing.T, gatewayAddr string) {
	t.Helper()
	framework.Eventually(t, func() error {
		resp, err := http.Get("http://" + gatewayAddr + "/traced")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET through the gateway: %d %s", resp.StatusCode, body)
		}
		return nil
	})
}

// checkTrace finds, among the traces Jaeger holds for the gateway's service, the one that
// reached the backend, and checks its span tree: every span of one trace, one root (the
// gateway's), and the backend's span reached from it through the frontend's spans.
func checkTrace(t *testing.T, jaeger *framework.Jaeger, gatewayService, frontendService, backendService string) {
	t.Helper()
	var trace framework.JaegerTrace
	framework.Eventually(t, func() error {
		traces, err := jaeger.TryTraces(gatewayService)
		if err != nil {
			return err
		}
		for _, tr := range traces {
			services := traceServices(tr)
			if slices.Contains(services, backendService) && slices.Contains(services, frontendService) && len(tr.Spans) >= 5 {
				trace = tr
				return nil
			}
		}
		return fmt.Errorf("no trace of %s reaches %s and %s with every span yet (%d traces)", gatewayService, frontendService, backendService, len(traces))
	})
	byID := map[string]framework.JaegerSpan{}
	for _, s := range trace.Spans {
		byID[s.SpanID] = s
		if s.TraceID != trace.TraceID {
			t.Errorf("span %s (%s) is of trace %s, want %s", s.SpanID, s.OperationName, s.TraceID, trace.TraceID)
		}
	}
	parent := func(s framework.JaegerSpan) (framework.JaegerSpan, bool) {
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				p, ok := byID[r.SpanID]
				return p, ok
			}
		}
		return framework.JaegerSpan{}, false
	}
	service := func(s framework.JaegerSpan) string { return trace.Processes[s.ProcessID].ServiceName }
	var roots []string
	var backendSpan *framework.JaegerSpan
	for i, s := range trace.Spans {
		if _, ok := parent(s); !ok {
			roots = append(roots, service(s)+" "+s.OperationName)
		}
		if service(s) == backendService {
			backendSpan = &trace.Spans[i]
		}
	}
	if len(roots) != 1 || !strings.HasPrefix(roots[0], gatewayService+" ") {
		t.Errorf("root spans %q, want exactly one, the gateway's (%s)", roots, gatewayService)
	}
	if backendSpan == nil {
		t.Fatalf("no span of %s in the trace", backendService)
	}
	// Walk from the backend's span to the root: backend ← frontend (its outbound call, then its
	// inbound request) ← gateway.
	var chain []string
	for s, ok := *backendSpan, true; ok; s, ok = parent(s) {
		chain = append(chain, service(s))
		if len(chain) > len(trace.Spans) {
			t.Fatalf("the parents of the backend's span loop: %v", chain)
		}
	}
	t.Logf("trace %s: %d spans; from the backend's span to the root: %v", trace.TraceID, len(trace.Spans), chain)
	for _, s := range trace.Spans {
		t.Logf("  span %s %s %q", s.SpanID, service(s), s.OperationName)
	}
	want := []string{backendService, frontendService, frontendService, gatewayService}
	compact := slices.Compact(slices.Clone(chain))
	if !slices.Equal(compact, []string{backendService, frontendService, gatewayService}) || len(chain) < len(want) {
		t.Errorf("from the backend's span up to the root, the spans' services are %v; want %v (and the gateway's own)", chain, want)
	}
	if tag, _ := backendSpan.Tag("istio.canonical_service"); tag != "backend" {
		t.Errorf("the backend's span has istio.canonical_service %q, want backend", tag)
	}
	if tag, _ := backendSpan.Tag("http.status_code"); tag != "200" {
		t.Errorf("the backend's span has http.status_code %q, want 200", tag)
	}
}

// tracingTelemetry turns tracing on for the whole mesh, with the default provider, at 100%.
const tracingTelemetry = `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 100
`

func traceServices(tr framework.JaegerTrace) []string {
	var out []string
	for _, s := range tr.Spans {
		out = append(out, tr.Processes[s.ProcessID].ServiceName)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestTracingOpenTelemetry: the otel provider (OTLP/gRPC) reports to a collector that is a
// service of the registry (a ServiceEntry the sidecars' egress does not import: pilot adds its
// cluster all the same). Spans are named by service as istio-agent names proxies: app label
// "." namespace.
func TestTracingOpenTelemetry(t *testing.T) {
	jaeger := framework.StartJaeger(t)
	_, port, _ := strings.Cut(jaeger.OTLPGRPCAddress, ":")
	_, envoys := startTracingMeshWithGateway(t, tracingPlace{net: "127.0.43"}, `extensionProviders:
- name: otel
  opentelemetry:
    service: jaeger-collector.observability.svc.cluster.local
    port: `+port+`
defaultProviders:
  tracing: [otel]
`, tracingTelemetry+fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: jaeger-collector, namespace: observability}
spec:
  hosts: [jaeger-collector.observability.svc.cluster.local]
  ports: [{number: %s, name: grpc-otlp, protocol: GRPC}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
`, port))
	checkTrace(t, jaeger, "istio-ingressgateway.istio-system", "frontend.shop", "backend.shop")
	for _, e := range envoys {
		e.AssertNoRejections(t)
	}
}

// TestTracingZipkin: the zipkin provider reports to Jaeger's Zipkin receiver, an address
// outside the registry (pilot gives the proxies a STATIC cluster of their own); Zipkin names
// the service after the proxy's node cluster (the bootstrap's: the workload name "." namespace).
func TestTracingZipkin(t *testing.T) {
	jaeger := framework.StartJaeger(t)
	_, port, _ := strings.Cut(strings.TrimPrefix(jaeger.ZipkinURL, "http://"), ":")
	_, envoys := startTracingMeshWithGateway(t, tracingPlace{net: "127.0.44"}, `extensionProviders:
- name: zipkin
  zipkin:
    service: 127.0.0.1
    port: `+port+`
defaultProviders:
  tracing: [zipkin]
`, tracingTelemetry)
	checkTrace(t, jaeger, "istio-ingressgateway-1.istio-system", "frontend-1.shop", "backend-1.shop")
	for _, e := range envoys {
		e.AssertNoRejections(t)
	}
}
