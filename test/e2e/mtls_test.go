package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// Mutual TLS between two sidecars without capture, with certificates pilot issues over SDS:
// app → client Envoy (egress listener, auto-mTLS) → server Envoy (ingress listener, mTLS per
// PeerAuthentication) → server app.
//
// Pilot grants the workload certificate (`default`) only to a proxy connecting from the address
// of the WorkloadEntry its node ID names. Envoy would connect to pilot from 127.0.0.1, so `pilot
// bootstrap` binds each Envoy's upstream connections (pilot's included) to its node ID's
// loopback address (--upstream-bind auto). That keeps the two proxies on distinct addresses, as
// two pods would be.

const (
	mtlsClientIP    = "127.0.7.1"
	mtlsServerIP    = "127.0.7.2"
	mtlsServerAppIP = "127.0.7.12"
	mtlsHost        = "server.default.svc.cluster.local"
)

// mtlsMesh is the client, the server and the addresses the test calls.
type mtlsMesh struct {
	pilot   *framework.Pilot
	client  *framework.Envoy
	server  *framework.Envoy
	app     *framework.Upstream
	place   mtlsPlacement
	svcPort int // the client's egress listener, on place.clientIP
	inPort  int // the server's ingress listener, on place.serverIP
}

// mtlsPlacement says where the mesh runs: the proxies' and the server app's addresses, the
// namespace of both workloads, the server's app label (and service name), and extra pilot and
// Envoy flags.
// An anonymous server's WorkloadEntry names no serviceAccount (so its proxy can never hold a
// certificate) and declares no sidecar (no tlsMode label, so clients do not use mTLS to it).
type mtlsPlacement struct {
	clientIP, serverIP, serverAppIP string
	namespace, serverApp            string
	pilotArgs, envoyArgs            []string
	anonymousServer                 bool
	delta                           bool // both proxies on delta xDS
	// pilotDir and pilotEnv are the pilot's working directory and extra environment (see
	// framework.PilotOptions); xdsVia, if set, gives the address the proxies' bootstraps name
	// for ADS instead of the pilot's own (a recorder in front of it, say).
	pilotDir string
	pilotEnv []string
	xdsVia   func(t *testing.T, pilot *framework.Pilot) string
}

// defaultMTLSPlacement is the mesh of the TestMTLS tests: namespace default, app server.
var defaultMTLSPlacement = mtlsPlacement{
	clientIP: mtlsClientIP, serverIP: mtlsServerIP, serverAppIP: mtlsServerAppIP,
	namespace: "default", serverApp: "server",
}

// host is the server's service host.
func (p mtlsPlacement) host() string {
	return p.serverApp + "." + p.namespace + ".svc.cluster.local"
}

// startMTLSMesh writes the mesh, with the service port's protocol, and the PeerAuthentication
// given, then starts both proxies.
func startMTLSMesh(t *testing.T, protocol, peerAuthentication string) *mtlsMesh {
	t.Helper()
	return startMTLSMeshAt(t, defaultMTLSPlacement, protocol, peerAuthentication)
}

