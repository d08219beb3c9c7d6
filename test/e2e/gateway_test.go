package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// Gateway tests run a router Envoy labelled istio=ingressgateway in istio-system, with
// upstreams on 127.0.3.0/24.

const gatewayNode = "router~127.0.0.1~ingressgateway-1.istio-system~istio-system.svc.cluster.local"

func startGateway(t *testing.T, p *framework.Pilot, delta bool) *framework.Envoy {
	t.Helper()
	return framework.StartEnvoy(t, p, framework.EnvoyOptions{
		NodeID:        gatewayNode,
		BootstrapArgs: []string{"--labels", "istio=ingressgateway"},
		Delta:         delta,
	})
}

// seedGateway is the tutorial's Gateway and VirtualService verbatim but for the port number.
const seedGateway = `apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: temple-gateway
  namespace: temple-stack
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: %d
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: temple-ui
  namespace: temple-stack
spec:
  hosts:
  - "*"
  gateways:
  - temple-gateway
  http:
  - match:
    - uri:
        prefix: /
    route:
    - destination:
        host: temple-ui-service
        port:
          number: 80
`

// namespacedServiceEntry is an HTTP ServiceEntry NAME.NS.svc.cluster.local on port 80 whose one
// endpoint is the upstream.
func namespacedServiceEntry(name, ns string, upstream *framework.Upstream) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  hosts:
  - %[1]s.%[2]s.svc.cluster.local
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: %[3]s
    ports:
      http: %[4]d
