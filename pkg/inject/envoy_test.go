package inject

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/test/framework"
)

// TestEnvoyAcceptsProxyArgs runs the real Envoy in validate mode with exactly the injected
// container's command line, after the kubelet's $(VAR) expansion, so the bootstrap, the node ID
// and every flag are checked by the Envoy the proxy image ships.
func TestEnvoyAcceptsProxyArgs(t *testing.T) {
	envoy := framework.EnvoyBinary(t)
	c, err := ca.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), "")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), CARootKey)
	if err := os.WriteFile(root, c.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	pod, err := Config{}.Inject(deploymentPod(), "bookinfo")
	if err != nil {
		t.Fatal(err)
	}
	proxy := pod.Spec.Containers[len(pod.Spec.Containers)-1]
	env := map[string]string{"POD_NAME": "reviews-v1-7f99b6d4c5-x2lqp", "POD_NAMESPACE": "bookinfo", "POD_IP": "10.1.2.3", "SERVICE_ACCOUNT": "bookinfo-reviews"}
	var args []string
	for _, a := range proxy.Args {
		a = kubeletExpand(a, env)
		// The ConfigMap is mounted where the test cannot write; point Envoy at a copy.
		args = append(args, strings.ReplaceAll(a, CARootMountPath+"/"+CARootKey, root))
	}
	if want := "sidecar~10.1.2.3~reviews-v1-7f99b6d4c5-x2lqp.bookinfo~bookinfo.svc.cluster.local"; !strings.Contains(strings.Join(args, " "), want) {
		t.Fatalf("expanded args %q lack node ID %s", args, want)
	}
	out, err := exec.Command(envoy, append([]string{"--mode", "validate"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("envoy --mode validate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// kubeletExpand does what the kubelet does to container arguments: $(VAR) becomes the value of
// VAR from the container's environment; unknown references stay as they are.
func kubeletExpand(s string, env map[string]string) string {
	return regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// TestEnvoyJoinsPilotOverTLS runs the injected proxy's command line for real against a stand-in
// pilot on TLS, with a serving certificate for DefaultPilotServerName from the mesh CA: Envoy
// must verify it with the root read from the mounted file, subscribe with the node ID from
// --service-node, and turn ready on the readiness port once pilot has answered. The fixed
// ports (admin, readiness, Prometheus) are moved to free ones so the test can run anywhere.
func TestEnvoyJoinsPilotOverTLS(t *testing.T) {
	authority, err := ca.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), "")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), CARootKey)
	if err := os.WriteFile(root, authority.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	serving, err := authority.IssueServing([]string{DefaultPilotServerName}, nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pilot := &answeringADS{nodes: make(chan string, 16)}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serving}, NextProtos: []string{"h2"}})))
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(srv, pilot)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	pod, err := Config{PilotAddress: lis.Addr().String()}.Inject(deploymentPod(), "bookinfo")
	if err != nil {
		t.Fatal(err)
	}
	proxy := pod.Spec.Containers[len(pod.Spec.Containers)-1]
	ports := framework.FreePorts(t, "127.0.0.1", 3)
	moved := strings.NewReplacer(
		CARootMountPath+"/"+CARootKey, root,
		`"port_value":15000`, `"port_value":`+ports[0],
		`"port_value":15021`, `"port_value":`+ports[1],
		`"port_value":15090`, `"port_value":`+ports[2],
		`"address":"0.0.0.0"`, `"address":"127.0.0.1"`,
	)
	env := map[string]string{"POD_NAME": "reviews-v1-7f99b6d4c5-x2lqp", "POD_NAMESPACE": "bookinfo", "POD_IP": "10.1.2.3"}
	var args []string
	for _, a := range proxy.Args {
		args = append(args, moved.Replace(kubeletExpand(a, env)))
	}

	ctx, cancel := context.WithTimeout(t.Context(), framework.Patience)
	defer cancel()
	framework.RunEnvoy(t, args...)

	select {
	case id := <-pilot.nodes:
		if want := "sidecar~10.1.2.3~reviews-v1-7f99b6d4c5-x2lqp.bookinfo~bookinfo.svc.cluster.local"; id != want {
			t.Errorf("node ID %q, want %q", id, want)
		}
	case <-ctx.Done():
		t.Fatalf("no ADS request over TLS within %v", framework.Patience)
	}
	probe := "http://127.0.0.1:" + ports[1] + proxy.ReadinessProbe.HTTPGet.Path
	for {
		resp, err := http.Get(probe)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("readiness probe %s never 200: %v", probe, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// answeringADS is a stand-in pilot: it reports the node ID of each stream and answers every
// request with an empty set of the requested type, enough for Envoy to become ready.
type answeringADS struct {
	discoverygrpc.UnimplementedAggregatedDiscoveryServiceServer
	nodes chan string
}

func (a *answeringADS) StreamAggregatedResources(s discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return err
		}
		if id := req.GetNode().GetId(); id != "" {
			select {
			case a.nodes <- id:
			default:
			}
		}
		if req.GetResponseNonce() != "" {
			continue // an ACK
		}
		if err := s.Send(&discoverygrpc.DiscoveryResponse{TypeUrl: req.GetTypeUrl(), VersionInfo: "1", Nonce: "1"}); err != nil {
			return err
		}
	}
}