// startMTLSMeshAt is startMTLSMesh placed as p says.
func startMTLSMeshAt(t *testing.T, p mtlsPlacement, protocol, peerAuthentication string) *mtlsMesh {
	t.Helper()
	m := &mtlsMesh{
		app:     framework.StartUpstream(t, p.serverAppIP, p.serverApp+"-app"),
		place:   p,
		svcPort: framework.FreePort(t, p.clientIP),
		inPort:  framework.FreePort(t, p.serverIP),
	}
	m.pilot = framework.StartPilot(t, framework.PilotOptions{Args: p.pilotArgs, Dir: p.pilotDir, Env: p.pilotEnv})
	var viaArgs []string
	if p.xdsVia != nil {
		viaArgs = []string{"--xds-address", p.xdsVia(t, m.pilot)}
	}
	serverAccount, serverTLSMode := "serviceAccount: "+p.serverApp, "security.istio.io/tlsMode: istio"
	if p.anonymousServer {
		serverAccount, serverTLSMode = "", ""
	}
	m.pilot.WriteConfig(t, "mesh.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client-1
  namespace: %[8]s
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
  namespace: %[8]s
spec:
  address: %[2]s
  %[10]s
  labels:
    app: %[9]s
    %[11]s
  ports:
    http: %[3]d
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: %[9]s
  namespace: %[8]s
spec:
  hosts:
  - %[4]s
  location: MESH_INTERNAL
  ports:
  - number: %[5]d
    name: http
    protocol: %[7]s
  resolution: STATIC
  workloadSelector:
    labels:
      app: %[9]s
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: %[9]s
  namespace: %[8]s
spec:
  workloadSelector:
    labels:
      app: %[9]s
  ingress:
  - port:
      number: %[3]d
      protocol: HTTP
      name: http
    bind: %[2]s
    defaultEndpoint: %[6]s
  egress:
  - hosts:
    - "istio-system/*"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: client
  namespace: %[8]s
spec:
  workloadSelector:
    labels:
      app: client
  egress:
  - port:
      number: %[5]d
      protocol: HTTP
      name: http
    bind: %[1]s
    hosts:
    - "./*"
`, p.clientIP, p.serverIP, m.inPort, p.host(), m.svcPort, m.app.Address(), protocol, p.namespace, p.serverApp,
		serverAccount, serverTLSMode))
	if peerAuthentication != "" {
		m.pilot.WriteConfig(t, "peerauthentication.yaml", peerAuthentication)
	}
	m.server = framework.StartEnvoy(t, m.pilot, framework.EnvoyOptions{
		NodeID:        fmt.Sprintf("sidecar~%s~server-1.%s~%s.svc.cluster.local", p.serverIP, p.namespace, p.namespace),
		BootstrapArgs: append([]string{"--labels", "app=" + p.serverApp}, viaArgs...),
		EnvoyArgs:     p.envoyArgs,
		Delta:         p.delta,
	})
	m.client = framework.StartEnvoy(t, m.pilot, framework.EnvoyOptions{
		NodeID:        fmt.Sprintf("sidecar~%s~client-1.%s~%s.svc.cluster.local", p.clientIP, p.namespace, p.namespace),
		BootstrapArgs: append([]string{"--labels", "app=client"}, viaArgs...),
		EnvoyArgs:     p.envoyArgs,
		Delta:         p.delta,
	})
	return m
}

func peerAuthentication(mode string) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: server
  namespace: default
spec:
  selector:
    matchLabels:
      app: server
  mtls:
    mode: %s
`, mode)
}

// throughMesh calls the server app's /headers through the client's egress listener, sending
// a forged x-forwarded-client-cert, and returns the headers the server app saw.
func (m *mtlsMesh) throughMesh(t *testing.T) map[string]string {
	t.Helper()
	var seen map[string]string
	framework.Eventually(t, func() error {
		resp, err := framework.Send("GET", fmt.Sprintf("http://%s:%d/headers", m.place.clientIP, m.svcPort), m.place.host(),
			map[string]string{"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/forged"})
		if err != nil {
			return err
		}
		if resp.Status != 200 {
			return fmt.Errorf("through the mesh: %d %q", resp.Status, resp.Body)
		}
		seen = framework.EchoedHeaders(t, resp.Body)
		return nil
	})
	return seen
}

// direct calls the server's ingress listener in plaintext, as a client without a sidecar.
func (m *mtlsMesh) direct(path string, headers map[string]string) (*framework.Response, error) {
	return framework.Send("GET", fmt.Sprintf("http://%s:%d%s", m.place.serverIP, m.inPort, path), m.place.host(), headers)
}

// handshakes sums the server's TLS handshakes on its listeners.
func (m *mtlsMesh) handshakes(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	for name, v := range m.server.Stats(t) {
		if strings.HasPrefix(name, "listener.") && strings.HasSuffix(name, ".ssl.handshake") {
			n += v
		}
	}
	return n
}

// wantClientIdentity checks that the server app was told the client's SPIFFE ID, and only by
// the server's sidecar (the mTLS chain appends the peer's URI; the client's own sidecar strips
// what the app sent).
func wantClientIdentity(t *testing.T, seen map[string]string) {
	t.Helper()
	xfcc := seen["x-forwarded-client-cert"]
	if !strings.Contains(xfcc, "URI=spiffe://cluster.local/ns/default/sa/client") {
		t.Errorf("server app saw x-forwarded-client-cert %q; want the client's SPIFFE ID", xfcc)
	}
	if strings.Contains(xfcc, "sa/forged") {
		t.Errorf("server app saw the forged identity: %q", xfcc)
	}
}

