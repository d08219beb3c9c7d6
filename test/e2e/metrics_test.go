package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// Istio's standard metrics, end to end: two sidecars with STRICT mTLS, HTTP (2xx and 5xx) and
// TCP traffic through them, the sidecars' access logs streamed to pilot, and a real Prometheus
// scraping pilot's /metrics and each Envoy's Prometheus stats listener. The assertions are
// PromQL: both reporters, response codes, connection_security_policy, TCP bytes and
// connections, and the shape of Kiali's graph query.

// metricsPlace is where a metrics mesh runs: its /24 on loopback, pilot's extra flags, and
// whether Prometheus scrapes it.
type metricsPlace struct {
	net        string // "127.0.41": client .1, server .2, apps .12
	pilotArgs  []string
	prometheus bool
}

func (p metricsPlace) clientIP() string { return p.net + ".1" }
func (p metricsPlace) serverIP() string { return p.net + ".2" }
func (p metricsPlace) appIP() string    { return p.net + ".12" }

// metricsMesh is the mesh of the metrics tests and the addresses they call.
type metricsMesh struct {
	place          metricsPlace
	pilot          *framework.Pilot
	client, server *framework.Envoy
	prom           *framework.Prometheus
	// serverStats and clientStats are the sidecars' Prometheus listeners (/stats/prometheus).
	serverStats, clientStats string
	httpPort                 int // the client's HTTP egress listener
	tcpPort                  int // the client's TCP egress listener
}

// startMetricsMesh starts the mesh: workloads client-1 (Deployment-less WorkloadEntry, app
// client, version v1) and server-1 (app server, version v2) in namespace shop, service
// server.shop.svc.cluster.local with an HTTP and a TCP port, and Prometheus if asked.
func startMetricsMesh(t testing.TB, place metricsPlace) *metricsMesh {
	t.Helper()
	metricsClientIP, metricsServerIP, metricsAppIP := place.clientIP(), place.serverIP(), place.appIP()
	app := framework.StartUpstream(t, metricsAppIP, "server-app", framework.WithHandler(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/fail" {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok"))
		})))
	echo := startLineEcho(t, metricsAppIP)
	m := &metricsMesh{place: place, httpPort: framework.FreePort(t, metricsClientIP), tcpPort: framework.FreePort(t, metricsClientIP)}
	inHTTP, inTCP := framework.FreePort(t, metricsServerIP), framework.FreePort(t, metricsServerIP)
	m.pilot = framework.StartPilot(t, framework.PilotOptions{Args: place.pilotArgs})
	m.pilot.WriteConfig(t, "mesh.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-1, namespace: shop}
spec:
  address: %[1]s
  serviceAccount: client
  labels: {app: client, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-1, namespace: shop}
spec:
  address: %[2]s
  serviceAccount: server
  labels: {app: server, version: v2, security.istio.io/tlsMode: istio}
  ports: {http: %[3]d, tcp: %[4]d}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: shop}
