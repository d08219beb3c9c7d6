package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

	echo := filepath.Join(t.TempDir(), "echo")
	if out, err := exec.Command("go", "build", "-C", root, "-o", echo, "./examples/echo").CombinedOutput(); err != nil {
		t.Fatalf("building examples/echo: %v\n%s", err, out)
	}
	cmd := exec.Command(echo, echoArgs...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

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