`, name, ns, upstream.IP, upstream.Port)
}

// TestGatewaySeedRoutesAnyHost: the tutorial's Gateway (in temple-stack) selects the gateway
// proxy (in istio-system) by label; its listener 0.0.0.0_PORT routes any Host and any path to
// temple-ui through http.PORT, and Envoy ACKs everything.
func TestGatewaySeedRoutesAnyHost(t *testing.T) {
	ui := framework.StartUpstream(t, "127.0.3.1", "temple-ui")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "seed.yaml", fmt.Sprintf(seedGateway, port))
	p.WriteConfig(t, "services.yaml", namespacedServiceEntry("temple-ui-service", "temple-stack", ui))
	envoy := startGateway(t, p, false)

	for _, host := range []string{"temple.example.com", "anything", fmt.Sprintf("localhost:%d", port)} {
		eventuallyAnswers(t, port, host, "temple-ui")
	}
	resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/some/deep/path?q=1", port), "x.y", nil)
	if err != nil || resp.Status != http.StatusOK || resp.Body != "temple-ui" {
		t.Errorf("GET /some/deep/path: %v %+v, want 200 from temple-ui", err, resp)
	}

	dump := string(envoy.ConfigDump(t))
	for _, want := range []string{
		fmt.Sprintf(`"name": "0.0.0.0_%d"`, port),
		fmt.Sprintf(`"route_config_name": "http.%d"`, port),
		`"outbound|80||temple-ui-service.temple-stack.svc.cluster.local"`,
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("Envoy's config_dump lacks %s", want)
		}
	}
	framework.Eventually(t, func() error { return allAcked(p.Syncz(t), gatewayNode, false) })
}

// TestGatewayHTTPS: a kubernetes.io/tls Secret in the gateway's namespace terminates TLS for
// an HTTPS SIMPLE server (credentialName) and a MUTUAL one, served over SDS on the ADS stream
// as kubernetes://NAME (and NAME-cacert); httpsRedirect answers 301. Pilot's debug dump shows
// the secret with its private key redacted, and the key appears in no debug output or log. A
// new certificate written to the Secret is served without restarting Envoy.
func TestGatewayHTTPS(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			pki := newTestPKI(t, "bookinfo.example.com")
			productpage := framework.StartUpstream(t, "127.0.3.2", "productpage")
			httpPort := framework.FreePort(t, "127.0.0.1")
			httpsPort := framework.FreePort(t, "127.0.0.1")
			mtlsPort := framework.FreePort(t, "127.0.0.1")
			p := framework.StartPilot(t, framework.PilotOptions{})
			p.WriteConfig(t, "secret.yaml", pki.secretYAML("bookinfo-credential", "istio-system"))
			p.WriteConfig(t, "services.yaml", namespacedServiceEntry("productpage", "bookinfo", productpage))
			p.WriteConfig(t, "gateway.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: bookinfo
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: %d, name: http, protocol: HTTP}
    hosts: [bookinfo.example.com]
    tls:
      httpsRedirect: true
  - port: {number: %d, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls:
      mode: SIMPLE
      credentialName: bookinfo-credential
  - port: {number: %d, name: https-mutual, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls:
      mode: MUTUAL
      credentialName: bookinfo-credential
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
  namespace: bookinfo
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway]
  http:
  - route:
    - destination:
        host: productpage
`, httpPort, httpsPort, mtlsPort))
			envoy := startGateway(t, p, delta)

			t.Run("simple", func(t *testing.T) {
				framework.Eventually(t, func() error {
					return pki.expectHTTPS(httpsPort, nil, "productpage")
				})
			})
			t.Run("mutual", func(t *testing.T) {
				framework.Eventually(t, func() error {
					return pki.expectHTTPS(mtlsPort, &pki.client, "productpage")
				})
				if err := pki.expectHTTPS(mtlsPort, nil, "productpage"); err == nil {
					t.Errorf("MUTUAL server answered a client without a certificate")
				}
			})
			t.Run("redirect", func(t *testing.T) {
				resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/productpage", httpPort), "bookinfo.example.com", nil)
				if err != nil {
					t.Fatal(err)
				}
				if loc := resp.Header.Get("Location"); resp.Status != http.StatusMovedPermanently || loc != "https://bookinfo.example.com/productpage" {
					t.Errorf("got %d Location %q, want 301 to https://bookinfo.example.com/productpage", resp.Status, loc)
				}
			})
			t.Run("sds", func(t *testing.T) {
				var dump struct {
					Configs []struct {
						Type    string `json:"@type"`
						Secrets []struct {
							Name   string `json:"name"`
							Secret struct {
								Name string `json:"name"`
							} `json:"secret"`
						} `json:"dynamic_active_secrets"`
					} `json:"configs"`
				}
				if err := json.Unmarshal(envoy.ConfigDump(t), &dump); err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, c := range dump.Configs {
					for _, s := range c.Secrets {
						names = append(names, s.Name)
					}
				}
				for _, want := range []string{"kubernetes://bookinfo-credential", "kubernetes://bookinfo-credential-cacert"} {
					if !strings.Contains(strings.Join(names, " "), want) {
						t.Errorf("Envoy's SDS secrets %v lack %s", names, want)
					}
				}
				served := string(p.ConfigDump(t, gatewayNode))
				if !strings.Contains(served, `"name": "kubernetes://bookinfo-credential"`) || !strings.Contains(served, `"inline_string": "[redacted]"`) {
					t.Errorf("pilot's config_dump lacks the redacted secret:\n%.3000s", served)
				}
				for what, text := range map[string]string{"pilot's config_dump": served, "pilot's log": p.Log(), "/debug/syncz": string(p.Syncz(t))} {
					if pki.leaksKey(text) {
						t.Errorf("%s contains the private key", what)
					}
				}
				framework.Eventually(t, func() error { return typeAcked(p.Syncz(t), gatewayNode, "sds") })
				framework.Eventually(t, func() error { return allAcked(p.Syncz(t), gatewayNode, delta) })
			})
			t.Run("rotation", func(t *testing.T) {
				// A new certificate in the Secret reaches Envoy over SDS; no restart, no NACK.
				next := newTestPKI(t, "bookinfo.example.com")
				p.WriteConfig(t, "secret.yaml", next.secretYAML("bookinfo-credential", "istio-system"))
				framework.Eventually(t, func() error {
					return next.expectHTTPS(httpsPort, nil, "productpage")
				})
				framework.Eventually(t, func() error {
					return next.expectHTTPS(mtlsPort, &next.client, "productpage")
				})
			})
		})
	}
}

