package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skiffmesh/skiff/test/framework"
)

// No private key leaks (issue 13, point 5). A full mesh runs with traffic: pilot's CA issuing
// workload certificates over SDS to two sidecars with STRICT mTLS, a gateway terminating
// HTTPS with a credentialName Secret, pilot's TLS xDS port on, a proxy refused its
// certificate, and pilot and the Envoys logging at debug level. Then every endpoint of
// pilot's monitoring port, pilot's /metrics, every line of pilot's and the Envoys' logs and
// the Envoys' own admin dumps are searched for the keys in use: the CA's (from its file), the
// gateway Secret's, and the workload keys, which only pilot and the Envoys hold, so an ADS
// recorder between them keeps each one pilot sends (adsrecorder_test.go). framework.KeyScanner
// finds a key in any encoding a program might print it in (its own test shows it). And
// workload keys never touch disk: pilot runs in a working directory and with a TMPDIR of its
// own, both of which must stay empty, and the CA folder holds the CA's files alone.

// secretsGatewayHost is the gateway's HTTPS host.
const secretsGatewayHost = "secrets.example.com"

func TestSecretsNeverLeak(t *testing.T) {
	// Envoy's debug log says the most about the secrets it receives.
	t.Setenv("SKIFF_ENVOY_LOG_LEVEL", "debug")
	caDir, workDir, tmpDir := t.TempDir(), t.TempDir(), t.TempDir()
	var recorder *adsRecorder
	place := mtlsPlacement{
		clientIP: "127.0.32.1", serverIP: "127.0.32.2", serverAppIP: "127.0.32.12",
		namespace: "default", serverApp: "server",
		pilotArgs: []string{"--ca-dir", caDir, "--log-level", "debug",
			"--xds-tls-address", framework.FreeAddress(t, "127.0.0.1")},
		pilotDir: workDir,
		pilotEnv: []string{"TMPDIR=" + tmpDir},
		xdsVia: func(t *testing.T, p *framework.Pilot) string {
			recorder = startADSRecorder(t, p.XDSAddress)
			return recorder.Address
		},
	}
	m := startMTLSMeshAt(t, place, "HTTP", securitySTRICT(place))

	pki := newTestPKI(t, secretsGatewayHost)
	productpage := framework.StartUpstream(t, "127.0.32.21", "productpage")
	httpsPort := framework.FreePort(t, "127.0.0.1")
	m.pilot.WriteConfig(t, "gateway-secret.yaml", pki.secretYAML("secrets-credential", "istio-system"))
	m.pilot.WriteConfig(t, "gateway.yaml", namespacedServiceEntry("productpage", "bookinfo", productpage)+fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: secrets-gateway
  namespace: bookinfo
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: %[1]d, name: https, protocol: HTTPS}
    hosts: [%[2]s]
    tls:
      mode: SIMPLE
      credentialName: secrets-credential
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: secrets-gateway
  namespace: bookinfo
spec:
  hosts: [%[2]s]
  gateways: [secrets-gateway]
  http:
  - route:
    - destination:
        host: productpage
`, httpsPort, secretsGatewayHost))
	gateway := framework.StartEnvoy(t, m.pilot, framework.EnvoyOptions{
		NodeID:        gatewayNode,
		BootstrapArgs: []string{"--labels", "istio=ingressgateway", "--xds-address", recorder.Address},
	})

	// Traffic: over mesh mTLS, and HTTPS through the gateway.
	wantClientIdentity(t, m.throughMesh(t))
	framework.Eventually(t, func() error { return pki.expectHTTPS(httpsPort, nil, "productpage") })
	for range 20 {
		if resp, err := m.meshGet(http.MethodGet); err != nil || resp.Status != http.StatusOK {
			t.Errorf("through the mesh: %v, %v", resp, err)
		}
		if err := pki.expectHTTPS(httpsPort, nil, "productpage"); err != nil {
			t.Errorf("through the gateway: %v", err)
		}
	}
	// A proxy claiming the server's identity from the wrong address gets the trust bundle and
	// no key, and pilot logs the refusal.
	impostorGetsNoKey(t, m.pilot, m.server.NodeID)
	nodes := []string{m.client.NodeID, m.server.NodeID}
	framework.Eventually(t, func() error { return proxiesResynced(m.pilot.Syncz(t), nodes) })
	framework.Eventually(t, func() error { return allAcked(m.pilot.Syncz(t), gatewayNode, false) })

	scanner := keysInUse(t, m, recorder, pki, caDir)
	var scanned scanTally
	leaks := scanPilot(t, m.pilot, scanner, &scanned, append(nodes, gatewayNode))
	for _, e := range []*framework.Envoy{m.client, m.server, gateway} {
		leaks = append(leaks, scanned.scan(scanner, "log of Envoy "+e.NodeID, []byte(e.Log()))...)
		for _, path := range []string{"/config_dump?include_eds", "/certs", "/stats"} {
			_, body := e.Get(t, path)
			leaks = append(leaks, scanned.scan(scanner, "Envoy "+e.NodeID+" admin "+path, body)...)
		}
	}
	t.Logf("scanned %d sources, %d kB, for %d keys: %d findings", scanned.sources, scanned.bytes/1024, scanner.Keys(), len(leaks))
	for _, l := range leaks {
		t.Errorf("private key material found: %s", l)
	}

	// Nothing pilot wrote holds a key but the CA's own file.
	if names := dirFiles(t, workDir); len(names) > 0 {
		t.Errorf("pilot wrote into its working directory: %v", names)
	}
	if names := dirFiles(t, tmpDir); len(names) > 0 {
		t.Errorf("pilot wrote into its TMPDIR: %v", names)
	}
	if names, want := dirFiles(t, caDir), []string{"ca-cert.pem", "ca-key.pem", "root-cert.pem"}; !slices.Equal(names, want) {
		t.Errorf("the CA folder holds %v, want %v", names, want)
	}
	for _, dir := range []string{caDir, m.pilot.ConfigDir, workDir, tmpDir} {
		for _, name := range dirFiles(t, dir) {
			path := filepath.Join(dir, name)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range scanner.Scan(path, data) {
				caKeyFile := path == filepath.Join(caDir, "ca-key.pem") && (l.Key == "CA key" || l.Key == "any")
				secretFile := path == filepath.Join(m.pilot.ConfigDir, "gateway-secret.yaml") &&
					(l.Key == "gateway Secret secrets-credential" || l.Key == "any")
				if !caKeyFile && !secretFile {
					t.Errorf("key material on disk: %s", l)
				}
			}
		}
	}
	if info, err := os.Stat(filepath.Join(caDir, "ca-key.pem")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("ca-key.pem: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	m.client.AssertNoRejections(t)
	m.server.AssertNoRejections(t)
	gateway.AssertNoRejections(t)
}

// keysInUse gathers the keys the scan looks for, and checks that the scanner finds each where
// it is known to be: the gateway key in its Secret's file (base64 of PEM), the CA key in its
// file, each workload key in the PEM pilot sent.
func keysInUse(t *testing.T, m *mtlsMesh, recorder *adsRecorder, pki *testPKI, caDir string) *framework.KeyScanner {
	t.Helper()
	scanner := &framework.KeyScanner{}
	if err := scanner.AddPEM("gateway Secret secrets-credential", pki.keyPEM); err != nil {
		t.Fatal(err)
	}
	caKey, err := os.ReadFile(filepath.Join(caDir, "ca-key.pem"))
	if err != nil {
		t.Fatalf("the CA key: %v", err)
	}
	if err := scanner.AddPEM("CA key", caKey); err != nil {
		t.Fatal(err)
	}
	// The Envoys' current certificates must be among those recorded: the recorded keys are
	// the ones in use.
	recorded := recorder.Keys()
	var serials []string
	gatewayKeySeen := false
	for i, k := range recorded {
		switch k.secret {
		case "default":
			serial, err := leafSerial(k.chainPEM)
			if err != nil {
				t.Fatalf("recorded workload certificate: %v", err)
			}
			serials = append(serials, serial)
			if err := scanner.AddPEM(fmt.Sprintf("workload key %d (certificate %s)", i, serial), k.keyPEM); err != nil {
				t.Fatal(err)
			}
		case "kubernetes://secrets-credential":
			gatewayKeySeen = gatewayKeySeen || string(k.keyPEM) == string(pki.keyPEM)
		}
	}
	if !gatewayKeySeen {
		t.Errorf("the recorder did not see pilot send the gateway Secret's key; it saw %v", recorded)
	}
	for _, e := range []*framework.Envoy{m.client, m.server} {
		chains, _ := waitWorkloadCert(t, e)
		for _, c := range chains {
			if !slices.ContainsFunc(serials, func(s string) bool { return sameSerial(s, c) }) {
				t.Errorf("Envoy %s holds certificate %s, which the recorder did not see sent (it saw %v)", e.NodeID, c, serials)
			}
		}
	}
	t.Logf("looking for %d keys: the CA's, the gateway Secret's and %d workload keys pilot sent", scanner.Keys(), len(serials))

	controls := map[string][]byte{
		"gateway-secret.yaml": []byte(pki.secretYAML("secrets-credential", "istio-system")),
		"ca-key.pem":          caKey,
	}
	for _, k := range recorded {
		controls["recorded "+k.secret+" key"] = k.keyPEM
	}
	for where, data := range controls {
		if len(scanner.Scan(where, data)) == 0 {
			t.Fatalf("the scanner does not find the key in %s, where it is: its findings elsewhere would mean nothing", where)
		}
	}
	return scanner
}

// leafSerial is the serial (hex) of the first certificate in a PEM chain.
func leafSerial(chainPEM []byte) (string, error) {
	block, _ := pem.Decode(chainPEM)
	if block == nil {
		return "", fmt.Errorf("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", err
	}
	return c.SerialNumber.Text(16), nil
}

// scanPilot scans everything pilot serves on its monitoring port, and its log, which must
// hold debug lines: the scan wants pilot at its most talkative.
func scanPilot(t *testing.T, p *framework.Pilot, scanner *framework.KeyScanner, scanned *scanTally, nodes []string) []framework.KeyLeak {
	t.Helper()
	var leaks []framework.KeyLeak
	for what, body := range p.MonitoringSources(t, nodes) {
		leaks = append(leaks, scanned.scan(scanner, "pilot "+what, body)...)
	}
	if !strings.Contains(p.Log(), "level=DEBUG") {
		t.Errorf("pilot's log has no debug lines: the scan wants its most talkative log")
	}
	return leaks
}

// scanTally counts what was scanned, for the test's log.
type scanTally struct{ sources, bytes int }

func (c *scanTally) scan(s *framework.KeyScanner, where string, data []byte) []framework.KeyLeak {
	c.sources++
	c.bytes += len(data)
	return s.Scan(where, data)
}

// impostorGetsNoKey asks pilot's SDS for nodeID's workload certificate from 127.0.0.1, which
// is not the workload's address: pilot answers with the trust bundle alone.
func impostorGetsNoKey(t *testing.T, p *framework.Pilot, nodeID string) {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+p.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), framework.RequestTimeout)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatalf("impostor: %v", err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: nodeID}, TypeUrl: resourcev3.SecretType, ResourceNames: []string{"default", "ROOTCA"},
	}); err != nil {
		t.Fatalf("impostor: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("impostor: no answer: %v", err)
	}
	var names []string
	for _, res := range resp.GetResources() {
		var s tlsv3.Secret
		if err := res.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		names = append(names, s.GetName())
		if s.GetTlsCertificate() != nil {
			t.Errorf("a proxy connecting from the wrong address got %s with a key", s.GetName())
		}
	}
	if !slices.Equal(names, []string{"ROOTCA"}) {
		t.Errorf("impostor got secrets %v, want ROOTCA alone", names)
	}
	framework.Eventually(t, func() error {
		for _, line := range strings.Split(p.Log(), "\n") {
			if strings.Contains(line, `msg="refusing workload certificate"`) && strings.Contains(line, nodeID) {
				return nil
			}
		}
		return fmt.Errorf("pilot's log has no refusal for %s", nodeID)
	})
}

// dirFiles lists the regular files under dir, relative to it, sorted.
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	slices.Sort(names)
	return names
}