// TestMTLSStrict: the mesh path works over mTLS, the app learns the caller's identity, the
// server's handshake count grows, and a plaintext client talking straight to the server's
// ingress listener is refused.
func TestMTLSStrict(t *testing.T) {
	m := startMTLSMesh(t, "HTTP", peerAuthentication("STRICT"))
	before := m.handshakes(t)
	wantClientIdentity(t, m.throughMesh(t))
	if after := m.handshakes(t); after <= before {
		t.Errorf("server TLS handshakes %d → %d; want growth", before, after)
	}
	m.client.WaitStat(t, fmt.Sprintf("cluster.outbound|%d||%s.ssl.handshake", m.svcPort, mtlsHost), atLeast(1))

	resp, err := m.direct("/", nil)
	if err == nil && resp.Status == 200 {
		t.Errorf("STRICT: a plaintext client reached the server app: %d %q", resp.Status, resp.Body)
	}
}

// TestMTLSPermissive: the same mesh path still uses mTLS, and a plaintext client is accepted
// too, without any client identity (a forged x-forwarded-client-cert is removed). Switching
// the policy to STRICT then refuses it, without restarting anything.
func TestMTLSPermissive(t *testing.T) {
	m := startMTLSMesh(t, "HTTP", peerAuthentication("PERMISSIVE"))
	wantClientIdentity(t, m.throughMesh(t))
	if m.handshakes(t) == 0 {
		t.Errorf("PERMISSIVE: the mesh path did not use TLS")
	}

	var seen map[string]string
	framework.Eventually(t, func() error {
		resp, err := m.direct("/headers", map[string]string{"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/forged"})
		if err != nil {
			return err
		}
		if resp.Status != 200 {
			return fmt.Errorf("plaintext: %d %q", resp.Status, resp.Body)
		}
		seen = framework.EchoedHeaders(t, resp.Body)
		return nil
	})
	if xfcc, ok := seen["x-forwarded-client-cert"]; ok {
		t.Errorf("PERMISSIVE plaintext: server app saw x-forwarded-client-cert %q; want none", xfcc)
	}

	m.pilot.WriteConfig(t, "peerauthentication.yaml", peerAuthentication("STRICT"))
	framework.Eventually(t, func() error {
		if resp, err := m.direct("/", nil); err == nil && resp.Status == 200 {
			return fmt.Errorf("after STRICT, plaintext still answered %d", resp.Status)
		}
		return nil
	})
	wantClientIdentity(t, m.throughMesh(t))
}

// TestMTLSHTTP2: an HTTP/2 service over mesh mTLS. The client offers h2 by ALPN and the server
// picks it, so its connection manager reads HTTP/2 rather than HTTP/1.
func TestMTLSHTTP2(t *testing.T) {
	m := startMTLSMesh(t, "HTTP2", peerAuthentication("STRICT"))
	wantClientIdentity(t, m.throughMesh(t))
	m.server.WaitStat(t, "http.inbound_inbound|"+fmt.Sprint(m.inPort)+"||.downstream_cx_http2_total", atLeast(1))
}

// TestMTLSAuthorizationPrincipals: on the mTLS chain the peer's SPIFFE ID is what
// AuthorizationPolicy principals match, so under PERMISSIVE an ALLOW for the client's identity
// lets the mesh path through and denies the plaintext caller, which has no principal.
func TestMTLSAuthorizationPrincipals(t *testing.T) {
	m := startMTLSMesh(t, "HTTP", peerAuthentication("PERMISSIVE")+`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: server
  namespace: default
spec:
  selector:
    matchLabels:
      app: server
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/client"]
`)
	wantClientIdentity(t, m.throughMesh(t))
	framework.Eventually(t, func() error {
		resp, err := m.direct("/", nil)
		if err != nil {
			return err
		}
		if resp.Status != 403 {
			return fmt.Errorf("plaintext caller answered %d %q; want 403", resp.Status, resp.Body)
		}
		return nil
	})
}

// TestMTLSDisable: a server whose PeerAuthentication is DISABLE listens in plaintext, and
// auto-mTLS follows: the client's cluster sends plaintext, so the mesh path still works, with
// no TLS handshake and no identity for the app.
func TestMTLSDisable(t *testing.T) {
	m := startMTLSMesh(t, "HTTP", peerAuthentication("DISABLE"))
	seen := m.throughMesh(t)
	if xfcc, ok := seen["x-forwarded-client-cert"]; ok {
		t.Errorf("DISABLE: server app saw x-forwarded-client-cert %q; want none", xfcc)
	}
	if n := m.handshakes(t); n != 0 {
		t.Errorf("DISABLE: server counted %d TLS handshakes; want 0", n)
	}
	if resp, err := m.direct("/", nil); err != nil || resp.Status != 200 {
		t.Errorf("DISABLE: plaintext client got %v, %v; want 200", resp, err)
	}
}