// TestGatewayTCPAndPassthrough: a TCP server forwards by the bound VirtualService's tcp route;
// a TLS PASSTHROUGH server picks the upstream by SNI (read by the tls_inspector) without
// terminating TLS, so the client sees the upstream's own certificate, and a name no route
// claims gets no connection at all.
func TestGatewayTCPAndPassthrough(t *testing.T) {
	plain := framework.StartUpstream(t, "127.0.3.3", "tcp-backend")
	pki := newTestPKI(t, "secure.example.com")
	secure := startTLSUpstream(t, "127.0.3.4", pki, "secure-backend")
	tcpPort := framework.FreePort(t, "127.0.0.1")
	tlsPort := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "edge.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: %[1]d, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: %[2]d, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls:
      mode: PASSTHROUGH
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: backends
  namespace: backends
spec:
  hosts: [tcp-backend.backends.svc.cluster.local]
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  resolution: STATIC
  endpoints:
  - address: %[3]s
    ports: {tcp: %[4]d}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: secure
  namespace: backends
spec:
  hosts: [secure-backend.backends.svc.cluster.local]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: STATIC
  endpoints:
  - address: %[5]s
    ports: {tls: %[6]d}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tcp
  namespace: backends
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  tcp:
  - match:
    - port: %[1]d
    route:
    - destination:
        host: tcp-backend
        port: {number: 9000}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: secure
  namespace: backends
spec:
  hosts: [secure.example.com]
  gateways: [istio-system/edge]
  tls:
  - match:
    - sniHosts: [secure.example.com]
    route:
    - destination:
        host: secure-backend
        port: {number: 443}
`, tcpPort, tlsPort, plain.IP, plain.Port, secure.IP, secure.Port))
	startGateway(t, p, false)

	eventuallyAnswers(t, tcpPort, "anything", "tcp-backend")
	framework.Eventually(t, func() error {
		return pki.expectHTTPS(tlsPort, nil, "secure-backend")
	})
	// No chain matches another name, so Envoy closes the connection before any handshake. The
	// client skips verification so that only a completed handshake (with anyone) can pass.
	dialer := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: framework.RequestTimeout},
		Config:    &tls.Config{ServerName: "other.example.com", InsecureSkipVerify: true}, //nolint:gosec // see above
	}
	if conn, err := dialer.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tlsPort)); err == nil {
		conn.Close()
		t.Errorf("a TLS connection for a name no route claims was forwarded")
	}
	// No HTTP server, so no RDS: every other type must be ACKed.
	for _, typ := range []string{"cds", "eds", "lds"} {
		framework.Eventually(t, func() error { return typeAcked(p.Syncz(t), gatewayNode, typ) })
	}
}

// tlsUpstream is an HTTPS server standing in for a backend that terminates TLS itself.
type tlsUpstream struct {
	IP   string
	Port int
}

// startTLSUpstream serves HTTPS with the PKI's server certificate on ip, answering with name.
func startTLSUpstream(t *testing.T, ip string, pki *testPKI, name string) *tlsUpstream {
	t.Helper()
	cert, err := tls.X509KeyPair(pki.certPEM, pki.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listening on %s: %v", ip, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, name)
	})}
	go func() {
		_ = srv.Serve(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}()
	t.Cleanup(func() { srv.Close() })
	return &tlsUpstream{IP: ip, Port: l.Addr().(*net.TCPAddr).Port}
}

// typeAcked checks /debug/syncz: the proxy ACKed the version of typ it was last sent.
func typeAcked(syncz []byte, node, typ string) error {
	p, err := synczEntry(syncz, node)
	if err != nil {
		return err
	}
	if p == nil {
		return fmt.Errorf("proxy %s not in syncz", node)
	}
	return p.acked(typ)
}

// testPKI is a CA, a server certificate for one host and a client certificate it signs, made
// fresh for each test.
type testPKI struct {
	host                   string
	caPEM, certPEM, keyPEM []byte
	roots                  *x509.CertPool
	client                 tls.Certificate
}

func newTestPKI(t *testing.T, host string) *testPKI {
	t.Helper()
	p := framework.NewPKI(t, host, "client.example.com")
	return &testPKI{host: host, caPEM: p.CAPEM, certPEM: p.ServerCertPEM, keyPEM: p.ServerKeyPEM, roots: p.Roots, client: p.Client}
}

// secretYAML is the kubernetes.io/tls Secret holding the server certificate, its key and the
// CA, base64 in data as kubectl writes it.
func (pki *testPKI) secretYAML(name, ns string) string {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: %s
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
  ca.crt: %s
`, name, ns, b64(pki.certPEM), b64(pki.keyPEM), b64(pki.caPEM))
}

// leaksKey reports whether text holds the private key, as PEM, base64 or its PEM body.
func (pki *testPKI) leaksKey(text string) bool {
	block, _ := pem.Decode(pki.keyPEM)
	body := base64.StdEncoding.EncodeToString(block.Bytes)
	return strings.Contains(text, string(pki.keyPEM)) ||
		strings.Contains(text, base64.StdEncoding.EncodeToString(pki.keyPEM)) ||
		strings.Contains(text, body[:40])
}

// expectHTTPS makes a request over TLS to the gateway on port, verifying the server against
// the CA with the host as SNI, and wants the upstream's answer.
func (pki *testPKI) expectHTTPS(port int, client *tls.Certificate, want string) error {
	cfg := &tls.Config{RootCAs: pki.roots, ServerName: pki.host, MinVersion: tls.VersionTLS12}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	c := &http.Client{
		Timeout:   framework.RequestTimeout,
		Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, Proxy: nil},
	}
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/productpage", port), nil)
	if err != nil {
		return err
	}
	req.Host = pki.host
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != want {
		return fmt.Errorf("https://%s:%d: status %d: %q, want 200 from %s", pki.host, port, resp.StatusCode, body, want)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.PeerCertificates[0].Subject.CommonName != pki.host {
		return fmt.Errorf("https://%s:%d: the gateway did not present the Secret's certificate", pki.host, port)
	}
	return nil
}
