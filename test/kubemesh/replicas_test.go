package kubemesh

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/test/framework"
)

// Two pilot replicas in Kubernetes mode (issue 13, point 1): a sidecar whose bootstrap names
// both carries 100 requests/s over mTLS while the replica it is connected to is killed with
// SIGKILL, three times, each replica in turn. Not one request fails, the sidecar moves to the
// other replica (whose /debug/syncz then shows it in sync, with its identity granted), and the
// certificate the other replica issues it is accepted by a server that trusts the root in
// Secret skiff-ca, which both replicas share.
//
// Pilot grants a workload certificate only to a stream from the Pod's IP. The pod networks of
// the other tests reach pilot through a forwarder, so pilot sees 127.0.0.1; here the replicas
// run in a network namespace of their own, linked to the pod network by a veth pair, and the
// sidecar connects from its Pod's IP (pilot bootstrap --upstream-bind).
//
// The server is not a sidecar (two Envoys cannot share the pod network's fixed admin port):
// it is an HTTPS server holding a certificate the test signs with the CA in the Secret, for
// the Pod's SPIFFE identity, requiring a client certificate from that CA; a DestinationRule
// sets ISTIO_MUTUAL, so the sidecar presents its workload certificate and verifies the
// server's identity, as it would towards a sidecar.

const (
	replicasRate        = 100
	replicasKills       = 3
	replicasSteady      = 5 * replicasRate // requests between kills
	replicasLoadBound   = 10 * time.Minute
	replicasControlIP   = "10.253.60.1" // the replicas' end of the veth pair
	replicasPodVethIP   = "10.253.60.2"
	replicasClientPodIP = "10.253.61.1"
	replicasServerPodIP = "10.253.61.11"
	replicasServerPort  = 8443
)

