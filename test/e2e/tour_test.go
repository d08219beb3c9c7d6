package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestExamplesTour runs the README tour: examples/bookinfo.yaml served by pilot, the example echo
// upstreams, and an Envoy bootstrapped by `pilot bootstrap`. The example's fixed ports are
// swapped for free ones so the test can run beside a developer's own tour.
func TestExamplesTour(t *testing.T) {
	root := framework.RepoRoot(t)
	mesh, err := os.ReadFile(filepath.Join(root, "examples", "bookinfo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	listenPort := framework.FreePort(t, "127.0.0.1")
	ports := map[string]int{"8001": 0, "8002": 0, "8003": 0}
	config := strings.ReplaceAll(string(mesh), "number: 9080", fmt.Sprintf("number: %d", listenPort))
	var echoArgs []string
	for old, name := range map[string]string{"8001": "reviews-v1", "8002": "reviews-v2", "8003": "ratings"} {
		ports[old] = framework.FreePort(t, "127.0.0.1")
		config = strings.ReplaceAll(config, ": "+old, fmt.Sprintf(": %d", ports[old]))
		echoArgs = append(echoArgs, fmt.Sprintf("127.0.0.1:%d=%s", ports[old], name))
	}

	startEcho(t, echoArgs...)

	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", config)
	node := "sidecar~127.0.0.1~productpage-1.bookinfo~bookinfo.svc.cluster.local"

	// The README's form: Envoy reading the bootstrap from a process substitution.
	validate := exec.Command("bash", "-c", `"$ENVOY" --mode validate --disable-hot-restart -c <("$PILOT" bootstrap --node "$NODE" --xds-address "$XDS")`)
	validate.Env = append(os.Environ(), "ENVOY="+framework.EnvoyBinary(t), "PILOT="+framework.PilotBinary(t), "NODE="+node, "XDS="+p.XDSAddress)
	if out, err := validate.CombinedOutput(); err != nil {
		t.Errorf("envoy -c <(pilot bootstrap ...) does not load: %v\n%s", err, out)
	}

	framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: node})
	framework.Eventually(t, func() error {
		got, err := get(listenPort, "ratings")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(got, "ratings: GET / host=ratings") {
			return fmt.Errorf("ratings answered %q", got)
		}
		return nil
	})
	for range 20 {
		if got, err := get(listenPort, "reviews"); err != nil || !strings.HasPrefix(got, "reviews-v") {
			t.Fatalf("reviews: %q, %v", got, err)
		}
	}
	for range 10 {
		resp, err := framework.Send("GET", fmt.Sprintf("http://127.0.0.1:%d/", listenPort), "reviews", map[string]string{"end-user": "jason"})
		if err != nil || !strings.HasPrefix(resp.Body, "reviews-v2") {
			t.Fatalf("end-user: jason must always reach v2: %v, %v", resp, err)
		}
	}
}

