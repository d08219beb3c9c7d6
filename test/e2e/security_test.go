package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// Pilot as the mesh's CA over time and across restarts, the tutorial's AuthorizationPolicy on
// an mTLS mesh, and portLevelMtls. The meshes are mtls_test.go's (startMTLSMeshAt), placed on
// 127.0.8.0/24.

// securityPlacement is the mtls_test.go mesh in namespace default on 127.0.8.base+0/1/2, with
// extra pilot flags.
func securityPlacement(base int, pilotArgs ...string) mtlsPlacement {
	return mtlsPlacement{
		clientIP:    fmt.Sprintf("127.0.8.%d", base),
		serverIP:    fmt.Sprintf("127.0.8.%d", base+1),
		serverAppIP: fmt.Sprintf("127.0.8.%d", base+2),
		namespace:   "default", serverApp: "server",
		pilotArgs: pilotArgs,
	}
}

// securitySTRICT is a STRICT PeerAuthentication for the placement's server workload.
func securitySTRICT(p mtlsPlacement) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  selector:
    matchLabels:
      app: %[2]s
  mtls:
    mode: STRICT
`, p.namespace, p.serverApp)
}

// meshGet makes one request through the client's egress listener.
func (m *mtlsMesh) meshGet(method string) (*framework.Response, error) {
	return framework.Send(method, fmt.Sprintf("http://%s:%d/", m.place.clientIP, m.svcPort), m.place.host(), nil)
}

// envoyCerts is what Envoy's admin /certs reports: per TLS context, the CA and the chain.
type envoyCerts struct {
	Certificates []struct {
		CACert    []envoyCertDetail `json:"ca_cert"`
		CertChain []envoyCertDetail `json:"cert_chain"`
	} `json:"certificates"`
}

type envoyCertDetail struct {
	SerialNumber    string `json:"serial_number"`
	ExpirationTime  string `json:"expiration_time"`
	SubjectAltNames []struct {
		URI string `json:"uri"`
	} `json:"subject_alt_names"`
}

// certSerials returns the sorted, distinct serial numbers of Envoy's workload certificates
// (chains) and of the CAs it trusts, from /certs.
func certSerials(e *framework.Envoy) (chains, cas []string, err error) {
	status, body, err := adminGet(e, "/certs")
	if err != nil {
		return nil, nil, err
	}
	if status != http.StatusOK {
		return nil, nil, fmt.Errorf("/certs: %d %s", status, body)
	}
	var certs envoyCerts
	if err := json.Unmarshal(body, &certs); err != nil {
		return nil, nil, fmt.Errorf("/certs: %w", err)
	}
	for _, c := range certs.Certificates {
		for _, d := range c.CertChain {
			chains = append(chains, d.SerialNumber)
		}
		for _, d := range c.CACert {
			cas = append(cas, d.SerialNumber)
		}
	}
	slices.Sort(chains)
	slices.Sort(cas)
	return slices.Compact(chains), slices.Compact(cas), nil
}

// adminGet is Envoy.Get without failing the test, for use inside Eventually and loops.
func adminGet(e *framework.Envoy, path string) (int, []byte, error) {
	resp, err := framework.Send(http.MethodGet, "http://"+e.AdminAddress+path, "", nil)
	if err != nil {
		return 0, nil, err
	}
	return resp.Status, []byte(resp.Body), nil
}

// waitWorkloadCert waits until Envoy holds a workload certificate and returns its serials.
func waitWorkloadCert(t *testing.T, e *framework.Envoy) (chains, cas []string) {
	t.Helper()
	framework.Eventually(t, func() error {
		var err error
		chains, cas, err = certSerials(e)
		if err != nil {
			return err
		}
		if len(chains) == 0 || len(cas) == 0 {
			return fmt.Errorf("Envoy %s /certs: chains %v, CAs %v; want both", e.NodeID, chains, cas)
		}
		return nil
	})
	return chains, cas
}

// TestSecurityRotation: with a two-minute workload certificate TTL, pilot re-issues at
// half-life (60s) and pushes the new certificate over SDS; both Envoys switch to it before
// expiry while a steady stream of mesh requests, each on a new mTLS connection, never fails.
func TestSecurityRotation(t *testing.T) {
	start := time.Now()
	m := startMTLSMeshAt(t, securityPlacement(1, "--workload-cert-ttl", "2m"), "HTTP", securitySTRICT(securityPlacement(1)))
	wantClientIdentity(t, m.throughMesh(t))
	serverFirst, _ := waitWorkloadCert(t, m.server)
	clientFirst, _ := waitWorkloadCert(t, m.client)
	// Both certificates were issued before now, so each is due for renewal within 60s from here.
	held := time.Now()
	t.Logf("first certificates held %v after the start: server %v, client %v", held.Sub(start).Round(time.Millisecond), serverFirst, clientFirst)

	var sent, failed int
	var failures []string
	var serverRotated, clientRotated time.Duration
	loopEnd := held.Add(80 * time.Second)
	for time.Now().Before(loopEnd) {
		sent++
		resp, err := m.meshGet(http.MethodGet)
		switch {
		case err != nil:
			failed++
			failures = append(failures, fmt.Sprintf("%v: %v", time.Since(held).Round(time.Millisecond), err))
		case resp.Status != http.StatusOK || resp.Body != m.app.Name:
			failed++
			failures = append(failures, fmt.Sprintf("%v: %d %q", time.Since(held).Round(time.Millisecond), resp.Status, resp.Body))
		}
		if serverRotated == 0 {
			if chains, _, err := certSerials(m.server); err == nil && len(chains) > 0 && !slices.Equal(chains, serverFirst) {
				serverRotated = time.Since(held)
				t.Logf("server certificate %v → %v %v after the first was held", serverFirst, chains, serverRotated.Round(time.Millisecond))
			}
		}
		if clientRotated == 0 {
			if chains, _, err := certSerials(m.client); err == nil && len(chains) > 0 && !slices.Equal(chains, clientFirst) {
				clientRotated = time.Since(held)
				t.Logf("client certificate %v → %v %v after the first was held", clientFirst, chains, clientRotated.Round(time.Millisecond))
			}
		}
		// Keep going a little (about 5s of requests) on the new certificates, then stop.
		if serverRotated > 0 && clientRotated > 0 && time.Since(held) > max(serverRotated, clientRotated)+5*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d requests over %v, %d failed", sent, time.Since(held).Round(time.Millisecond), failed)
	if failed > 0 {
		t.Errorf("%d of %d requests failed across the rotation; first: %v", failed, sent, failures[:min(len(failures), 5)])
	}
	for _, r := range []struct {
		who string
		at  time.Duration
	}{{"server", serverRotated}, {"client", clientRotated}} {
		switch {
		case r.at == 0:
			t.Errorf("the %s Envoy still held its first certificate after %v", r.who, time.Since(held).Round(time.Second))
		case r.at > 70*time.Second:
			t.Errorf("the %s Envoy got its new certificate %v after holding the first; want within 70s (half-life 60s)", r.who, r.at.Round(time.Second))
		}
	}
	for _, e := range []*framework.Envoy{m.server, m.client} {
		e.WaitStat(t, "sds.default.update_success", atLeast(2))
	}
	wantClientIdentity(t, m.throughMesh(t))
}

// caRoot runs `pilot ca root --ca-dir dir`.
func caRoot(t *testing.T, dir string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), framework.PilotBinary(t), "ca", "root", "--ca-dir", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pilot ca root --ca-dir %s: %v\n%s", dir, err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "BEGIN CERTIFICATE") {
		t.Fatalf("pilot ca root --ca-dir %s printed no certificate: %q", dir, stdout.String())
	}
	return stdout.String()
}

// TestSecurityRestartKeepsRoot: a pilot restarted on the same --ca-dir keeps its root. While it
// is down, the Envoys keep serving mTLS on the certificates they hold; once it is back they
// reconnect, get certificates from the same root, and mTLS keeps working.
func TestSecurityRestartKeepsRoot(t *testing.T) {
	caDir := t.TempDir()
	p := securityPlacement(11, "--ca-dir", caDir)
	m := startMTLSMeshAt(t, p, "HTTP", securitySTRICT(p))
	wantClientIdentity(t, m.throughMesh(t))
	rootBefore := caRoot(t, caDir)
	fileBefore, err := os.ReadFile(filepath.Join(caDir, "root-cert.pem"))
	if err != nil {
		t.Fatalf("the CA directory has no root-cert.pem: %v", err)
	}
	_, casBefore := waitWorkloadCert(t, m.server)

	m.pilot.Stop(t)
	for _, e := range []*framework.Envoy{m.server, m.client} {
		e.WaitStat(t, "control_plane.connected_state", func(v uint64) bool { return v == 0 })
	}
	// No control plane: new mTLS connections still use the certificates the Envoys hold.
	for range 3 {
		if resp, err := m.meshGet(http.MethodGet); err != nil || resp.Status != http.StatusOK {
			t.Errorf("with pilot stopped, the mesh path answered %v, %v; want 200", resp, err)
		}
	}

	sdsBefore := m.server.Stat(t, "sds.default.update_success")
	m.pilot.Restart(t)
	if root := caRoot(t, caDir); root != rootBefore {
		t.Errorf("the root changed across the restart:\nbefore:\n%s\nafter:\n%s", rootBefore, root)
	}
	if file, err := os.ReadFile(filepath.Join(caDir, "root-cert.pem")); err != nil || !bytes.Equal(file, fileBefore) {
		t.Errorf("root-cert.pem changed across the restart (err %v)", err)
	}
	for _, e := range []*framework.Envoy{m.server, m.client} {
		e.WaitStat(t, "control_plane.connected_state", func(v uint64) bool { return v == 1 })
	}
	// Certificates live in pilot's memory only: the restarted pilot issues new ones, from the
	// same root, which the server Envoy takes without its trust bundle changing.
	m.server.WaitStat(t, "sds.default.update_success", atLeast(sdsBefore+1))
	_, casAfter := waitWorkloadCert(t, m.server)
	if !slices.Equal(casAfter, casBefore) {
		t.Errorf("the server Envoy's trusted CA serials %v → %v across the restart; want unchanged", casBefore, casAfter)
	}
	wantClientIdentity(t, m.throughMesh(t))
}

// TestSecuritySeedAuthorizationPolicy: the tutorial's AuthorizationPolicy, verbatim, on an mTLS
// (STRICT) server app=temple-api in temple-stack: a client of temple-stack, identified by its
// certificate, may GET and POST but not DELETE; a client of another namespace may not even GET.
func TestSecuritySeedAuthorizationPolicy(t *testing.T) {
	p := mtlsPlacement{
		clientIP: "127.0.8.21", serverIP: "127.0.8.22", serverAppIP: "127.0.8.23",
		namespace: "temple-stack", serverApp: "temple-api",
	}
	m := startMTLSMeshAt(t, p, "HTTP", securitySTRICT(p)+"---\n"+seedAuthorizationPolicy)
	seen := m.throughMesh(t)
	if xfcc := seen["x-forwarded-client-cert"]; !strings.Contains(xfcc, "URI=spiffe://cluster.local/ns/temple-stack/sa/client") {
		t.Errorf("server app saw x-forwarded-client-cert %q; want the temple-stack client's SPIFFE ID", xfcc)
	}
	expect := func(what string, send func(string) (*framework.Response, error), method string, want int) {
		t.Helper()
		resp, err := send(method)
		switch {
		case err != nil:
			t.Errorf("%s %s: %v", what, method, err)
		case resp.Status != want || (want == http.StatusOK && resp.Body != m.app.Name):
			t.Errorf("%s %s: %d %q; want %d", what, method, resp.Status, resp.Body, want)
		}
	}
	expect("temple-stack client", m.meshGet, http.MethodGet, http.StatusOK)
	expect("temple-stack client", m.meshGet, http.MethodPost, http.StatusOK)
	before := m.app.Requests()
	expect("temple-stack client", m.meshGet, http.MethodDelete, http.StatusForbidden)
	if got := m.app.Requests(); got != before {
		t.Errorf("the application received %d denied requests", got-before)
	}

	// A client in namespace other, with its own identity, calling the same service.
	const otherIP = "127.0.8.24"
	m.pilot.WriteConfig(t, "other.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client-1
  namespace: other
spec:
  address: %[1]s
  serviceAccount: client
  labels:
    app: client
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: client
  namespace: other
spec:
  workloadSelector:
    labels:
      app: client
  egress:
  - port:
      number: %[2]d
      protocol: HTTP
      name: http
    bind: %[1]s
    hosts:
    - "temple-stack/*"
`, otherIP, m.svcPort))
	framework.StartEnvoy(t, m.pilot, framework.EnvoyOptions{
		NodeID:        "sidecar~" + otherIP + "~client-1.other~other.svc.cluster.local",
		BootstrapArgs: []string{"--labels", "app=client"},
	})
	before = m.app.Requests()
	handshakes := m.handshakes(t)
	framework.Eventually(t, func() error {
		resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://%s:%d/", otherIP, m.svcPort), p.host(), nil)
		if err != nil {
			return err
		}
		if resp.Status != http.StatusForbidden || resp.Body != "RBAC: access denied" {
			return fmt.Errorf("GET from namespace other: %d %q; want 403 RBAC: access denied", resp.Status, resp.Body)
		}
		return nil
	})
	// The 403 came from the server's RBAC over mTLS, not from a refused plaintext connection.
	if after := m.handshakes(t); after <= handshakes {
		t.Errorf("server TLS handshakes %d → %d for the other namespace's client; want growth", handshakes, after)
	}
	if got := m.app.Requests(); got != before {
		t.Errorf("the application received %d requests from namespace other", got-before)
	}
	m.server.WaitStat(t, fmt.Sprintf("http.inbound_inbound|%d||.rbac.denied", m.inPort), atLeast(2))
}