// TestMTLSDefaultPermissive: with no PeerAuthentication at any level, istiod's default. Both
// proxies' WorkloadEntries name a service account, so both hold certificates: the client's
// auto-mTLS sends mTLS to the server (its endpoint declares a sidecar), the app learns the
// caller's identity, and both sides count TLS handshakes; the server's workload counts as
// PERMISSIVE, so a plaintext client is accepted too, without any identity.
func TestMTLSDefaultPermissive(t *testing.T) {
	m := startMTLSMesh(t, "HTTP", "")
	before := m.handshakes(t)
	wantClientIdentity(t, m.throughMesh(t))
	if after := m.handshakes(t); after <= before {
		t.Errorf("server TLS handshakes %d → %d; want growth", before, after)
	}
	m.client.WaitStat(t, fmt.Sprintf("cluster.outbound|%d||%s.ssl.handshake", m.svcPort, mtlsHost), atLeast(1))

	var seen map[string]string
	framework.Eventually(t, func() error {
		resp, err := m.direct("/headers", map[string]string{"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/forged"})
		if err != nil {
			return err
		}
		if resp.Status != 200 {
			return fmt.Errorf("plaintext: %d %q", resp.Status, resp.Body)
		}
		seen = framework.EchoedHeaders(t, resp.Body)
		return nil
	})
	if xfcc, ok := seen["x-forwarded-client-cert"]; ok {
		t.Errorf("plaintext: server app saw x-forwarded-client-cert %q; want none", xfcc)
	}
	m.server.AssertNoRejections(t)
	m.client.AssertNoRejections(t)
}

// TestMTLSDefaultWithoutIdentity: with no PeerAuthentication, a server whose WorkloadEntry
// names no service account can never hold a certificate, so pilot gives its ingress listener
// the plaintext chain alone (no TLS chain waiting for a secret that never comes) and says so in
// its log. The mesh path is plaintext end to end: the server declares no sidecar, so the
// client's auto-mTLS sends plaintext.
func TestMTLSDefaultWithoutIdentity(t *testing.T) {
	p := defaultMTLSPlacement
	p.anonymousServer = true
	m := startMTLSMeshAt(t, p, "HTTP", "")
	seen := m.throughMesh(t)
	if xfcc, ok := seen["x-forwarded-client-cert"]; ok {
		t.Errorf("server app saw x-forwarded-client-cert %q; want none", xfcc)
	}
	if n := m.handshakes(t); n != 0 {
		t.Errorf("server counted %d TLS handshakes; want 0", n)
	}
	if resp, err := m.direct("/", nil); err != nil || resp.Status != 200 {
		t.Errorf("plaintext client got %v, %v; want 200", resp, err)
	}
	// The listener is active with one chain and no TLS: Envoy has nothing to wait for.
	listener := fmt.Sprintf("%s_%d", p.serverIP, m.inPort)
	if _, err := httpFilterNames(m.server.ConfigDump(t), listener); err != nil {
		t.Errorf("listener %s: %v", listener, err)
	}
	status, listeners := m.server.Get(t, "/config_dump?resource=dynamic_listeners")
	if status != 200 {
		t.Fatalf("/config_dump?resource=dynamic_listeners: %d", status)
	}
	if strings.Contains(string(listeners), "tls_inspector") || strings.Contains(string(listeners), "DownstreamTlsContext") {
		t.Errorf("the server's listeners hold a TLS chain or tls_inspector; want plaintext only:\n%s", listeners)
	}
	serverNode := fmt.Sprintf("sidecar~%s~server-1.default~default.svc.cluster.local", p.serverIP)
	framework.Eventually(t, func() error {
		for _, line := range strings.Split(m.pilot.Log(), "\n") {
			if strings.Contains(line, "proxy can never hold a workload certificate") && strings.Contains(line, serverNode) &&
				strings.Contains(line, "WorkloadEntry default/server-1 names no serviceAccount") {
				return nil
			}
		}
		return fmt.Errorf("pilot's log has no warning about %s", serverNode)
	})
	m.server.AssertNoRejections(t)
}