// startEcho builds examples/echo and runs it with args until the test ends.
func startEcho(t *testing.T, args ...string) {
	t.Helper()
	echo := filepath.Join(t.TempDir(), "echo")
	if out, err := exec.Command("go", "build", "-C", framework.RepoRoot(t), "-o", echo, "./examples/echo").CombinedOutput(); err != nil {
		t.Fatalf("building examples/echo: %v\n%s", err, out)
	}
	cmd := exec.Command(echo, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// TestExamplesTourTwoSidecars runs the README tour's step 8: examples/two-sidecars.yaml, its app
// on httpbin's address, and the two Envoys started as the README starts them, with nothing but
// their node IDs (the test adds only free admin ports): no --labels, since the WorkloadEntries
// their node IDs name give the labels; no --config-yaml, since `pilot bootstrap` binds each
// proxy's connections to its loopback address, so pilot's identity check grants both their
// certificates. Then the README's three curls: a GET through sleep's sidecar reaches httpbin
// over mTLS, a DELETE is denied by the AuthorizationPolicy, and plaintext straight to httpbin's
// sidecar is refused (STRICT). The example's fixed ports are swapped for free ones.
func TestExamplesTourTwoSidecars(t *testing.T) {
	mesh, err := os.ReadFile(filepath.Join(framework.RepoRoot(t), "examples", "two-sidecars.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const sleepIP, httpbinIP = "127.0.0.2", "127.0.0.3"
	port := freePortOnBoth(t, sleepIP, httpbinIP) // sleep's egress and httpbin's ingress listener
	app := framework.FreeAddress(t, httpbinIP)
	config := strings.ReplaceAll(string(mesh), "number: 8000", fmt.Sprintf("number: %d", port))
	config = strings.ReplaceAll(config, httpbinIP+":8080", app)
	if config == string(mesh) || !strings.Contains(config, app) {
		t.Fatal("examples/two-sidecars.yaml no longer has the ports this test swaps (8000, 127.0.0.3:8080)")
	}
	startEcho(t, app+"=httpbin")

	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "two-sidecars.yaml", config)
	httpbin := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: "sidecar~127.0.0.3~httpbin-1.demo~demo.svc.cluster.local"})
	framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: "sidecar~127.0.0.2~sleep-1.demo~demo.svc.cluster.local"})

	// curl -H 'Host: httpbin' 127.0.0.2:8000/
	through := fmt.Sprintf("http://%s:%d/", sleepIP, port)
	framework.Eventually(t, func() error {
		resp, err := framework.Send("GET", through, "httpbin", nil)
		if err != nil {
			return err
		}
		if resp.Status != 200 || !strings.HasPrefix(resp.Body, "httpbin: GET / host=httpbin") {
			return fmt.Errorf("GET through sleep's sidecar: %d %q", resp.Status, resp.Body)
		}
		return nil
	})
	if n := sumStats(t, httpbin, "listener.", ".ssl.handshake"); n == 0 {
		t.Error("httpbin's sidecar made no TLS handshake: the allowed request did not come over mTLS")
	}
	if n := sumStats(t, httpbin, "http.", ".rbac.allowed"); n == 0 {
		t.Error("httpbin's RBAC filter allowed nothing: the request did not go through the AuthorizationPolicy")
	}

	// curl -X DELETE -H 'Host: httpbin' 127.0.0.2:8000/
	resp, err := framework.Send("DELETE", through, "httpbin", nil)
	if err != nil || resp.Status != 403 || !strings.Contains(resp.Body, "RBAC: access denied") {
		t.Errorf("DELETE through sleep's sidecar: %v %v; want 403 RBAC: access denied", resp, err)
	}
	if n := sumStats(t, httpbin, "http.", ".rbac.denied"); n != 1 {
		t.Errorf("httpbin's RBAC filter denied %d requests, want the DELETE", n)
	}

	// curl 127.0.0.3:8000/   (plaintext, no sidecar: STRICT refuses it)
	if resp, err := framework.Send("GET", fmt.Sprintf("http://%s:%d/", httpbinIP, port), "httpbin", nil); err == nil {
		t.Errorf("plaintext straight to httpbin's sidecar answered %d %q; want the connection refused", resp.Status, resp.Body)
	}
}

// freePortOnBoth returns a port free on both addresses.
func freePortOnBoth(t *testing.T, a, b string) int {
	t.Helper()
	for range 100 {
		port := framework.FreePort(t, a)
		if l, err := net.Listen("tcp", net.JoinHostPort(b, strconv.Itoa(port))); err == nil {
			l.Close()
			return port
		}
	}
	t.Fatalf("no port free on both %s and %s", a, b)
	return 0
}

// sumStats sums Envoy's stats named PREFIX...SUFFIX.
func sumStats(t *testing.T, e *framework.Envoy, prefix, suffix string) uint64 {
	t.Helper()
	var n uint64
	for name, v := range e.Stats(t) {
		if strings.HasPrefix(name, prefix) && strings.HasSuffix(name, suffix) {
			n += v
		}
	}
	return n
}