func TestKubernetesPilotReplicaKilled(t *testing.T) {
	ns := newNamespace(t, "replicas")
	control := framework.NewNetNS(t, "skiffcp")
	pods := &podNetwork{ns: framework.NewNetNS(t, "kubemesh")}
	framework.ConnectVeth(t, control, "cp0", netip.MustParsePrefix(replicasControlIP+"/24"),
		pods.ns, "pod0", netip.MustParsePrefix(replicasPodVethIP+"/24"))
	control.IP(t, "route", "add", "10.253.61.0/24", "via", replicasPodVethIP)

	apiServer := strings.TrimPrefix(cluster.Config.Host, "https://")
	opts := pilotOptions(t, "skiff-ca")
	opts.Args = append(opts.Args, "--log-level", "debug") // for the key scan at the end
	pilots := []*framework.Pilot{
		framework.StartPilotInNetNS(t, control, opts, apiServer), // forwarded once for both
		framework.StartPilotInNetNS(t, control, opts),
	}
	var addresses []string
	for _, p := range pilots {
		_, port, _ := net.SplitHostPort(p.XDSAddress)
		addresses = append(addresses, net.JoinHostPort(replicasControlIP, port))
	}

	// The server: a Pod, its Service and EndpointSlice, and the HTTPS server in its place.
	createService(t, ns, "secure", 9080, "http")
	createPod(t, ns, "secure-1", replicasServerPodIP, "secure", map[string]string{"app": "secure"})
	createSlice(t, ns, "secure", "secure-1", "http", net.JoinHostPort(replicasServerPodIP, fmt.Sprint(replicasServerPort)))
	server := startMeshServer(t, pods, ns, "secure")
	apply(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: %s}
spec:
  host: secure
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
`, ns))

	pods.addIP(t, replicasClientPodIP)
	client := createPod(t, ns, "client-1", replicasClientPodIP, "client", map[string]string{"app": "client"})
	node := nodeID(client)
	envoy := framework.StartEnvoyInNetNS(t, pilots[0], pods.ns, framework.NetNSEnvoyOptions{
		NodeID: node, XDSAddress: strings.Join(addresses, ","), Interception: "none",
		BootstrapArgs: []string{"--upstream-bind", replicasClientPodIP},
	})
	host := "secure." + ns + ".svc.cluster.local"
	meshURL := "http://127.0.0.1:9080/"
	pods.eventuallyRoutedTo(t, meshURL, host, nil, "secure")

	connected := func() (int, error) {
		for i, p := range pilots {
			status, body, err := monitoringGet(p, "/debug/syncz")
			if err != nil || status != http.StatusOK {
				continue // a killed replica
			}
			if err := replicaInSync(body, node); err == nil {
				return i, nil
			}
		}
		return -1, fmt.Errorf("no replica shows %s in sync", node)
	}
	var current int
	framework.Eventually(t, func() error {
		var err error
		current, err = connected()
		return err
	})

	load := framework.StartLoad(t, replicasRate, replicasLoadBound, func() error {
		got, err := pods.routedTo(meshURL, host, nil)
		if err == nil && got != "secure" {
			err = fmt.Errorf("answered by %q", got)
		}
		return err
	})
	load.WaitSent(t, replicasSteady)

	var moves []time.Duration
	for kill := 1; kill <= replicasKills; kill++ {
		before := server.clientSerials()
		victim := pilots[current]
		victim.Kill(t)
		killed := time.Now()
		var moved time.Duration
		framework.Eventually(t, func() error {
			i, err := connected()
			if err != nil {
				return err
			}
			if i == current {
				return fmt.Errorf("the killed replica %d still answers", i)
			}
			current, moved = i, time.Since(killed)
			return nil
		})
		moves = append(moves, moved)
		// The new replica issued the sidecar a new certificate, which the server, trusting
		// the Secret's root, accepts.
		framework.Eventually(t, func() error {
			if _, err := pods.routedTo(meshURL, host, nil); err != nil {
				return err
			}
			if after := server.clientSerials(); len(after) <= len(before) {
				return fmt.Errorf("the server has seen client certificates %v; want a new one from replica %d", after, current)
			}
			return nil
		})
		t.Logf("kill %d: the sidecar left the killed replica and was in sync with replica %d %v after SIGKILL; client certificates seen by the server: %d",
			kill, current, moved.Round(time.Millisecond), len(server.clientSerials()))
		restarting := time.Now()
		victim.Restart(t) // a replacement replica, for the next kill to move back to
		t.Logf("kill %d: the replacement replica was ready %v after its start", kill, time.Since(restarting).Round(time.Millisecond))
		load.WaitSent(t, replicasSteady)
	}
	result := load.Stop()
	t.Logf("load: %s", result)
	t.Logf("median over %d kills: in sync with the other replica %v after SIGKILL (max %v)",
		len(moves), medianDuration(moves).Round(time.Millisecond), slices.Max(moves).Round(time.Millisecond))
	if result.Failed > 0 || result.Skipped > 0 {
		t.Errorf("requests failed across the kills: %s; first failures: %v", result, result.Failures)
	}
	if result.Rate() < 0.9*replicasRate {
		t.Errorf("the load ran at %.1f requests/s, want about %d", result.Rate(), replicasRate)
	}
	envoy.AssertNoRejections(t)

	// Neither replica shows the CA's key (which pilot read from the Secret), or any PEM
	// private key, on its monitoring port or in its log.
	scanner := &framework.KeyScanner{}
	if err := scanner.AddPEM("CA key (Secret skiff-ca)", server.caKeyPEM); err != nil {
		t.Fatal(err)
	}
	if leaks := scanner.Scan("Secret skiff-ca's ca-key.pem", server.caKeyPEM); len(leaks) == 0 {
		t.Fatalf("the scanner does not find the CA key in its own PEM")
	}
	scannedBytes := 0
	for i, p := range pilots {
		var proxies []string // connected ones: their config dumps are fetched by POD.NAMESPACE too
		if i == current {
			proxies = []string{node}
		}
		for what, body := range p.MonitoringSources(t, proxies) {
			scannedBytes += len(body)
			for _, l := range scanner.Scan(fmt.Sprintf("replica %d %s", i, what), body) {
				t.Errorf("private key material found: %s", l)
			}
		}
	}
	t.Logf("scanned both replicas' monitoring endpoints and logs (%d kB) for the CA key", scannedBytes/1024)
}

// monitoringGet is Pilot.Get without failing the test: a killed replica does not answer.
func monitoringGet(p *framework.Pilot, path string) (int, []byte, error) {
	resp, err := framework.Send(http.MethodGet, "http://"+p.MonitoringAddress+path, "", nil)
	if err != nil {
		return 0, nil, err
	}
	return resp.Status, []byte(resp.Body), nil
}

// replicaInSync checks a replica's /debug/syncz: node is connected, was granted its identity,
// and has ACKed what was last sent of every type it asked for (sds among them).
func replicaInSync(syncz []byte, node string) error {
	var proxies []struct {
		Proxy    string `json:"proxy"`
		Identity string `json:"identity"`
		Types    map[string]struct {
			Sent     string          `json:"sent"`
			Acked    string          `json:"acked"`
			LastNack json.RawMessage `json:"last_nack"`
		} `json:"types"`
	}
	if err := json.Unmarshal(syncz, &proxies); err != nil {
		return fmt.Errorf("syncz: %w", err)
	}
	for _, p := range proxies {
		if p.Proxy != node {
			continue
		}
		if !strings.HasPrefix(p.Identity, "spiffe://") {
			return fmt.Errorf("%s: identity %q", node, p.Identity)
		}
		if _, ok := p.Types["sds"]; !ok {
			return fmt.Errorf("%s: no SDS request yet", node)
		}
		for typ, st := range p.Types {
			if st.Sent == "" || st.Acked != st.Sent || (len(st.LastNack) > 0 && string(st.LastNack) != "null") {
				return fmt.Errorf("%s, %s: sent %q, acked %q, last NACK %s", node, typ, st.Sent, st.Acked, st.LastNack)
			}
		}
		return nil
	}
	return fmt.Errorf("%s not connected", node)
}

func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// meshServer is an HTTPS server standing in for a sidecar'd workload: it presents a
// certificate for its Pod's SPIFFE identity signed by the mesh CA, requires a client
// certificate from the same CA, and remembers the client certificates it accepted.
type meshServer struct {
	caKeyPEM []byte // from Secret skiff-ca, for the key scan
	mu       sync.Mutex
	serials  []string
}

func (s *meshServer) clientSerials() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.serials)
}

// startMeshServer signs the server's certificate with the CA in Secret skiff-ca and serves
// HTTPS on the server Pod's IP in the pod network, answering with x-upstream: secure.
func startMeshServer(t *testing.T, pods *podNetwork, ns, serviceAccount string) *meshServer {
	t.Helper()
	secret, err := cluster.Kube.CoreV1().Secrets(controlPlaneNamespace).Get(ctx(t), "skiff-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("CA Secret: %v", err)
	}
	caPair, err := tls.X509KeyPair(secret.Data["ca-cert.pem"], secret.Data["ca-key.pem"])
	if err != nil {
		t.Fatalf("the CA in Secret skiff-ca: %v", err)
	}
	caCert, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secret.Data["root-cert.pem"]) {
		t.Fatalf("Secret skiff-ca holds no root-cert.pem")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := url.Parse(fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, serviceAccount))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{},
		URIs: []*url.URL{id}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caPair.PrivateKey)
	if err != nil {
		t.Fatalf("signing the server's certificate: %v", err)
	}
	s := &meshServer{caKeyPEM: secret.Data["ca-key.pem"]}
	pods.addIP(t, replicasServerPodIP)
	l := pods.ns.Listen(t, net.JoinHostPort(replicasServerPodIP, fmt.Sprint(replicasServerPort)))
	srv := &http.Server{
		ReadHeaderTimeout: framework.RequestTimeout,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: append([][]byte{der}, caPair.Certificate...), PrivateKey: key}},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    roots,
			MinVersion:   tls.VersionTLS12,
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				serial := r.TLS.PeerCertificates[0].SerialNumber.Text(16)
				s.mu.Lock()
				if !slices.Contains(s.serials, serial) {
					s.serials = append(s.serials, serial)
				}
				s.mu.Unlock()
			}
			// A new connection, so a new mTLS handshake, for every request: each one checks the
			// certificate the sidecar holds at that moment.
			w.Header().Set("Connection", "close")
			w.Header().Set("x-upstream", "secure")
			fmt.Fprintln(w, "secure")
		}),
	}
	// Served on a TLS listener of our own rather than with ServeTLS, which would insist on
	// ALPN http/1.1 or h2: a sidecar's ISTIO_MUTUAL cluster offers Istio's ALPN (istio), and a
	// server that names no protocol ignores ALPN and speaks HTTP/1.1.
	go func() { _ = srv.Serve(tls.NewListener(l, srv.TLSConfig)) }()
	t.Cleanup(func() { srv.Close() })
	return s
}
