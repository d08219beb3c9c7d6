package bootstrap

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/test/framework"
)

func testRoot(t *testing.T) []byte {
	t.Helper()
	c, err := ca.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), "")
	if err != nil {
		t.Fatal(err)
	}
	return c.RootPEM()
}

// With a root, the xds-grpc cluster verifies pilot over TLS: the root, the SNI name and a SAN
// match on it, since Envoy checks no name by itself.
func TestXDSTLS(t *testing.T) {
	root := testRoot(t)
	for _, tc := range []struct {
		addr, serverName, wantSNI string
	}{
		{"127.0.0.1:15012", "", DefaultXDSServerName},
		{"pilot.skiff.svc:15012", "", "pilot.skiff.svc"},
		{"127.0.0.1:15012", "localhost", "localhost"},
	} {
		b, err := Build(Options{NodeID: testNodeID, XDSAddress: tc.addr, XDSRootCert: root, XDSServerName: tc.serverName})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		ts := b.StaticResources.Clusters[0].GetTransportSocket()
		var ctx tlsv3.UpstreamTlsContext
		if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
			t.Fatalf("%s: transport socket: %v", tc.addr, err)
		}
		if ctx.Sni != tc.wantSNI {
			t.Errorf("%s: SNI %q, want %q", tc.addr, ctx.Sni, tc.wantSNI)
		}
		vc := ctx.GetCommonTlsContext().GetValidationContext()
		if vc.GetTrustedCa().GetInlineString() != string(root) {
			t.Errorf("%s: trusted CA is not the root", tc.addr)
		}
		if m := vc.GetMatchTypedSubjectAltNames(); len(m) != 1 || m[0].GetMatcher().GetExact() != tc.wantSNI {
			t.Errorf("%s: SAN matchers %v, want exactly %q", tc.addr, m, tc.wantSNI)
		}
	}
	if b, _ := Build(Options{NodeID: testNodeID, XDSAddress: testXDS}); b.StaticResources.Clusters[0].GetTransportSocket() != nil {
		t.Error("plaintext bootstrap has a transport socket")
	}
	if _, err := Build(Options{NodeID: testNodeID, XDSAddress: testXDS, XDSRootCert: []byte("not PEM")}); err == nil || !strings.Contains(err.Error(), "XDSRootCert") {
		t.Errorf("bad root: %v, want an XDSRootCert error", err)
	}
}

func TestEnvoyValidateTLS(t *testing.T) {
	envoy := framework.EnvoyBinary(t)
	path := writeBootstrap(t, Options{NodeID: testNodeID, XDSAddress: "127.0.0.1:15012", XDSRootCert: testRoot(t)})
	if out, err := exec.Command(envoy, "--mode", "validate", "-c", path, "--log-level", "warn").CombinedOutput(); err != nil {
		t.Fatalf("envoy --mode validate: %v\n%s", err, out)
	}
}
