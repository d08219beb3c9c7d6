package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestEnvoyJoinsOverTLS: an Envoy bootstrapped with the mesh root (`pilot bootstrap
// --xds-root-cert`) joins pilot's TLS xDS port, verifies pilot's CA-issued certificate, and
// gets, ACKs and serves its configuration exactly as over plaintext.
func TestEnvoyJoinsOverTLS(t *testing.T) {
	up := framework.StartUpstream(t, "127.0.5.1", "reviews")
	port := framework.FreePort(t, "127.0.0.1")
	caDir := filepath.Join(t.TempDir(), "ca")
	tlsAddr := framework.FreeAddress(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{Args: []string{"--xds-tls-address", tlsAddr, "--ca-dir", caDir}})
	p.WriteConfig(t, "mesh.yaml", serviceEntry("reviews", port, endpoint{upstream: up}))

	node := sidecarNode("tls-client-1")
	e := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: node, BootstrapArgs: []string{
		"--xds-address", tlsAddr, "--xds-root-cert", filepath.Join(caDir, "root-cert.pem"),
	}})
	eventuallyAnswers(t, port, "reviews", "reviews")

	// The ACKed state pilot records is for this proxy's TLS stream.
	framework.Eventually(t, func() error {
		var statuses []struct {
			NodeID string `json:"proxy"`
			Types  map[string]struct {
				Sent  string `json:"sent"`
				Acked string `json:"acked"`
			} `json:"types"`
		}
		if err := json.Unmarshal(p.Syncz(t), &statuses); err != nil {
			return err
		}
		for _, st := range statuses {
			if st.NodeID != node {
				continue
			}
			for _, typ := range []string{"cds", "lds"} {
				if ts := st.Types[typ]; ts.Sent == "" || ts.Acked != ts.Sent {
					return fmt.Errorf("%s: sent %q, acked %q", typ, ts.Sent, ts.Acked)
				}
			}
			return nil
		}
		return fmt.Errorf("proxy %s not in syncz", node)
	})
	if n := e.Stat(t, "cluster.xds-grpc.ssl.handshake"); n == 0 {
		t.Errorf("cluster.xds-grpc.ssl.handshake = 0: Envoy did not connect over TLS")
	}
}
