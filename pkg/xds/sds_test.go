package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/render"
	"github.com/skiffmesh/skiff/test/framework"
)

const (
	reviewsNode  = "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local"
	impostorNode = "sidecar~127.0.0.9~ratings-v1.default~default.svc.cluster.local"
)

// identitySnapshot declares reviews-v1 at 127.0.0.1 (service account reviews) and ratings-v1
// at 127.0.0.9, which the tests never connect from.
func identitySnapshot() *model.Snapshot {
	we := func(name, addr, sa string) *networkingv1.WorkloadEntry {
		return &networkingv1.WorkloadEntry{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec:       networking.WorkloadEntry{Address: addr, ServiceAccount: sa, Labels: map[string]string{"app": name}},
		}
	}
	return model.Build(&config.Set{WorkloadEntries: []*networkingv1.WorkloadEntry{
		we("reviews-v1", "127.0.0.1", "reviews"),
		we("ratings-v1", "127.0.0.9", "ratings"),
	}})
}

// startSDSServer runs a Server with a fresh CA on a loopback port.
func startSDSServer(t *testing.T, ttl time.Duration) (*Server, *grpc.ClientConn, *ca.CA) {
	t.Helper()
	return startSDSServerLogging(t, ttl, nil)
}

// startSDSServerLogging is startSDSServer with the server's log written to log (the default
// logger's when nil).
func startSDSServerLogging(t *testing.T, ttl time.Duration, log io.Writer) (*Server, *grpc.ClientConn, *ca.CA) {
	t.Helper()
	authority, err := ca.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), "")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Registry: prometheus.NewRegistry(), CA: authority, WorkloadCertTTL: ttl}
	if log != nil {
		opts.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	s, conn := serve(t, opts)
	s.Push(identitySnapshot(), time.Now())
	return s, conn, authority
}

func sdsRequest(node string, names ...string) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resourcev3.SecretType, ResourceNames: names}
}

// recvSecrets reads one response and returns its secrets by name.
func recvSecrets(t *testing.T, recv func() (*discoveryv3.DiscoveryResponse, error)) (map[string]*tlsv3.Secret, *discoveryv3.DiscoveryResponse) {
	t.Helper()
	resp, err := recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.TypeUrl != resourcev3.SecretType {
		t.Fatalf("got a %s response, want secrets", resp.TypeUrl)
	}
	out := map[string]*tlsv3.Secret{}
	for _, a := range resp.Resources {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		out[s.Name] = &s
	}
	return out, resp
}

// verifyWorkload checks that the default secret is a chain for spiffeID that verifies against
// the ROOTCA bundle, and returns the leaf.
func verifyWorkload(t *testing.T, secret *tlsv3.Secret, rootPEM []byte, spiffeID string) *x509.Certificate {
	t.Helper()
	tc := secret.GetTlsCertificate()
	if len(tc.GetPrivateKey().GetInlineBytes()) == 0 {
		t.Fatal("default secret has no inline private key")
	}
	var certs []*x509.Certificate
	rest := tc.GetCertificateChain().GetInlineBytes()
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatal("default secret has no certificate chain")
	}
	leaf := certs[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffeID {
		t.Errorf("leaf URI SANs = %v, want %s", leaf.URIs, spiffeID)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("ROOTCA holds no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("workload certificate does not verify against ROOTCA: %v", err)
	}
	return leaf
}

// A proxy connecting from its WorkloadEntry's address gets its SPIFFE certificate and the
// root; the debug dump shows the secret without its key.
func TestSDSDefaultGrantedByAddress(t *testing.T) {
	s, conn, authority := startSDSServer(t, 0)
	stream := openADS(t, conn)
	if err := stream.Send(sdsRequest(reviewsNode, "default", "ROOTCA")); err != nil {
		t.Fatal(err)
	}
	secrets, resp := recvSecrets(t, stream.Recv)
	if len(secrets) != 2 {
		t.Fatalf("got secrets %v, want default and ROOTCA", secrets)
	}
	root := secrets["ROOTCA"].GetValidationContext().GetTrustedCa().GetInlineBytes()
	if string(root) != string(authority.RootPEM()) {
		t.Error("ROOTCA is not the CA's root")
	}
	verifyWorkload(t, secrets["default"], root, "spiffe://cluster.local/ns/default/sa/reviews")
	// ACK, so the stream is in a steady state.
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: []string{"default", "ROOTCA"},
		VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reviews proxy's identity", func() bool {
		st := s.Statuses()
		return len(st) == 1 && st[0].Identity == "spiffe://cluster.local/ns/default/sa/reviews"
	})

	dump, source, err := s.ConfigDump("reviews-v1.default")
	if err != nil {
		t.Fatal(err)
	}
	out, err := render.JSON(dump)
	if err != nil {
		t.Fatal(err)
	}
	key := string(secrets["default"].GetTlsCertificate().GetPrivateKey().GetInlineBytes())
	body := strings.TrimSpace(strings.Split(key, "-----")[2]) // the base64 of the key
	if strings.Contains(string(out), body[:32]) {
		t.Errorf("config dump (%s) shows the workload key", source)
	}
	if !strings.Contains(string(out), `"name": "default"`) {
		t.Errorf("config dump (%s) does not list the default secret", source)
	}
}

