// Package e2e runs pilot, real Envoys and real upstreams on 127.0.0.0/8 and checks what Envoy
// does with the configuration: traffic, Envoy's stats and /config_dump, and pilot's own status.
// Every Envoy a test starts must end with zero rejected xDS updates (checked by the framework).
package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// sidecarNode is a node ID in namespace default for a proxy at 127.0.0.1.
func sidecarNode(pod string) string {
	return fmt.Sprintf("sidecar~127.0.0.1~%s.default~default.svc.cluster.local", pod)
}

// serviceEntry is an HTTP ServiceEntry in namespace default with STATIC endpoints, each given
// as an upstream with optional labels.
func serviceEntry(name string, port int, endpoints ...endpoint) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: %[1]s
  namespace: default
spec:
  hosts:
  - %[1]s.default.svc.cluster.local
  ports:
  - number: %[2]d
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
`, name, port)
	for _, ep := range endpoints {
		fmt.Fprintf(&b, "  - address: %s\n    ports:\n      http: %d\n", ep.upstream.IP, ep.upstream.Port)
		if ep.version != "" {
			fmt.Fprintf(&b, "    labels:\n      version: %s\n", ep.version)
		}
	}
	return b.String()
}

type endpoint struct {
	upstream *framework.Upstream
	version  string
}

// subsets is a DestinationRule with subsets v1 and v2 by the version label.
func subsets(name string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: %[1]s
  namespace: default
spec:
  host: %[1]s
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`, name)
}

// split is a VirtualService sending v1Weight% to subset v1 and the rest to v2.
func split(name string, v1Weight int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %[1]s
  namespace: default
spec:
  hosts:
  - %[1]s
  http:
  - route:
    - destination:
        host: %[1]s
        subset: v1
      weight: %[2]d
    - destination:
        host: %[1]s
        subset: v2
      weight: %[3]d
`, name, v1Weight, 100-v1Weight)
}

// get sends one request through the Envoy listener on port with a Host header and returns the
// answering upstream's name.
func get(port int, host string) (string, error) {
	resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), host, nil)
	if err != nil {
		return "", err
	}
	if resp.Status != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d: %s", host, resp.Status, resp.Body)
	}
	return resp.Body, nil
}

// eventuallyAnswers waits until requests for host are answered by want.
func eventuallyAnswers(t *testing.T, port int, host, want string) {
	t.Helper()
	framework.Eventually(t, func() error {
		got, err := get(port, host)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("host %s answered by %q, want %q", host, got, want)
		}
		return nil
	})
}

// count sends n requests for host and counts answers by upstream name.
func count(port int, host string, n int) (map[string]int, error) {
	out := map[string]int{}
	for range n {
		got, err := get(port, host)
		if err != nil {
			return out, err
		}
		out[got]++
	}
	return out, nil
}
