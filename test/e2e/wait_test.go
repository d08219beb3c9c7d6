package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skiffmesh/skiff/test/framework"
)

// waitAnswer is what /debug/wait answers.
type waitAnswer struct {
	Synced  bool `json:"synced"`
	Proxies int  `json:"proxies"`
	Pending []struct {
		Proxy      string `json:"proxy"`
		Type       string `json:"type"`
		WaitingFor string `json:"waiting_for"`
	} `json:"pending"`
	Rejected []struct {
		Proxy string `json:"proxy"`
		Type  string `json:"type"`
		Error string `json:"error"`
	} `json:"rejected"`
	ConfigReload string `json:"config_reload"`
	ConfigErrors int    `json:"config_errors"`
}

// waitForPush calls the pilot's /debug/wait right away, as a script does after writing a
// file, and requires the 200 that says every proxy has answered the push.
func waitForPush(t *testing.T, p *framework.Pilot) waitAnswer {
	t.Helper()
	status, body := p.Get(t, "/debug/wait?timeout=2m")
	var answer waitAnswer
	if err := json.Unmarshal(body, &answer); err != nil {
		t.Fatalf("/debug/wait: status %d, %v: %s", status, err, body)
	}
	if status != http.StatusOK || !answer.Synced {
		t.Fatalf("/debug/wait: status %d, want 200: %s", status, body)
	}
	return answer
}

// TestWaitReturnsOnceEnvoyHasTheChange: after writing a file and calling /debug/wait (with
// nothing in between: the folder's debounce has not even fired), Envoy already routes by the
// change, whether it touches routes, adds a listener and a cluster, or moves the proxy to
// another configuration class (pilot ends its stream and Envoy reconnects). Nothing here
// polls: each check runs once, right after the wait. Over both protocols.
func TestWaitReturnsOnceEnvoyHasTheChange(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) { waitForEachKindOfChange(t, delta) })
	}
}

func waitForEachKindOfChange(t *testing.T, delta bool) {
	v1 := framework.StartUpstream(t, "127.0.5.1", "v1")
	v2 := framework.StartUpstream(t, "127.0.5.2", "v2")
	ratings := framework.StartUpstream(t, "127.0.5.3", "ratings")
	app := framework.StartUpstream(t, "127.0.5.4", "app")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "reviews.yaml", serviceEntry("reviews", port, endpoint{v1, "v1"}, endpoint{v2, "v2"})+"---\n"+subsets("reviews"))
	node := sidecarNode("wait-1")
	framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: node, Delta: delta, BootstrapArgs: []string{"--labels", "role=edge,tier=front"}})
	if answer := waitForPush(t, p); answer.Proxies != 1 {
		t.Fatalf("/debug/wait counts %d proxies, want 1", answer.Proxies)
	}

	// Routes: all of reviews to one subset, then to the other, then back.
	for _, weight := range []int{100, 0, 100} {
		p.WriteConfig(t, "routing.yaml", split("reviews", weight))
		waitForPush(t, p)
		want := map[int]string{100: "v1", 0: "v2"}[weight]
		if got, err := count(port, "reviews", 20); err != nil || got[want] != 20 {
			t.Fatalf("right after the wait for %d%% to v1: answers %v (%v), want all %s", weight, got, err, want)
		}
	}

	// A new service on a new port: a listener, its routes, a cluster and its endpoints.
	ratingsPort := framework.FreePort(t, "127.0.0.1")
	p.WriteConfig(t, "ratings.yaml", serviceEntry("ratings", ratingsPort, endpoint{upstream: ratings}))
	waitForPush(t, p)
	if got, err := get(ratingsPort, "ratings"); err != nil || got != "ratings" {
		t.Fatalf("right after the wait for a new service: %q, %v", got, err)
	}

	// A Sidecar that selects the proxy by a label no selector named before changes the
	// proxy's configuration class: pilot ends its stream, and the wait lasts until Envoy is
	// back and has the Sidecar's ingress listener.
	inPort := framework.FreePort(t, "127.0.0.1")
	p.WriteConfig(t, "sidecar.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: edge
  namespace: default
spec:
  workloadSelector:
    labels:
      role: edge
  ingress:
  - port:
      number: %d
      protocol: HTTP
      name: http
    defaultEndpoint: %s
`, inPort, app.Address()))
	waitForPush(t, p)
	resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", inPort), "app.default", nil)
	if err != nil || resp.Body != "app" {
		t.Fatalf("right after the wait for the Sidecar's ingress listener: %+v, %v", resp, err)
	}
	if !strings.Contains(p.Log(), "its proxies reconnect") {
		t.Errorf("the Sidecar did not move the proxy to another class, so the reconnect was not waited for")
	}

	// An AuthorizationPolicy that selects by a label no selector named before moves the proxy
	// again, to a configuration whose clusters and routes are the very ones it holds (policies
	// shape only listeners and RBAC rules): Envoy comes back holding their current versions.
	// Its new stream is answered all the same, so every type shows sent and ACKed.
	p.WriteConfig(t, "policy.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: front
  namespace: default
spec:
  selector:
    matchLabels:
      tier: front
  action: ALLOW
  rules:
  - {}
`)
	waitForPush(t, p)
	if n := strings.Count(p.Log(), "its proxies reconnect"); n != 2 {
		t.Errorf("%d class moves in pilot's log, want 2 (the Sidecar's and the policy's)", n)
	}
	framework.Eventually(t, func() error { return allAcked(p.Syncz(t), node, delta) })
	if got, err := get(ratingsPort, "ratings"); err != nil || got != "ratings" {
		t.Fatalf("after the policy's move: %q, %v", got, err)
	}
}