// A proxy whose node ID names a workload at another address gets ROOTCA, never default, and
// the refusal shows in its status, in the counter and in the log, with the workload's address
// and the one the proxy connected from.
func TestSDSDefaultRefusedFromOtherAddress(t *testing.T) {
	var log lockedBuffer
	s, conn, _ := startSDSServerLogging(t, 0, &log)
	stream := openADS(t, conn)
	if err := stream.Send(sdsRequest(impostorNode, "default")); err != nil {
		t.Fatal(err)
	}
	got := make(chan *discoveryv3.DiscoveryResponse, 4)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(got)
				return
			}
			got <- resp
		}
	}()
	select {
	case resp := <-got:
		t.Fatalf("refused proxy was answered for default: %d resources", len(resp.Resources))
	case <-time.After(500 * time.Millisecond):
	}
	// Asking for ROOTCA as well (a new subscription set) gets the root only.
	if err := stream.Send(sdsRequest(impostorNode, "default", "ROOTCA")); err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-got:
		if len(resp.Resources) != 1 {
			t.Fatalf("got %d secrets, want ROOTCA alone", len(resp.Resources))
		}
		var sec tlsv3.Secret
		if err := resp.Resources[0].UnmarshalTo(&sec); err != nil {
			t.Fatal(err)
		}
		if sec.Name != "ROOTCA" {
			t.Fatalf("got secret %s, want ROOTCA", sec.Name)
		}
	case <-time.After(framework.Patience):
		t.Fatalf("no ROOTCA within %v", framework.Patience)
	}
	st := s.Statuses()
	if len(st) != 1 || st[0].Identity != "refused: "+refuseAddressMismatch {
		t.Errorf("statuses = %+v, want identity refused: %s", st, refuseAddressMismatch)
	}
	if n := counterValue(t, s.sds.refusals.WithLabelValues(refuseAddressMismatch)); n != 1 {
		t.Errorf("skiff_sds_refusals_total{reason=%s} = %v, want 1", refuseAddressMismatch, n)
	}
	var refusal string
	for line := range strings.Lines(log.String()) {
		if strings.Contains(line, "refusing workload certificate") {
			refusal = line
		}
	}
	for _, want := range []string{"reason=" + refuseAddressMismatch, "workload=WorkloadEntry/default/ratings-v1",
		"expected_address=127.0.0.9", "source_address=127.0.0.1"} {
		if !strings.Contains(refusal, want) {
			t.Errorf("refusal log line %q lacks %s", refusal, want)
		}
	}
}

// Certificates are re-issued at half-life and pushed on the open stream.
func TestSDSRotation(t *testing.T) {
	_, conn, authority := startSDSServer(t, 2*time.Second)
	stream := openADS(t, conn)
	if err := stream.Send(sdsRequest(reviewsNode, "default", "ROOTCA")); err != nil {
		t.Fatal(err)
	}
	secrets, resp := recvSecrets(t, stream.Recv)
	first := verifyWorkload(t, secrets["default"], authority.RootPEM(), "spiffe://cluster.local/ns/default/sa/reviews")
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: []string{"default", "ROOTCA"},
		VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	secrets, _ = recvSecrets(t, stream.Recv)
	if _, ok := secrets["ROOTCA"]; ok {
		t.Error("rotation re-sent the unchanged ROOTCA")
	}
	second := verifyWorkload(t, secrets["default"], authority.RootPEM(), "spiffe://cluster.local/ns/default/sa/reviews")
	if !second.NotAfter.After(first.NotAfter) {
		t.Errorf("rotated certificate expires %v, not after the first's %v", second.NotAfter, first.NotAfter)
	}
	if waited := time.Since(start); waited > 1500*time.Millisecond {
		t.Errorf("rotation came after %v, want about 1s (half of 2s)", waited)
	}
}

