package bootstrap

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"

	"github.com/skiffmesh/skiff/test/framework"
)

// injected is the shape of bootstrap the sidecar injector builds: node ID from --service-node,
// TLS to pilot with the root read from a file, the readiness and Prometheus listeners.
func injected() Options {
	return Options{
		NodeIDFromCommandLine: true,
		Cluster:               "reviews-v1.default",
		XDSAddress:            "skiff-pilot.istio-system.svc:15012",
		XDSRootCertFile:       "/var/run/secrets/istio/root-cert.pem",
		Interception:          InterceptionRedirect,
		ReadinessAddress:      DefaultReadinessAddress,
		PrometheusAddress:     DefaultPrometheusAddress,
		Labels:                map[string]string{"app": "reviews", "version": "v1"},
	}
}

func TestInjectedOptions(t *testing.T) {
	with := func(f func(*Options)) Options { o := injected(); f(&o); return o }
	for name, tc := range map[string]struct {
		opts    Options
		wantErr string
	}{
		"injected":             {opts: injected()},
		"ipv6 listeners":       {opts: with(func(o *Options) { o.ReadinessAddress, o.PrometheusAddress = "[::]:15021", "[::]:15090" })},
		"only readiness":       {opts: with(func(o *Options) { o.PrometheusAddress = "" })},
		"node ID given too":    {opts: with(func(o *Options) { o.NodeID = testNodeID }), wantErr: "leave it empty"},
		"no cluster":           {opts: with(func(o *Options) { o.Cluster = "" }), wantErr: "Cluster is empty"},
		"two roots":            {opts: with(func(o *Options) { o.XDSRootCert = []byte("x") }), wantErr: "both set"},
		"relative root file":   {opts: with(func(o *Options) { o.XDSRootCertFile = "root-cert.pem" }), wantErr: "absolute path"},
		"readiness is a name":  {opts: with(func(o *Options) { o.ReadinessAddress = "localhost:15021" }), wantErr: "ReadinessAddress"},
		"prometheus port 0":    {opts: with(func(o *Options) { o.PrometheusAddress = "0.0.0.0:0" }), wantErr: "PrometheusAddress"},
		"same address":         {opts: with(func(o *Options) { o.PrometheusAddress = o.ReadinessAddress }), wantErr: "both"},
		"admin port 0":         {opts: with(func(o *Options) { o.AdminAddress = "127.0.0.1:0" }), wantErr: "fixed admin port"},
		"no NodeIDFromCommand": {opts: with(func(o *Options) { o.NodeIDFromCommandLine = false }), wantErr: "node ID is empty"},
	} {
		_, err := Build(tc.opts)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: Build: %v", name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: Build error %v, want one containing %q", name, err, tc.wantErr)
		}
	}
}

func TestInjectedContent(t *testing.T) {
	b := mustBuild(t, injected())
	if id := b.GetNode().GetId(); id != "" {
		t.Errorf("node.id = %q, want it empty (set by --service-node)", id)
	}
	if c := b.GetNode().GetCluster(); c != "reviews-v1.default" {
		t.Errorf("node.cluster = %q", c)
	}
	clusters := b.GetStaticResources().GetClusters()
	if len(clusters) != 2 || clusters[1].GetName() != AdminClusterName {
		t.Fatalf("clusters = %v, want xds-grpc and admin", clusters)
	}
	admin := clusters[1].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if admin.GetAddress() != "127.0.0.1" || admin.GetPortValue() != 15000 {
		t.Errorf("admin cluster endpoint %s:%d, want 127.0.0.1:15000", admin.GetAddress(), admin.GetPortValue())
	}
	var tc tlsv3.UpstreamTlsContext
	if err := clusters[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&tc); err != nil {
		t.Fatalf("xds-grpc transport socket: %v", err)
	}
	if f := tc.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename(); f != "/var/run/secrets/istio/root-cert.pem" {
		t.Errorf("trusted CA filename = %q", f)
	}
	if tc.GetSni() != "skiff-pilot.istio-system.svc" {
		t.Errorf("SNI = %q, want the DNS host of XDSAddress", tc.GetSni())
	}

	paths := map[string][]string{}
	for _, l := range b.GetStaticResources().GetListeners() {
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatalf("%s: %v", l.GetName(), err)
		}
		for _, r := range hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
			p := r.GetMatch().GetPath() + r.GetMatch().GetPrefix()
			paths[l.GetName()] = append(paths[l.GetName()], p+"->"+r.GetRoute().GetCluster()+r.GetRoute().GetPrefixRewrite())
		}
	}
	want := map[string]string{
		"0.0.0.0_15021": "/ready->admin/ready /healthz/ready->admin/ready",
		"0.0.0.0_15090": "/stats/prometheus->admin",
	}
	if len(paths) != len(want) {
		t.Errorf("listeners %v, want %v", paths, want)
	}
	for l, w := range want {
		if got := strings.Join(paths[l], " "); got != w {
			t.Errorf("%s routes %q, want %q", l, got, w)
		}
	}

	// Without the new options nothing changes: one cluster, no listeners (the goldens pin the rest).
	plain := mustBuild(t, Options{NodeID: testNodeID, XDSAddress: testXDS})
	if n, l := len(plain.GetStaticResources().GetClusters()), plain.GetStaticResources().GetListeners(); n != 1 || l != nil {
		t.Errorf("plain bootstrap: %d clusters, listeners %v", n, l)
	}
	// Admin on a wildcard: the listeners reach it on loopback.
	o := injected()
	o.AdminAddress = "[::]:15000"
	wild := mustBuild(t, o).GetStaticResources().GetClusters()[1]
	if a := wild.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress(); a != "::1" {
		t.Errorf("admin on [::]: cluster endpoint %q, want ::1", a)
	}
}

