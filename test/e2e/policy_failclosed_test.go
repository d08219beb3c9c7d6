package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/render"
	"github.com/skiffmesh/skiff/pkg/translate"
	"github.com/skiffmesh/skiff/test/framework"
)

// TestPolicyLiveFailClosed: a sidecar's inbound listener, as pilot translates it, in an Envoy
// whose RBAC rules never arrive (its ADS server does not answer) serves no request until
// Envoy gives up waiting (the initial fetch timeout, 15 s), and then denies every one: the RBAC
// filters' default configurations fail closed, never open. The listener and the cluster behind
// it are static here, so that nothing but the rules is missing.
func TestPolicyLiveFailClosed(t *testing.T) {
	const ip, appIP = "127.0.12.61", "127.0.12.62"
	app := framework.StartUpstream(t, appIP, "api")
	port := framework.FreePort(t, ip)
	listener, cluster := translatedIngress(t, ip, port, app.Address())

	dir := t.TempDir()
	admin := framework.FreeAddress(t, ip)
	node := "sidecar~" + ip + "~api-1.default~default.svc.cluster.local"
	bootstrap := unansweredADSBootstrap(t, node, listener, cluster, admin, framework.FreeAddress(t, ip))
	path := filepath.Join(dir, "bootstrap.json")
	if err := os.WriteFile(path, bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	started := time.Now()
	proc, err := framework.StartProcess("envoy fail-closed", framework.EnvoyBinary(t), []string{
		"-c", path, "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn",
	}, &log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proc.Stop(&log)
		if t.Failed() {
			t.Logf("---- envoy log ----\n%s", log.String())
		}
	})

	url := fmt.Sprintf("http://%s:%d/", ip, port)
	var served time.Duration
	framework.Eventually(t, func() error {
		resp, err := framework.Send(http.MethodGet, url, "", nil)
		if err != nil {
			return err // warming: the listener accepts nothing yet
		}
		served = time.Since(started)
		if resp.Status != http.StatusForbidden || resp.Body != "RBAC: access denied" {
			t.Errorf("without its RBAC rules the listener answered %d %q; want 403 RBAC: access denied", resp.Status, resp.Body)
		}
		return nil
	})
	if n := app.Requests(); n != 0 {
		t.Errorf("the application received %d requests; want none", n)
	}
	t.Logf("rules never delivered: the listener served nothing for %v, then denied", served)
}

// translatedIngress is the Sidecar ingress listener pilot gives a proxy at ip, without capture,
// for an HTTP application at appAddress on port, and its inbound cluster.
func translatedIngress(t *testing.T, ip string, port int, appAddress string) (*listenerv3.Listener, *clusterv3.Cluster) {
	t.Helper()
	dir := t.TempDir()
	framework.WriteFile(t, dir, "sidecar.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: api
  namespace: default
spec:
  ingress:
  - port:
      number: %d
      protocol: HTTP
      name: http
    defaultEndpoint: %s
`, port, appAddress))
	set, errs := config.NewLoader(dir).Load()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	snap := model.Build(set)
	proxy, err := model.ParseNodeID("sidecar~" + ip + "~api-1.default~default.svc.cluster.local") // as in the test's bootstrap
	if err != nil {
		t.Fatal(err)
	}
	proxy.InterceptionMode = model.InterceptionNone
	var listener *listenerv3.Listener
	for _, l := range translate.Listeners(snap, proxy) {
		if l.Name == fmt.Sprintf("%s_%d", ip, port) {
			listener = l
		}
	}
	var cluster *clusterv3.Cluster
	for _, c := range translate.Clusters(snap, proxy) {
		if c.Name == translate.InboundClusterName(uint32(port)) {
			cluster = c
		}
	}
	if listener == nil || cluster == nil {
		t.Fatalf("no ingress listener or inbound cluster for port %d", port)
	}
	return listener, cluster
}

// unansweredADSBootstrap is node's bootstrap holding listener and cluster statically, and
// taking the rest over ADS from deadAddress, where nothing listens.
func unansweredADSBootstrap(t *testing.T, node string, listener *listenerv3.Listener, cluster *clusterv3.Cluster, admin, deadAddress string) []byte {
	t.Helper()
	adminAddr, err := socketAddress(admin)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := socketAddress(deadAddress)
	if err != nil {
		t.Fatal(err)
	}
	xds := &clusterv3.Cluster{
		Name:                 "xds-grpc",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": translate.MustAny(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
				}},
			}),
		},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: "xds-grpc",
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: dead}},
			}}}},
		},
	}
	boot := &bootstrapv3.Bootstrap{
		Node:  &corev3.Node{Id: node, Cluster: "api-1.default"},
		Admin: &bootstrapv3.Admin{Address: adminAddr},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{AdsConfig: &corev3.ApiConfigSource{
			ApiType:             corev3.ApiConfigSource_GRPC,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "xds-grpc"},
			}}},
		}},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{listener},
			Clusters:  []*clusterv3.Cluster{cluster, xds},
		},
	}
	out, err := render.JSON(boot)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// socketAddress parses "ip:port" into an Envoy address.
func socketAddress(hostPort string) (*corev3.Address, error) {
	host, portText, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", hostPort, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", hostPort, err)
	}
	return translate.SocketAddress(host, uint32(port)), nil
}