// Delta streams get the same secrets, and a refused delta subscription is simply not answered.
func TestSDSDelta(t *testing.T) {
	s, conn, authority := startSDSServer(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	open := func() discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return stream
	}
	stream := open()
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: reviewsNode}, TypeUrl: resourcev3.SecretType,
		ResourceNamesSubscribe: []string{"default", "ROOTCA"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]*tlsv3.Secret{}
	for _, r := range resp.Resources {
		var sec tlsv3.Secret
		if err := r.Resource.UnmarshalTo(&sec); err != nil {
			t.Fatal(err)
		}
		secrets[sec.Name] = &sec
	}
	if len(secrets) != 2 {
		t.Fatalf("got %d secrets, want default and ROOTCA", len(secrets))
	}
	verifyWorkload(t, secrets["default"], authority.RootPEM(), "spiffe://cluster.local/ns/default/sa/reviews")

	refused := open()
	if err := refused.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: impostorNode}, TypeUrl: resourcev3.SecretType,
		ResourceNamesSubscribe: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { _, err := refused.Recv(); got <- err }()
	select {
	case err := <-got:
		t.Fatalf("refused delta subscription was answered (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	waitFor(t, "the impostor's refusal in the statuses", func() bool {
		for _, st := range s.Statuses() {
			if st.NodeID == impostorNode {
				return st.Identity == "refused: "+refuseAddressMismatch
			}
		}
		return false
	})
}

// A stream's secrets go when it closes.
func TestSDSDroppedOnDisconnect(t *testing.T) {
	s, conn, _ := startSDSServer(t, 0)
	stream := openADS(t, conn)
	if err := stream.Send(sdsRequest(reviewsNode, "default", "ROOTCA")); err != nil {
		t.Fatal(err)
	}
	recvSecrets(t, stream.Recv)
	if got := s.sds.secretsOf(reviewsNode); len(got) != 2 {
		t.Fatalf("stream holds %d secrets, want 2", len(got))
	}
	_ = stream.CloseSend()
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	waitFor(t, "the reviews proxy's secrets to be forgotten", func() bool { return s.sds.secretsOf(reviewsNode) == nil })
}

func TestCheckIdentity(t *testing.T) {
	pod := func(name, ip, sa string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
			Spec: corev1.PodSpec{ServiceAccountName: sa}, Status: corev1.PodStatus{PodIP: ip, Phase: phase}}
	}
	snap := model.Build(&config.Set{WorkloadEntries: []*networkingv1.WorkloadEntry{
		{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}, Spec: networking.WorkloadEntry{Address: "10.0.0.1", ServiceAccount: "sa"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns"}, Spec: networking.WorkloadEntry{Address: "10.0.0.2"}},
		// A Pod wins over a WorkloadEntry of the same name.
		{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: networking.WorkloadEntry{Address: "10.0.0.9", ServiceAccount: "vm"}},
	}, Pods: []*corev1.Pod{
		pod("p", "10.244.0.1", "reviews", corev1.PodRunning),
		pod("q", "10.244.0.2", "", corev1.PodRunning),
		pod("done", "10.244.0.3", "batch", corev1.PodSucceeded),
		pod("pending", "", "web", corev1.PodPending),
	}})
	for _, tc := range []struct {
		node, addr, sa, reason string
	}{
		{"sidecar~10.0.0.1~a.ns~ns.svc.cluster.local", "10.0.0.1", "sa", ""},
		{"sidecar~10.0.0.1~a.ns~ns.svc.cluster.local", "::ffff:10.0.0.1", "sa", ""},
		// The IP in the node ID is a claim like any other: only the source address counts.
		{"sidecar~10.0.0.1~a.ns~ns.svc.cluster.local", "10.0.0.3", "", refuseAddressMismatch},
		{"sidecar~10.0.0.2~b.ns~ns.svc.cluster.local", "10.0.0.2", "", refuseNoServiceAccount},
		{"sidecar~10.0.0.1~c.ns~ns.svc.cluster.local", "10.0.0.1", "", refuseNoWorkload},
		{"sidecar~10.0.0.1~a.other~other.svc.cluster.local", "10.0.0.1", "", refuseNoWorkload},
		// Pods: their IP and service account (Kubernetes' "default" when they name none).
		{"sidecar~10.244.0.1~p.ns~ns.svc.cluster.local", "10.244.0.1", "reviews", ""},
		{"sidecar~10.244.0.1~p.ns~ns.svc.cluster.local", "10.0.0.9", "", refuseAddressMismatch},
		{"sidecar~10.244.0.2~q.ns~ns.svc.cluster.local", "10.244.0.2", "default", ""},
		{"sidecar~10.244.0.3~done.ns~ns.svc.cluster.local", "10.244.0.3", "", refuseAddressMismatch},
		{"sidecar~10.244.0.4~pending.ns~ns.svc.cluster.local", "10.244.0.4", "", refuseAddressMismatch},
	} {
		proxy, err := model.ParseNodeID(tc.node)
		if err != nil {
			t.Fatal(err)
		}
		sa, reason := checkIdentity(snap, proxy, tc.addr)
		if sa != tc.sa || reason != tc.reason {
			t.Errorf("%s from %s: got (%q, %q), want (%q, %q)", tc.node, tc.addr, sa, reason, tc.sa, tc.reason)
		}
	}
}

