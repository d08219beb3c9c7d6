package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// Protocol sniffing on real Envoy: a service port that names no protocol (`web`) gets a
// listener whose http_inspector sends HTTP/1.1 and HTTP/2 prior knowledge through a connection
// manager, routed by the VirtualService, and anything else to the service as TCP.

// dualUpstream is a framework.ServeSniffable server: HTTP and a raw TCP protocol on one port.
type dualUpstream struct {
	ip   string
	port int
}

func startDualUpstream(t *testing.T, ip, name string) *dualUpstream {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listening on %s: %v", ip, err)
	}
	framework.ServeSniffable(t, l, name)
	return &dualUpstream{ip: ip, port: l.Addr().(*net.TCPAddr).Port}
}

// h2cClient speaks HTTP/2 with prior knowledge, one connection per request.
var h2cClient = func() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{
		Timeout:   framework.RequestTimeout,
		Transport: &http.Transport{Proxy: nil, Protocols: &protocols, DisableKeepAlives: true},
	}
}()

// sendH2C makes one HTTP/2 prior-knowledge request and returns the x-upstream and x-proto the
// answer carries.
func sendH2C(url, host string) (upstream, proto string, err error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", "", err
	}
	req.Host = host
	resp, err := h2cClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("h2c: status %d", resp.StatusCode)
	}
	return resp.Header.Get("x-upstream"), resp.Header.Get("x-proto"), nil
}

// sendHelo speaks the raw TCP protocol of framework.ServeSniffable to address.
func sendHelo(address string) (string, error) {
	c, err := net.DialTimeout("tcp", address, framework.RequestTimeout)
	if err != nil {
		return "", err
	}
	return framework.SayHelo(c)
}

