package kubemesh

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// The API server refuses loopback addresses in EndpointSlices, as a real cluster's pod network
// never uses them. So the tests make a pod network of their own: a network namespace whose lo
// carries the Pod IPs (10.253.0.x), where the apps listen and the Envoys run. Envoy reaches
// pilot, on the root namespace's loopback, through a forwarder; the test reaches Envoy's
// listeners with an HTTP client whose connections start inside the namespace.

type podNetwork struct {
	ns  *framework.NetNS
	xds string // pilot's ADS as Envoys in the namespace reach it
}

// newPodNetwork creates the namespace and the forwarder to pilot.
func newPodNetwork(t *testing.T, pilot *framework.Pilot) *podNetwork {
	t.Helper()
	n := &podNetwork{ns: framework.NewNetNS(t, "kubemesh")}
	l := n.ns.Listen(t, "127.0.0.1:15010")
	framework.Forward(t, l, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", pilot.XDSAddress)
	})
	n.xds = l.Addr().String()
	return n
}

// addIP gives the pod network one more Pod IP.
func (n *podNetwork) addIP(t *testing.T, ip string) {
	t.Helper()
	n.ns.IP(t, "addr", "add", ip+"/32", "dev", "lo")
}

// app is an HTTP server in the pod network that names itself in the x-upstream header.
type app struct {
	name     string
	address  string // IP:PORT
	requests atomic.Int64
}

// startApp starts an app on a new Pod IP.
func (n *podNetwork) startApp(t *testing.T, ip, name string) *app {
	t.Helper()
	n.addIP(t, ip)
	a := &app{name: name}
	l := n.ns.Listen(t, ip+":0")
	a.address = l.Addr().String()
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		w.Header().Set("x-upstream", name)
		fmt.Fprintf(w, "%s %s %s\n", name, r.Method, r.URL.Path)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

// startEnvoy runs a sidecar without capture for the Pod with nodeID, inside the pod network.
func (n *podNetwork) startEnvoy(t *testing.T, pilot *framework.Pilot, nodeID string, bootstrapArgs ...string) *framework.Envoy {
	t.Helper()
	return framework.StartEnvoyInNetNS(t, pilot, n.ns, framework.NetNSEnvoyOptions{
		NodeID: nodeID, XDSAddress: n.xds, Interception: "none", BootstrapArgs: bootstrapArgs,
	})
}

// routedTo sends a request from inside the pod network and returns the app that answered.
func (n *podNetwork) routedTo(url, host string, headers map[string]string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := n.ns.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return resp.Header.Get("x-upstream"), nil
}

// eventuallyRoutedTo waits until requests land on want.
func (n *podNetwork) eventuallyRoutedTo(t *testing.T, url, host string, headers map[string]string, want string) {
	t.Helper()
	framework.Eventually(t, func() error {
		got, err := n.routedTo(url, host, headers)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("routed to %q, want %q", got, want)
		}
		return nil
	})
}

// get sends a GET from inside the pod network.
func (n *podNetwork) get(url, host string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Host = host
	resp, err := n.ns.HTTPClient().Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}
