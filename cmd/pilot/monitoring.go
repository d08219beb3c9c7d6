package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/pkg/xds"
)

// monitoringMux serves the monitoring and debug endpoints on one HTTP port, like istiod's 15014.
// settle waits for the changes pilot has been told of (folder writes, API server events) to be
// loaded; metrics draws the mesh graph.
func monitoringMux(reg *prometheus.Registry, server *xds.Server, status *configStatus, ready *atomic.Bool, settle func(context.Context) error, metrics *telemetry.Service) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: first configuration load not finished", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /debug/syncz", server.SynczHandler)
	mux.HandleFunc("GET /debug/wait", waitHandler(server, status, settle))
	// Go's profiles (CPU, heap, goroutines, ...), for `go tool pprof
	// http://localhost:15014/debug/pprof/profile`: the port is pilot's own monitoring port,
	// which serves config dumps too and must not be exposed beyond the operators.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/config_dump", server.ConfigDumpHandler)
	mux.HandleFunc("GET /debug/describe", server.DescribeHandler)
	mux.HandleFunc("GET /debug/xds_log", server.XDSLogHandler)
	mux.HandleFunc("GET /debug/config_errors", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(status.view())
	})
	// The mesh graph (Kiali's picture, from the same access logs as Istio's metrics).
	metrics.RegisterGraph(mux)
	mux.HandleFunc("GET /debug", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `Skiff pilot debug endpoints:
  /debug/syncz                    connected proxies: per type, version sent, ACKed, last NACK
  /debug/wait?timeout=30s         200 once every proxy has answered the push of the latest configuration
                                  (NACKs listed), 504 with what is pending when the timeout passes;
                                  &for=KIND/NS/NAME[&resourceVersion=RV][&deleted=true] waits for that change too
  /debug/config_dump?proxy=ID     what pilot serves a proxy (node ID or POD.NAMESPACE), Envoy-style JSON
  /debug/describe?proxy=ID        the Sidecar, Gateways, VirtualServices, DestinationRules, PeerAuthentications
                                  and AuthorizationPolicies that apply to a proxy, and its mTLS modes
  /debug/config_errors            configuration currently rejected, and analysis warnings
  /debug/xds_log?proxy=ID         live protocol log of a proxy's ADS stream(s), newline-delimited JSON:
                                  every request and response, ACK/NACK, error_detail (skiffctl xds-log)
  /debug/pprof/                   Go profiles of pilot itself (go tool pprof)
  /metrics                        Prometheus metrics
  /graph                          the mesh graph: workloads, services and the last minute's traffic
                                  between them (requests/s, errors, p99, TCP bytes, mTLS), live
  /graph/data?namespace=NS        the graph as JSON
  /ready                          200 once the first configuration is loaded
`)
	})
	return mux
}
