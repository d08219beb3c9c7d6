package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/test/framework"
)

// A gateway with ISTIO_MUTUAL servers: the gateway proxy presents its own workload certificate,
// which pilot grants because its node ID names a WorkloadEntry with a service account and it
// connects from that entry's address, and it admits only clients whose certificate the mesh's
// CA signed. The test holds the CA (it creates pilot's --ca-dir) to issue client certificates,
// as a sidecar would hold them.

const (
	meshGatewayIP       = "127.0.3.10"
	meshGatewayAppIP    = "127.0.3.11"
	meshGatewayNode     = "router~" + meshGatewayIP + "~mesh-gateway-1.istio-system~istio-system.svc.cluster.local"
	meshGatewayID       = "spiffe://cluster.local/ns/istio-system/sa/mesh-gateway"
	meshGatewayClientID = "spiffe://cluster.local/ns/default/sa/allowed"
)

// TestGatewayIstioMutual: on an ISTIO_MUTUAL server a client with a mesh certificate gets
// through to the upstream (which is told the client's SPIFFE ID), and sees the gateway's own
// SPIFFE certificate; a client without a certificate, or with one from another CA, is refused
// in the handshake. A server listing subjectAltNames admits only that identity. Envoy counts
// the refusals, ACKs everything, and pilot lists a warning for a Gateway whose credentialName
// Secret does not exist (and leaves that server out) at /debug/config_errors.
func TestGatewayIstioMutual(t *testing.T) {
	app := framework.StartUpstream(t, meshGatewayAppIP, "mesh-app")
	anyPort := framework.FreePort(t, "127.0.0.1")
	sanPort := framework.FreePort(t, "127.0.0.1")
	missingPort := framework.FreePort(t, "127.0.0.1")
	caDir := filepath.Join(t.TempDir(), "ca")
	authority, err := ca.LoadOrCreate(caDir, ca.DefaultTrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	p := framework.StartPilot(t, framework.PilotOptions{Args: []string{"--ca-dir", caDir}})
	p.WriteConfig(t, "mesh.yaml", namespacedServiceEntry("mesh-app", "default", app)+fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: mesh-gateway-1
  namespace: istio-system
spec:
  address: %[1]s
  serviceAccount: mesh-gateway
  labels:
    istio: mesh-gateway
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mesh-gateway
  namespace: istio-system
spec:
  selector:
    istio: mesh-gateway
  servers:
  - port: {number: %[2]d, name: https-any, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: %[3]d, name: https-allowed, protocol: HTTPS}
    hosts: ["*"]
    tls:
      mode: ISTIO_MUTUAL
      subjectAltNames: [%[5]s]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: no-secret
  namespace: istio-system
spec:
  selector:
    istio: mesh-gateway
  servers:
  - port: {number: %[4]d, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: missing-credential}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: mesh-app
  namespace: istio-system
spec:
  hosts: ["*"]
  gateways: [mesh-gateway, no-secret]
  http:
  - route:
    - destination: {host: mesh-app.default.svc.cluster.local}
`, meshGatewayIP, anyPort, sanPort, missingPort, meshGatewayClientID))
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{
		NodeID:        meshGatewayNode,
		BootstrapArgs: []string{"--labels", "istio=mesh-gateway"},
	})

	issue := func(sa string) *tls.Certificate {
		w, err := authority.Issue("default", sa, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(w.ChainPEM, w.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &pair
	}
	allowed, other := issue("allowed"), issue("other")
	foreign := framework.NewPKI(t, "gateway.example.com", "client.example.com").Client

	t.Run("mesh client", func(t *testing.T) {
		var headers map[string]string
		framework.Eventually(t, func() error {
			var err error
			headers, err = meshGatewayGet(authority.Roots(), anyPort, allowed)
			return err
		})
		if xfcc := headers["x-forwarded-client-cert"]; !strings.Contains(xfcc, "URI="+meshGatewayClientID) {
			t.Errorf("the upstream saw x-forwarded-client-cert %q, want the client's SPIFFE ID", xfcc)
		}
		if _, err := meshGatewayGet(authority.Roots(), anyPort, other); err != nil {
			t.Errorf("another mesh identity on the server without subjectAltNames: %v", err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		if _, err := meshGatewayGet(authority.Roots(), anyPort, nil); err == nil {
			t.Error("the ISTIO_MUTUAL server answered a client without a certificate")
		}
		envoy.WaitStat(t, fmt.Sprintf("listener.0.0.0.0_%d.ssl.fail_verify_no_cert", anyPort), atLeast(1))
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		if _, err := meshGatewayGet(authority.Roots(), anyPort, &foreign); err == nil {
			t.Error("the ISTIO_MUTUAL server answered a client whose certificate the mesh CA did not sign")
		}
		envoy.WaitStat(t, fmt.Sprintf("listener.0.0.0.0_%d.ssl.fail_verify_error", anyPort), atLeast(1))
	})
	t.Run("subjectAltNames", func(t *testing.T) {
		framework.Eventually(t, func() error {
			_, err := meshGatewayGet(authority.Roots(), sanPort, allowed)
			return err
		})
		if _, err := meshGatewayGet(authority.Roots(), sanPort, other); err == nil {
			t.Errorf("the server limited to %s answered spiffe://cluster.local/ns/default/sa/other", meshGatewayClientID)
		}
		envoy.WaitStat(t, fmt.Sprintf("listener.0.0.0.0_%d.ssl.fail_verify_san", sanPort), atLeast(1))
	})
	t.Run("missing credential", func(t *testing.T) {
		framework.Eventually(t, func() error {
			return listedWarning(t, p, "IST0101", "Gateway", "istio-system", "no-secret", "spec.servers[0].tls.credentialName", "missing-credential")
		})
		if n := p.Metric(t, "skiff_config_warnings", nil); n < 1 {
			t.Errorf("skiff_config_warnings = %v, want the missing credential counted", n)
		}
		if !strings.Contains(p.Log(), "missing-credential") {
			t.Error("pilot's log does not report the missing credential")
		}
		// The server is left out, not sent to wait for a secret that never comes.
		if strings.Contains(string(envoy.ConfigDump(t)), fmt.Sprintf(`"name": "0.0.0.0_%d"`, missingPort)) {
			t.Errorf("Envoy holds a listener for the server whose Secret does not exist")
		}
	})
	framework.Eventually(t, func() error { return typeAcked(p.Syncz(t), meshGatewayNode, "sds") })
	framework.Eventually(t, func() error { return allAcked(p.Syncz(t), meshGatewayNode, false) })
}

// meshGatewayGet calls /headers on the gateway's port over TLS, presenting client (nil: no
// certificate), and checks that the gateway presented its own SPIFFE certificate signed by
// roots. It returns the headers the upstream saw.
func meshGatewayGet(roots *x509.CertPool, port int, client *tls.Certificate) (map[string]string, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// A workload certificate names a SPIFFE ID, not a host: verify the chain and the ID
		// here instead of the server name.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifySPIFFE(raw, roots, meshGatewayID)
		},
	}
	if client != nil {
		// Always present it: Go's default picks no certificate that the server's list of
		// acceptable CAs rules out, and a foreign one must reach Envoy's verification.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client, nil }
	}
	c := &http.Client{
		Timeout:   framework.RequestTimeout,
		Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, Proxy: nil},
	}
	resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/headers", port))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("port %d: status %d: %.200s", port, resp.StatusCode, body)
	}
	var headers map[string]string
	if err := json.Unmarshal(body, &headers); err != nil {
		return nil, fmt.Errorf("port %d: not the upstream's /headers (%w): %.200s", port, err, body)
	}
	return headers, nil
}

// verifySPIFFE checks a peer's chain against roots and its leaf's URI SAN against want.
func verifySPIFFE(raw [][]byte, roots *x509.CertPool, want string) error {
	if len(raw) == 0 {
		return errors.New("no certificate")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates}); err != nil {
		return fmt.Errorf("the gateway's certificate: %w", err)
	}
	var ids []string
	for _, u := range certs[0].URIs {
		ids = append(ids, u.String())
	}
	if !slices.Contains(ids, want) {
		return fmt.Errorf("the gateway presented %v, want %s", ids, want)
	}
	return nil
}

// listedWarning checks /debug/config_errors for a warning with the code on the object and field
// whose message mentions text.
func listedWarning(t *testing.T, p *framework.Pilot, code, kind, ns, name, field, text string) error {
	var view struct {
		Warnings []struct {
			Code, Kind, Namespace, Name, Field, Message string
		} `json:"warnings"`
	}
	status, body := p.Get(t, "/debug/config_errors")
	if status != http.StatusOK {
		return fmt.Errorf("/debug/config_errors: status %d", status)
	}
	if err := json.Unmarshal(body, &view); err != nil {
		return fmt.Errorf("/debug/config_errors: %w", err)
	}
	for _, w := range view.Warnings {
		if w.Code == code && w.Kind == kind && w.Namespace == ns && w.Name == name && w.Field == field && strings.Contains(w.Message, text) {
			return nil
		}
	}
	return fmt.Errorf("/debug/config_errors has no %s for %s %s/%s %s: %s", code, kind, ns, name, field, body)
}