// TestSecurityPortLevelMtls: a workload PeerAuthentication STRICT overall with portLevelMtls
// DISABLE for one application port (the defaultEndpoint's port, as istiod keys it by target
// port): a plaintext client reaches that port's ingress listener and is refused on the other.
func TestSecurityPortLevelMtls(t *testing.T) {
	const serverIP = "127.0.8.31"
	strictApp := framework.StartUpstream(t, "127.0.8.32", "strict-app")
	plainApp := framework.StartUpstream(t, "127.0.8.33", "plain-app")
	strictPort, plainPort := framework.FreePort(t, serverIP), framework.FreePort(t, serverIP)
	pilot := framework.StartPilot(t, framework.PilotOptions{})
	pilot.WriteConfig(t, "mesh.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: server-1
  namespace: default
spec:
  address: %[1]s
  serviceAccount: server
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
      number: %[2]d
      protocol: HTTP
      name: http-strict
    bind: %[1]s
    defaultEndpoint: %[3]s
  - port:
      number: %[4]d
      protocol: HTTP
      name: http-plain
    bind: %[1]s
    defaultEndpoint: %[5]s
  egress:
  - hosts:
    - "istio-system/*"
---
`, serverIP, strictPort, strictApp.Address(), plainPort, plainApp.Address())+peerAuthentication("STRICT")+
		fmt.Sprintf("  portLevelMtls:\n    %d:\n      mode: DISABLE\n", plainApp.Port))
	server := framework.StartEnvoy(t, pilot, framework.EnvoyOptions{
		NodeID:        "sidecar~" + serverIP + "~server-1.default~default.svc.cluster.local",
		BootstrapArgs: []string{"--labels", "app=server"},
	})
	waitWorkloadCert(t, server)
	// Both listeners are active, so the refusal below is the STRICT chain's, not a listener
	// still warming.
	for _, port := range []int{strictPort, plainPort} {
		listener := fmt.Sprintf("%s_%d", serverIP, port)
		framework.Eventually(t, func() error {
			_, err := httpFilterNames(server.ConfigDump(t), listener)
			return err
		})
	}

	framework.Eventually(t, func() error {
		resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://%s:%d/", serverIP, plainPort), "", nil)
		if err != nil {
			return err
		}
		if resp.Status != http.StatusOK || resp.Body != plainApp.Name {
			return fmt.Errorf("plaintext to the DISABLE port: %d %q", resp.Status, resp.Body)
		}
		return nil
	})
	if resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://%s:%d/", serverIP, strictPort), "", nil); err == nil {
		t.Errorf("plaintext to the STRICT port answered %d %q; want the connection refused", resp.Status, resp.Body)
	}
	if n := strictApp.Requests(); n != 0 {
		t.Errorf("the STRICT port's application received %d plaintext requests", n)
	}
}