// TestWaitReportsRejectionsAndTimesOut: a NACK ends the wait with the rejection listed (pilot
// has nothing better to send), and a proxy that never answers makes it time out with a 504
// that names the proxy. Both are xDS clients of the test's own: an Envoy that NACKs would fail
// the suite's zero-NACK check.
func TestWaitReportsRejectionsAndTimesOut(t *testing.T) {
	p := framework.StartPilot(t, framework.PilotOptions{})
	upstream := framework.StartUpstream(t, "127.0.5.5", "reviews")
	p.WriteConfig(t, "reviews.yaml", serviceEntry("reviews", framework.FreePort(t, "127.0.0.1"), endpoint{upstream: upstream}))
	envoy := sidecarNode("envoy-1")
	framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: envoy})
	waitForPush(t, p)

	rejecting := "sidecar~127.0.5.6~rejecting-1.default~default.svc.cluster.local"
	stream := adsStream(t, p, rejecting)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			answer := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce, VersionInfo: resp.VersionInfo}
			if resp.TypeUrl == resourcev3.ListenerType {
				answer.VersionInfo = ""
				answer.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "listeners rejected for the test"}
			}
			if stream.Send(answer) != nil {
				return
			}
		}
	}()
	answer := waitForPush(t, p)
	if len(answer.Rejected) != 1 || answer.Rejected[0].Type != "lds" || answer.Rejected[0].Proxy != rejecting ||
		answer.Rejected[0].Error != "listeners rejected for the test" {
		t.Errorf("rejections %+v, want the listeners' NACK", answer.Rejected)
	}

	silent := "sidecar~127.0.5.7~silent-1.default~default.svc.cluster.local"
	quiet := adsStream(t, p, silent)
	if _, err := quiet.Recv(); err != nil {
		t.Fatal(err)
	}
	status, body := p.Get(t, "/debug/wait?timeout=300ms")
	if status != http.StatusGatewayTimeout || !strings.Contains(string(body), silent) || strings.Contains(string(body), envoy) {
		t.Errorf("with a proxy that never ACKs: status %d, want 504 naming it and only it: %s", status, body)
	}
}

// adsStream opens an ADS stream to p as node and asks for clusters and listeners; it is closed
// when the test ends.
func adsStream(t *testing.T, p *framework.Pilot, node string) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	conn, err := grpc.NewClient(p.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	return stream
}