// TestSniffedPort: web's port is named `web` and declares no protocol; legacy, an HTTP service,
// shares the port number, and so the sidecar's listener. HTTP/1.1 to web follows web's
// VirtualService (end-user: jason goes to legacy, the rest to web); HTTP/2 prior knowledge is
// routed alike and reaches web as HTTP/2 (the cluster speaks the client's protocol); a raw TCP
// client on the same port reaches web's upstream through the TCP chain.
func TestSniffedPort(t *testing.T) {
	web := startDualUpstream(t, "127.0.2.21", "web")
	legacy := framework.StartUpstream(t, "127.0.2.22", "legacy")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "sniffed.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: web
  namespace: default
spec:
  hosts:
  - web.default.svc.cluster.local
  ports:
  - number: %[1]d
    name: web
  resolution: STATIC
  endpoints:
  - address: %[2]s
    ports:
      web: %[3]d
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy
  namespace: default
spec:
  hosts:
  - legacy.default.svc.cluster.local
  ports:
  - number: %[1]d
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: %[4]s
    ports:
      http: %[5]d
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: default
spec:
  hosts:
  - web
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: legacy
  - route:
    - destination:
        host: web
`, port, web.ip, web.port, legacy.IP, legacy.Port))
	envoy := startVSEnvoy(t, p)
	address := fmt.Sprintf("127.0.0.1:%d", port)
	url := "http://" + address + "/"

	routedTo := func(headers map[string]string, want string) {
		t.Helper()
		framework.Eventually(t, func() error {
			resp, err := framework.Send(http.MethodGet, url, "web", headers)
			if err != nil {
				return err
			}
			if got := resp.Header.Get("x-upstream"); resp.Status != http.StatusOK || got != want {
				return fmt.Errorf("HTTP/1.1 with %v: %d from %q; want 200 from %s", headers, resp.Status, got, want)
			}
			return nil
		})
	}
	routedTo(nil, "web")
	routedTo(map[string]string{"end-user": "jason"}, "legacy")

	framework.Eventually(t, func() error {
		upstream, proto, err := sendH2C(url, "web")
		if err != nil {
			return err
		}
		if upstream != "web" || proto != "HTTP/2.0" {
			return fmt.Errorf("HTTP/2 prior knowledge reached %q over %q; want web over HTTP/2.0", upstream, proto)
		}
		return nil
	})

	framework.Eventually(t, func() error {
		got, err := sendHelo(address)
		if err != nil {
			return err
		}
		if got != "web-tcp" {
			return fmt.Errorf("raw TCP client got %q; want web-tcp", got)
		}
		return nil
	})

	// Each kind of traffic took the chain meant for it.
	envoy.WaitStat(t, fmt.Sprintf("http.outbound_127.0.0.1_%d.downstream_rq_total", port), atLeast(3))
	envoy.WaitStat(t, fmt.Sprintf("tcp.outbound|%d||web.default.svc.cluster.local.downstream_cx_total", port), atLeast(1))
	envoy.AssertNoRejections(t)
}

// TestSniffedPortOverMTLS: a client sidecar sniffs the server's port (no protocol) and both
// proxies hold certificates, so auto-mTLS applies. The sniffing chains make the upstream
// connection offer Istio's HTTP ALPN with the standard name last; the server's ingress
// listener (HTTP, PERMISSIVE by default) negotiates http/1.1 or h2 from it and reads the
// request as such: the app learns the client's identity, and HTTP/2 prior knowledge arrives as
// HTTP/2.
func TestSniffedPortOverMTLS(t *testing.T) {
	const clientIP, serverIP, appIP = "127.0.11.1", "127.0.11.2", "127.0.11.12"
	app := framework.StartUpstream(t, appIP, "server-app")
	svcPort, inPort := framework.FreePort(t, "127.0.0.1"), framework.FreePort(t, serverIP)
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client-1
  namespace: default
spec:
  address: %[1]s
  serviceAccount: client
  labels:
    app: client
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: server-1
  namespace: default
spec:
  address: %[2]s
  serviceAccount: server
  labels:
    app: server
    security.istio.io/tlsMode: istio
  ports:
    web: %[3]d
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: server
  namespace: default
spec:
  hosts:
  - server.default.svc.cluster.local
  ports:
  - number: %[4]d
    name: web
  resolution: STATIC
  workloadSelector:
    labels:
      app: server
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: server
  namespace: default
spec:
  workloadSelector:
    labels:
      app: server
  ingress:
  - port:
      number: %[3]d
      protocol: HTTP
      name: http
    bind: %[2]s
    defaultEndpoint: %[5]s
  egress:
  - hosts:
    - "istio-system/*"
`, clientIP, serverIP, inPort, svcPort, app.Address()))
	server := framework.StartEnvoy(t, p, framework.EnvoyOptions{
		NodeID:        "sidecar~" + serverIP + "~server-1.default~default.svc.cluster.local",
		BootstrapArgs: []string{"--labels", "app=server"},
	})
	client := framework.StartEnvoy(t, p, framework.EnvoyOptions{
		NodeID:        "sidecar~" + clientIP + "~client-1.default~default.svc.cluster.local",
		BootstrapArgs: []string{"--labels", "app=client"},
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/", svcPort)

	var seen map[string]string
	framework.Eventually(t, func() error {
		resp, err := framework.Send(http.MethodGet, url+"headers", "server", nil)
		if err != nil {
			return err
		}
		if resp.Status != http.StatusOK {
			return fmt.Errorf("HTTP/1.1 through the sniffing listener: %d %q", resp.Status, resp.Body)
		}
		seen = framework.EchoedHeaders(t, resp.Body)
		return nil
	})
	if xfcc := seen["x-forwarded-client-cert"]; !strings.Contains(xfcc, "URI=spiffe://cluster.local/ns/default/sa/client") {
		t.Errorf("server app saw x-forwarded-client-cert %q; want the client's SPIFFE ID (mTLS)", xfcc)
	}
	client.WaitStat(t, fmt.Sprintf("cluster.outbound|%d||server.default.svc.cluster.local.ssl.handshake", svcPort), atLeast(1))

	framework.Eventually(t, func() error {
		upstream, _, err := sendH2C(url, "server")
		if err != nil {
			return err
		}
		if upstream != "server-app" {
			return fmt.Errorf("HTTP/2 prior knowledge reached %q", upstream)
		}
		return nil
	})
	server.WaitStat(t, fmt.Sprintf("http.inbound_inbound|%d||.downstream_cx_http2_total", inPort), atLeast(1))
	server.AssertNoRejections(t)
	client.AssertNoRejections(t)
}