spec:
  hosts: [server.shop.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {number: %[5]d, name: http, protocol: HTTP}
  - {number: %[6]d, name: tcp, protocol: TCP}
  resolution: STATIC
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: server, namespace: shop}
spec:
  workloadSelector: {labels: {app: server}}
  ingress:
  - {port: {number: %[3]d, protocol: HTTP, name: http}, bind: %[2]s, defaultEndpoint: %[7]s}
  - {port: {number: %[4]d, protocol: TCP, name: tcp}, bind: %[2]s, defaultEndpoint: %[8]s}
  egress:
  - hosts: ["istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: shop}
spec:
  workloadSelector: {labels: {app: client}}
  egress:
  - {port: {number: %[5]d, protocol: HTTP, name: http}, bind: %[1]s, hosts: ["./*"]}
  - {port: {number: %[6]d, protocol: TCP, name: tcp}, bind: %[1]s, hosts: ["./*"]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mtls: {mode: STRICT}
`, metricsClientIP, metricsServerIP, inHTTP, inTCP, m.httpPort, m.tcpPort, app.Address(), echo))
	start := func(ip, name, app string) (*framework.Envoy, string) {
		stats := framework.FreeAddress(t, ip)
		e := framework.StartEnvoy(t, m.pilot, framework.EnvoyOptions{
			NodeID:        fmt.Sprintf("sidecar~%s~%s.shop~shop.svc.cluster.local", ip, name),
			BootstrapArgs: []string{"--labels", "app=" + app, "--prometheus-address", stats},
		})
		return e, stats
	}
	m.server, m.serverStats = start(metricsServerIP, "server-1", "server")
	m.client, m.clientStats = start(metricsClientIP, "client-1", "client")
	if !place.prometheus {
		return m
	}
	m.prom = framework.StartPrometheus(t, framework.PrometheusOptions{Targets: []framework.ScrapeTarget{
		{Job: "pilot", Address: m.pilot.MonitoringAddress},
		{Job: "envoy-server", Address: m.serverStats, MetricsPath: "/stats/prometheus"},
		{Job: "envoy-client", Address: m.clientStats, MetricsPath: "/stats/prometheus"},
	}})
	return m
}

// startLineEcho serves TCP on ip, echoing each line, and returns its address.
func startLineEcho(t testing.TB, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("echo server: %v", err)
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
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// traffic sends one round: a 200, a 503 and a TCP connection with one echoed line.
func (m *metricsMesh) traffic() error {
	base := fmt.Sprintf("http://%s:%d", m.place.clientIP(), m.httpPort)
	for path, want := range map[string]int{"/": 200, "/fail": 503} {
		resp, err := framework.Send("GET", base+path, "server.shop.svc.cluster.local", nil)
		if err != nil {
			return err
		}
		if resp.Status != want {
			return fmt.Errorf("GET %s: %d %q, want %d", path, resp.Status, resp.Body, want)
		}
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", m.place.clientIP(), m.tcpPort), 5*time.Second)
	if err != nil {
		return fmt.Errorf("TCP: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return fmt.Errorf("TCP write: %w", err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ping\n" {
		return fmt.Errorf("TCP echo: %q, %v", line, err)
	}
	return nil
}

// wantSeries sends traffic until promql returns exactly the label sets want (each written as
// "k=v,k=v" over the by() labels in order), so every check also drives the traffic it needs.
func (m *metricsMesh) wantSeries(t *testing.T, promql string, by []string, want ...string) {
	t.Helper()
	framework.Eventually(t, func() error {
		if err := m.traffic(); err != nil {
			return err
		}
		samples, err := m.prom.TryQuery(promql)
		if err != nil {
			return err
		}
		var got []string
		for _, s := range samples {
			var kv []string
			for _, l := range by {
				kv = append(kv, l+"="+s.Labels[l])
			}
			got = append(got, strings.Join(kv, ","))
		}
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			return fmt.Errorf("%s:\n got  %q\n want %q", promql, got, want)
		}
		return nil
	})
}

func TestMetricsIstioStandard(t *testing.T) {
	m := startMetricsMesh(t, metricsPlace{net: "127.0.41", prometheus: true})

	// Kiali's graph query (app graph, destination reporter), unchanged.
	kiali := []string{"source_workload", "source_workload_namespace", "destination_service", "destination_workload",
		"destination_workload_namespace", "response_code", "connection_security_policy"}
	m.wantSeries(t, `sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="shop"}[1m])) by (`+strings.Join(kiali, ",")+`) > 0`, kiali,
		"source_workload=client-1,source_workload_namespace=shop,destination_service=server.shop.svc.cluster.local,destination_workload=server-1,destination_workload_namespace=shop,response_code=200,connection_security_policy=mutual_tls",
		"source_workload=client-1,source_workload_namespace=shop,destination_service=server.shop.svc.cluster.local,destination_workload=server-1,destination_workload_namespace=shop,response_code=503,connection_security_policy=mutual_tls")

	// The source reporter: the same requests, as the client's sidecar saw them.
	by := []string{"reporter", "source_workload", "source_app", "source_version", "destination_workload", "destination_app",
		"destination_version", "destination_service_name", "destination_service_namespace", "response_code", "connection_security_policy", "request_protocol"}
	m.wantSeries(t, `sum(increase(istio_requests_total[5m])) by (`+strings.Join(by, ",")+`) > 0`, by,
		"reporter=source,source_workload=client-1,source_app=client,source_version=v1,destination_workload=server-1,destination_app=server,destination_version=v2,destination_service_name=server,destination_service_namespace=shop,response_code=200,connection_security_policy=unknown,request_protocol=http",
		"reporter=source,source_workload=client-1,source_app=client,source_version=v1,destination_workload=server-1,destination_app=server,destination_version=v2,destination_service_name=server,destination_service_namespace=shop,response_code=503,connection_security_policy=unknown,request_protocol=http",
		"reporter=destination,source_workload=client-1,source_app=client,source_version=v1,destination_workload=server-1,destination_app=server,destination_version=v2,destination_service_name=server,destination_service_namespace=shop,response_code=200,connection_security_policy=mutual_tls,request_protocol=http",
		"reporter=destination,source_workload=client-1,source_app=client,source_version=v1,destination_workload=server-1,destination_app=server,destination_version=v2,destination_service_name=server,destination_service_namespace=shop,response_code=503,connection_security_policy=mutual_tls,request_protocol=http")

	// Principals, canonical names and clusters as Istio's: the caller's from its certificate.
	ids := []string{"reporter", "source_principal", "destination_principal", "source_canonical_service", "destination_canonical_revision", "source_cluster", "destination_cluster", "response_flags"}
	m.wantSeries(t, `sum(istio_requests_total{response_code="200"}) by (`+strings.Join(ids, ",")+`)`, ids,
		"reporter=source,source_principal=spiffe://cluster.local/ns/shop/sa/client,destination_principal=spiffe://cluster.local/ns/shop/sa/server,source_canonical_service=client,destination_canonical_revision=v2,source_cluster=Kubernetes,destination_cluster=Kubernetes,response_flags=-",
		"reporter=destination,source_principal=spiffe://cluster.local/ns/shop/sa/client,destination_principal=spiffe://cluster.local/ns/shop/sa/server,source_canonical_service=client,destination_canonical_revision=v2,source_cluster=Kubernetes,destination_cluster=Kubernetes,response_flags=-")

	// Istio's dashboards' latency and size queries.
	m.wantSeries(t, `histogram_quantile(0.5, sum(rate(istio_request_duration_milliseconds_bucket{reporter="source"}[1m])) by (le, destination_workload)) >= 0`,
		[]string{"destination_workload"}, "destination_workload=server-1")
	m.wantSeries(t, `sum(rate(istio_request_bytes_count{reporter="destination"}[1m])) by (destination_workload) > 0`,
		[]string{"destination_workload"}, "destination_workload=server-1")
	m.wantSeries(t, `sum(istio_response_bytes_sum{reporter="destination",response_code="200"}) by (destination_workload) > 0`,
		[]string{"destination_workload"}, "destination_workload=server-1")

	// TCP: connections opened and closed, and bytes both ways ("ping\n" each way), by both
	// reporters.
	tcp := []string{"reporter", "source_workload", "destination_workload", "destination_service", "connection_security_policy", "request_protocol"}
	for _, metric := range []string{"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total", "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"} {
		m.wantSeries(t, `sum(`+metric+`) by (`+strings.Join(tcp, ",")+`) > 0`, tcp,
			"reporter=source,source_workload=client-1,destination_workload=server-1,destination_service=server.shop.svc.cluster.local,connection_security_policy=unknown,request_protocol=tcp",
			"reporter=destination,source_workload=client-1,destination_workload=server-1,destination_service=server.shop.svc.cluster.local,connection_security_policy=mutual_tls,request_protocol=tcp")
	}

	// Envoy's own stats, scraped from its Prometheus listener, count the same mesh.
	m.wantSeries(t, `sum(envoy_cluster_upstream_rq_total{job="envoy-client"}) by (job) > 0`, []string{"job"}, "job=envoy-client")
	m.wantSeries(t, `up == 1`, []string{"job"}, "job=pilot", "job=envoy-server", "job=envoy-client")
}