// A refused proxy's parked watch is answered once the configuration names its address: the
// identity check runs again on every push.
func TestSDSGrantedAfterWorkloadEntryMoves(t *testing.T) {
	s, conn, authority := startSDSServer(t, 0)
	stream := openADS(t, conn)
	if err := stream.Send(sdsRequest(impostorNode, "default")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refusal in the statuses", func() bool {
		st := s.Statuses()
		return len(st) == 1 && st[0].Identity == "refused: "+refuseAddressMismatch
	})
	s.Push(model.Build(&config.Set{WorkloadEntries: []*networkingv1.WorkloadEntry{{
		ObjectMeta: metav1.ObjectMeta{Name: "ratings-v1", Namespace: "default"},
		Spec:       networking.WorkloadEntry{Address: "127.0.0.1", ServiceAccount: "ratings"},
	}}}), time.Now())
	secrets, _ := recvSecrets(t, stream.Recv)
	verifyWorkload(t, secrets["default"], authority.RootPEM(), "spiffe://cluster.local/ns/default/sa/ratings")
	if _, ok := secrets["ROOTCA"]; ok {
		t.Error("ROOTCA sent to a watch that did not ask for it")
	}
	waitFor(t, "the ratings identity", func() bool { return s.Statuses()[0].Identity == "spiffe://cluster.local/ns/default/sa/ratings" })
}

// go-control-plane numbers SotW and delta streams with separate counters: the first of each
// must stay two proxies, with two identities.
func TestSDSSotwAndDeltaStreamsAreDistinct(t *testing.T) {
	s, conn, _ := startSDSServer(t, 0)
	sotwStream := openADS(t, conn)
	if err := sotwStream.Send(sdsRequest(reviewsNode, "default", "ROOTCA")); err != nil {
		t.Fatal(err)
	}
	recvSecrets(t, sotwStream.Recv)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	delta, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: impostorNode}, TypeUrl: resourcev3.SecretType,
		ResourceNamesSubscribe: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *discoveryv3.DeltaDiscoveryResponse, 1)
	go func() {
		if resp, err := delta.Recv(); err == nil {
			got <- resp
		}
	}()
	select {
	case resp := <-got:
		t.Fatalf("the delta impostor was sent %d secrets", len(resp.Resources))
	case <-time.After(500 * time.Millisecond):
	}
	waitFor(t, "two statuses", func() bool { return len(s.Statuses()) == 2 })
	for _, st := range s.Statuses() {
		want := map[string]string{reviewsNode: "spiffe://cluster.local/ns/default/sa/reviews", impostorNode: "refused: " + refuseAddressMismatch}[st.NodeID]
		if st.Identity != want {
			t.Errorf("%s (%s): identity %q, want %q", st.NodeID, st.Protocol, st.Identity, want)
		}
	}
}

// The TLS port serves the same ADS with a certificate from the CA, and identity is still
// checked against the connection's source address.
func TestTLSPortServesSDS(t *testing.T) {
	s, _, authority := startSDSServer(t, 0)
	cfg, err := ServingTLS(authority, ServingNames, ServingIPs, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.ServeTLS(lis, cfg) }()
	creds := credentials.NewTLS(&tls.Config{RootCAs: authority.Roots(), ServerName: "istiod.istio-system.svc"})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream := openADS(t, conn)
	if err := stream.Send(sdsRequest(reviewsNode, "default", "ROOTCA")); err != nil {
		t.Fatal(err)
	}
	secrets, _ := recvSecrets(t, stream.Recv)
	verifyWorkload(t, secrets["default"], authority.RootPEM(), "spiffe://cluster.local/ns/default/sa/reviews")
}
