package kubemesh

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestKubernetesWaitCoversDebouncedEvents: /debug/wait, which `skiffctl wait` calls, answers
// only once what pilot has received from the API server is pushed and ACKed, including a change
// whose event the debounce (100 ms of quiet) still holds: right after the wait, the Envoy holds
// the change. Before, the wait looked only at the push loop, found it in sync with the
// configuration from before the event, and answered at once (the flake of
// TestSkiffctlThroughPortForward, whose wait raced the skiff-pilot Service it had just created).
func TestKubernetesWaitCoversDebouncedEvents(t *testing.T) {
	ns := newNamespace(t, "wait")
	pilot := startPilot(t)
	pods := newPodNetwork(t, pilot)
	deployService(t, pods, ns, "ratings", "10.253.78.", "v1")
	client := createPod(t, ns, "client-1", "10.253.78.1", "client", map[string]string{"app": "client"})
	envoy := pods.startEnvoy(t, pilot, nodeID(client))
	wait := func(when string) {
		t.Helper()
		if status, body := pilot.Get(t, "/debug/wait?timeout=2m"); status != http.StatusOK {
			t.Fatalf("%s: /debug/wait answered %d: %s", when, status, body)
		}
	}
	wait("after the Envoy started")
	for i := range 3 {
		events := pilot.Metric(t, "skiff_kube_events_total", nil)
		apply(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: %s}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
      headers: {response: {set: {x-wait: round-%d}}}
`, ns, i))
		// The wait is asked once pilot has the event (the API server's watch delivers it within
		// milliseconds), usually well inside the 100 ms the debounce holds it.
		framework.Eventually(t, func() error {
			if n := pilot.Metric(t, "skiff_kube_events_total", nil); n <= events {
				return fmt.Errorf("pilot has not received the VirtualService's event yet (%v events, %v before the apply)", n, events)
			}
			return nil
		})
		wait(fmt.Sprintf("round %d", i))
		if dump := string(envoy.ConfigDump(t)); !strings.Contains(dump, fmt.Sprintf(`"round-%d"`, i)) {
			t.Fatalf("round %d: right after the wait, the Envoy's routes lack the applied header", i)
		}
	}
}