// TestEnvoyValidateInjected has Envoy accept the injected bootstrap as the sidecar runs it:
// passed inline with --config-yaml, the node ID from --service-node.
func TestEnvoyValidateInjected(t *testing.T) {
	envoy := framework.EnvoyBinary(t)
	rootFile := filepath.Join(t.TempDir(), "root-cert.pem")
	if err := os.WriteFile(rootFile, testRoot(t), 0o644); err != nil {
		t.Fatal(err)
	}
	o := injected()
	o.XDSRootCertFile = rootFile
	js, err := JSON(o)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(envoy, "--mode", "validate", "--config-yaml", string(js),
		"--service-node", testNodeID, "--log-level", "warn").CombinedOutput()
	if err != nil {
		t.Fatalf("envoy --mode validate: %v\n%s\nbootstrap:\n%s", err, out, js)
	}
}

// TestEnvoyAdminListeners runs Envoy with the listeners against a stand-in pilot that holds its
// answers until released: before that the readiness listener must not say ready (Envoy waits for
// pilot, see InitialFetchTimeout); after it, readiness is 200, Prometheus metrics are served,
// and nothing else of the admin interface is reachable through either listener.
func TestEnvoyAdminListeners(t *testing.T) {
	lis, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pilot := &gatedADS{release: make(chan struct{})}
	srv := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(srv, pilot)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	ports := framework.FreePorts(t, "127.0.0.1", 3)
	o := injected()
	o.XDSAddress = lis.Addr().String()
	o.XDSRootCertFile = ""
	o.AdminAddress = "127.0.0.1:" + ports[0]
	o.ReadinessAddress = "127.0.0.1:" + ports[1]
	o.PrometheusAddress = "127.0.0.1:" + ports[2]
	js, err := JSON(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), framework.Patience)
	defer cancel()
	framework.RunEnvoy(t, "--config-yaml", string(js), "--service-node", testNodeID,
		"--disable-hot-restart", "--log-level", "warn")

	// Not ready while pilot has not answered (refused connections count as not ready, as they
	// do for the kubelet).
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://127.0.0.1:" + ports[1] + ReadyPath); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("ready before pilot answered")
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(pilot.release)

	get := func(port, path string, want int) string {
		var last string
		for ctx.Err() == nil {
			resp, err := http.Get("http://127.0.0.1:" + port + path)
			if err != nil {
				last = err.Error()
				time.Sleep(100 * time.Millisecond)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return string(body)
			}
			last = resp.Status + " " + string(body)
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("GET :%s%s: no %d within %v, last: %.200s", port, path, want, framework.Patience, last)
		return ""
	}
	get(ports[1], ReadyPath, http.StatusOK)
	get(ports[1], IstioReadyPath, http.StatusOK)
	if body := get(ports[2], PrometheusPath, http.StatusOK); !strings.Contains(body, "envoy_server_live") {
		t.Errorf("GET %s: no envoy_server_live in:\n%.300s", PrometheusPath, body)
	}
	get(ports[1], "/config_dump", http.StatusNotFound)
	get(ports[2], "/config_dump", http.StatusNotFound)
	resp, err := http.Post("http://127.0.0.1:"+ports[1]+ReadyPath, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST %s: %d, want 404 (GET only)", ReadyPath, resp.StatusCode)
	}
}

// gatedADS is a stand-in pilot that, once release is closed, answers every SotW request with an
// empty set of resources of the requested type: enough for Envoy to finish initializing.
type gatedADS struct {
	discoverygrpc.UnimplementedAggregatedDiscoveryServiceServer
	release chan struct{}
}

func (g *gatedADS) StreamAggregatedResources(s discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return err
		}
		if req.GetResponseNonce() != "" {
			continue // an ACK or NACK of what we sent
		}
		select {
		case <-g.release:
		case <-s.Context().Done():
			return s.Context().Err()
		}
		if err := s.Send(&discoverygrpc.DiscoveryResponse{TypeUrl: req.GetTypeUrl(), VersionInfo: "1", Nonce: "1"}); err != nil {
			return err
		}
	}
}
