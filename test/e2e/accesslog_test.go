package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// Access logs configured the Istio way: Telemetry accessLogging with the built-in envoy
// provider writes Istio's text format to each proxy's stdout, and the mesh configuration's
// accessLogFile with accessLogEncoding JSON writes Istio's JSON keys. Both beside the access
// logs to pilot that count Istio's standard metrics.

// accessLogLines returns the lines of an Envoy's output that match re.
func accessLogLines(e *framework.Envoy, re *regexp.Regexp) []string {
	var out []string
	for _, line := range strings.Split(e.Log(), "\n") {
		if re.MatchString(line) {
			out = append(out, line)
		}
	}
	return out
}

// TestAccessLogText: the envoy provider for everyone (root namespace), and for the backend a
// filter expression (Envoy's CEL filter) that its requests pass. Each proxy's stdout has
// Istio's text line for the request: the response code, the authority, the upstream cluster
// (the gateway's and the frontend's outbound clusters, the backend's inbound one). The backend's
// Telemetry also turns Istio's metrics off for it: its listeners stream no access logs to pilot,
// while the frontend's still do.
func TestAccessLogText(t *testing.T) {
	gatewayAddr, envoys := startTracingMeshWithGateway(t, tracingPlace{net: "127.0.45"}, "", `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: backend, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code == 200"}
  metrics:
  - overrides: [{disabled: true}]
`)
	backend, frontend, gateway := envoys[0], envoys[1], envoys[2]
	// [START] "GET /traced HTTP/1.1" 200 FLAGS DETAILS ... "AUTHORITY" "UPSTREAM_HOST" CLUSTER ...
	line := func(authority, cluster string) *regexp.Regexp {
		return regexp.MustCompile(`^\[\S+\] "GET /traced HTTP/1\.1" 200 - via_upstream - "-" \d+ \d+ \d+ \S+ "[^"]*" "[^"]*" "[0-9a-f-]{36}" "` +
			regexp.QuoteMeta(authority) + `" "[0-9.:]+" ` + regexp.QuoteMeta(cluster) + `\S* `)
	}
	for _, c := range []struct {
		name    string
		envoy   *framework.Envoy
		pattern *regexp.Regexp
	}{
		{"gateway", gateway, line(gatewayAddr, "outbound|8000||frontend.shop.svc.cluster.local")},
		{"frontend outbound", frontend, line("backend.shop.svc.cluster.local", "outbound|")},
		{"frontend inbound", frontend, line(gatewayAddr, "inbound|")},
		{"backend inbound", backend, line("backend.shop.svc.cluster.local", "inbound|")},
	} {
		framework.Eventually(t, func() error {
			if len(accessLogLines(c.envoy, c.pattern)) == 0 {
				return fmt.Errorf("%s: no access log line matching %s on Envoy's stdout", c.name, c.pattern)
			}
			return nil
		})
	}
	if dump := string(backend.ConfigDump(t)); strings.Contains(dump, `"log_name": "skiff-`) {
		t.Error("the backend's metrics are off, and its listeners still stream access logs to pilot")
	}
	if dump := string(frontend.ConfigDump(t)); !strings.Contains(dump, `"log_name": "skiff-source"`) || !strings.Contains(dump, `"log_name": "skiff-destination"`) {
		t.Error("the frontend's listeners do not stream both sides' access logs to pilot")
	}
	for _, e := range envoys {
		e.AssertNoRejections(t)
	}
}

// TestAccessLogJSON: no Telemetry, the mesh configuration's accessLogFile /dev/stdout with
// accessLogEncoding JSON: each line is a JSON object with Istio's keys.
func TestAccessLogJSON(t *testing.T) {
	_, envoys := startTracingMeshWithGateway(t, tracingPlace{net: "127.0.46"}, "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n", "")
	gateway := envoys[2]
	var entry map[string]any
	framework.Eventually(t, func() error {
		for _, l := range accessLogLines(gateway, regexp.MustCompile(`^\{.*"upstream_cluster"`)) {
			if err := json.Unmarshal([]byte(l), &entry); err != nil {
				return fmt.Errorf("access log line %q: %w", l, err)
			}
			// The mesh's first requests may fail while the backend starts (503, URX): the
			// line wanted is the request that went through.
			if entry["path"] == "/traced" && entry["response_code"] == float64(200) {
				return nil
			}
		}
		return fmt.Errorf("no JSON access log line for a /traced that succeeded on the gateway's stdout")
	})
	for _, key := range []string{"start_time", "route_name", "method", "path", "protocol", "response_code", "response_flags",
		"response_code_details", "connection_termination_details", "bytes_received", "bytes_sent", "duration",
		"upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority", "upstream_host",
		"upstream_cluster", "upstream_local_address", "downstream_local_address", "downstream_remote_address",
		"requested_server_name", "upstream_transport_failure_reason"} {
		if _, ok := entry[key]; !ok {
			t.Errorf("the JSON access log line has no %q: %v", key, entry)
		}
	}
	if entry["response_code"] != float64(200) || entry["method"] != "GET" ||
		entry["upstream_cluster"] != "outbound|8000||frontend.shop.svc.cluster.local" {
		t.Errorf("JSON access log line %v: want GET, 200, upstream_cluster outbound|8000||frontend.shop.svc.cluster.local", entry)
	}
	for _, e := range envoys {
		e.AssertNoRejections(t)
	}
}

// TestMeshConfigReload: pilot follows its --mesh-config file in folder mode. An edit that turns
// the mesh's access log on (accessLogFile, JSON) reaches the gateway; an edit that does not
// parse is listed at /debug/config_errors under the file's name, and the last good mesh
// configuration stays.
func TestMeshConfigReload(t *testing.T) {
	m := startTracingMesh(t, tracingPlace{net: "127.0.47"}, "", "")
	getThrough(t, m.gateway)
	gw, meshFile := m.envoys[2], m.meshFile
	if err := os.WriteFile(meshFile, []byte("accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, func() error {
		if !strings.Contains(string(gw.ConfigDump(t)), `"path": "/dev/stdout"`) {
			return fmt.Errorf("the gateway has no access log to /dev/stdout yet")
		}
		return nil
	})
	if err := os.WriteFile(meshFile, []byte("accessLogEncoding: XML\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, func() error {
		status, body := m.pilot.Get(t, "/debug/config_errors")
		if status != http.StatusOK || !strings.Contains(string(body), meshFile) || !strings.Contains(string(body), "accessLogEncoding") {
			return fmt.Errorf("/debug/config_errors does not list %s's accessLogEncoding: %d %s", meshFile, status, body)
		}
		return nil
	})
	getThrough(t, m.gateway)
	if !strings.Contains(string(gw.ConfigDump(t)), `"path": "/dev/stdout"`) {
		t.Error("the mesh configuration that does not parse replaced the last good one")
	}
	for _, e := range m.envoys {
		e.AssertNoRejections(t)
	}
}
