package xds

import (
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// TestSDSGatewayAddsROOTCA: a gateway's Secret watch that named only its credential
// (kubernetes://, answered by its class's store) and then names ROOTCA too, as when a Gateway
// gains an ISTIO_MUTUAL server, is answered with ROOTCA. It used to panic in go-control-plane's
// LinearCache and end pilot (found by test/e2e's TestFuzzCorpusEnvoyACKs).
func TestSDSGatewayAddsROOTCA(t *testing.T) {
	s, conn, _ := startSDSServer(t, 0)
	s.Push(model.Build(gatewayWithCredential("THE-KEY")), time.Now())
	const node = "router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local"
	stream := openADS(t, conn)
	if err := stream.Send(sdsRequest(node, "kubernetes://cred")); err != nil {
		t.Fatal(err)
	}
	secrets, resp := recvSecrets(t, stream.Recv)
	if _, ok := secrets["kubernetes://cred"]; !ok {
		t.Fatalf("got secrets %v, want kubernetes://cred", secrets)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType,
		ResourceNames: []string{"kubernetes://cred", "ROOTCA"}, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
		t.Fatal(err)
	}
	secrets, _ = recvSecrets(t, stream.Recv)
	if _, ok := secrets["ROOTCA"]; !ok {
		t.Fatalf("after asking for ROOTCA too, got secrets %v", secrets)
	}
}
