package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// Pilot killed under load (issue 13, point 1): two sidecars with mTLS carry a steady 100
// requests/s while pilot is killed with SIGKILL and started again in place (same flags, ports,
// config folder and --ca-dir), three times, and a fourth time right after a configuration
// change reached it. Envoy keeps forwarding on what it holds while pilot is gone; the test
// asserts that not one request fails, that every restart keeps the CA root (the file, the
// ROOTCA each Envoy trusts, and the chain the server sidecar presents), and that both proxies
// are back in sync with the new pilot, measuring how long that takes.

const (
	// restartRate is the load through the mesh, in requests per second.
	restartRate = 100
	// restartLoadBound stops the load by itself should the test not get to stopping it.
	restartLoadBound = 10 * time.Minute
	// restartRounds is how many plain kill-and-restart rounds run before the one during a push.
	restartRounds = 3
	// restartHeader is the response header the change pushed in the last round adds.
	restartHeader = "x-skiff-restart"
	// restartDownRequests is how many requests must have gone through with pilot dead before
	// it is started again (2 s of load), restartSteadyRequests how many after a resync before
	// the next kill.
	restartDownRequests   = 2 * restartRate
	restartSteadyRequests = 2 * restartRate
	// restartBulkServices is how many services the change of the last round adds beside its
	// header, so that the push pilot is killed in takes a while: Envoy applies a thousand new
	// clusters and their endpoints before it ACKs.
	restartBulkServices = 1000
)

// restartPlacement is the mtls_test.go mesh on addresses of its own, 127.0.31.0/24.
func restartPlacement(caDir string) mtlsPlacement {
	return mtlsPlacement{
		clientIP: "127.0.31.1", serverIP: "127.0.31.2", serverAppIP: "127.0.31.12",
		namespace: "default", serverApp: "server",
		// Debug: the test kills pilot on its "pushed" line.
		pilotArgs: []string{"--ca-dir", caDir, "--log-level", "debug"},
	}
}

// restartRound is what one kill and restart measured.
type restartRound struct {
	name string
	// ready is from starting the pilot again to its /ready; resync from /ready to both
	// proxies having ACKed every type at the new pilot's versions, reconnection included.
	ready, resync time.Duration
	// down is how long pilot was dead, and the requests sent meanwhile.
	down         time.Duration
	sentWhenDown int
	leafSerial   string
	// latencies of the requests sent from the kill to the end of the steady load after the
	// resync.
	latencies framework.Latencies
}

func TestRestartUnderLoad(t *testing.T) {
	caDir := t.TempDir()
	place := restartPlacement(caDir)
	m := startMTLSMeshAt(t, place, "HTTP", securitySTRICT(place))
	wantClientIdentity(t, m.throughMesh(t))
	nodes := []string{m.client.NodeID, m.server.NodeID}
	framework.Eventually(t, func() error { return proxiesResynced(m.pilot.Syncz(t), nodes) })

	rootPEM := caRoot(t, caDir)
	roots, rootSerial := parseRoot(t, rootPEM)
	firstLeaf := presentedLeaf(t, m, roots)
	t.Logf("CA root serial %s; the server sidecar presents leaf %s", rootSerial, firstLeaf)

	load := framework.StartLoad(t, restartRate, restartLoadBound, func() error {
		resp, err := m.meshGet(http.MethodGet)
		if err != nil {
			return err
		}
		if resp.Status != http.StatusOK || resp.Body != m.app.Name {
			return fmt.Errorf("%d %q", resp.Status, resp.Body)
		}
		return nil
	})
	// Some traffic before the first kill, so that the load is steady when pilot dies.
	framework.Eventually(t, func() error {
		if r := load.Snapshot(); r.Sent < restartRate {
			return fmt.Errorf("%d requests sent so far", r.Sent)
		}
		return nil
	})

	var rounds []restartRound
	prevLeaf := firstLeaf
	for i := 1; i <= restartRounds; i++ {
		killed := time.Now()
		m.pilot.Kill(t)
		round := restartAndResync(t, m, load, nodes)
		round.name = fmt.Sprintf("kill %d", i)
		round.leafSerial = checkSameRoot(t, m, caDir, rootPEM, roots, rootSerial, prevLeaf)
		prevLeaf = round.leafSerial
		load.WaitSent(t, restartSteadyRequests)
		round.latencies = load.LatenciesBetween(killed, time.Now())
		rounds = append(rounds, round)
	}

	// The fourth kill lands as pilot pushes a change: the moment it logs the push of the new
	// configuration (its caches updated, responses on their way to the streams), before the
	// proxies have applied and ACKed it. The change adds a response header to the server's
	// route and a thousand services, whose clusters and endpoints Envoy takes a while to apply.
	// The restarted pilot must serve the change.
	cdsStats := func() string {
		st := m.client.Stats(t)
		return fmt.Sprintf("CDS responses received %d, accepted %d", st["cluster_manager.cds.update_attempt"], st["cluster_manager.cds.update_success"])
	}
	cdsBefore := cdsStats()
	pushedBefore := strings.Count(m.pilot.Log(), `msg=pushed`)
	m.pilot.WriteConfig(t, "restart-change.yaml", restartChange(place, m.svcPort))
	waitLogCount(t, m.pilot, `msg=pushed`, pushedBefore+1)
	killed := time.Now()
	m.pilot.Kill(t)
	t.Logf("killed during the push: the client Envoy had %s before the change, %s when pilot died", cdsBefore, cdsStats())
	round := restartAndResync(t, m, load, nodes)
	round.name = "kill during a push"
	round.leafSerial = checkSameRoot(t, m, caDir, rootPEM, roots, rootSerial, prevLeaf)
	framework.Eventually(t, func() error {
		resp, err := m.meshGet(http.MethodGet)
		if err != nil {
			return err
		}
		if got := resp.Header.Get(restartHeader); got != "pushed" {
			return fmt.Errorf("%s: %q, want the change pilot was killed pushing (pushed)", restartHeader, got)
		}
		return nil
	})
	if clusters := m.client.Stat(t, "cluster_manager.active_clusters"); clusters < restartBulkServices {
		t.Errorf("the client Envoy has %d clusters after the restart, want the change's %d services' among them", clusters, restartBulkServices)
	}
	load.WaitSent(t, restartSteadyRequests)
	round.latencies = load.LatenciesBetween(killed, time.Now())
	rounds = append(rounds, round)

	result := load.Stop()
	t.Logf("load: %s", result)
	var resyncs, readies []time.Duration
	for _, r := range rounds {
		t.Logf("%-20s pilot dead %v (%d requests sent meanwhile); ready %v after its start; proxies resynced %v after ready; leaf %s; %s",
			r.name, r.down.Round(time.Millisecond), r.sentWhenDown, r.ready.Round(time.Millisecond), r.resync.Round(time.Millisecond),
			r.leafSerial, r.latencies)
		resyncs, readies = append(resyncs, r.resync), append(readies, r.ready)
	}
	t.Logf("medians over %d restarts: pilot ready %v after its start; every proxy resynced %v after ready (max %v)",
		len(rounds), median(readies).Round(time.Millisecond), median(resyncs).Round(time.Millisecond), slices.Max(resyncs).Round(time.Millisecond))
	if result.Failed > 0 || result.Skipped > 0 {
		t.Errorf("requests through the mesh failed across the restarts: %s; first failures: %v", result, result.Failures)
	}
	if result.Rate() < 0.9*restartRate {
		t.Errorf("the load ran at %.1f requests/s, want about %d", result.Rate(), restartRate)
	}
	m.client.AssertNoRejections(t)
	m.server.AssertNoRejections(t)
}

// restartAndResync waits, with pilot dead, until both Envoys have seen it go and
// restartDownRequests more requests have been sent, starts pilot again and waits until every
// proxy of nodes is in sync with it.
func restartAndResync(t *testing.T, m *mtlsMesh, load *framework.Load, nodes []string) restartRound {
	t.Helper()
	killed, sentAtKill := time.Now(), load.Snapshot().Sent
	for _, e := range []*framework.Envoy{m.client, m.server} {
		e.WaitStat(t, "control_plane.connected_state", func(v uint64) bool { return v == 0 })
	}
	load.WaitSent(t, restartDownRequests)
	start := time.Now()
	sentWhenDown := load.Snapshot().Sent - sentAtKill
	m.pilot.Restart(t)
	ready := time.Now()
	var synced time.Time
	framework.Eventually(t, func() error {
		// /debug/syncz of the new pilot only knows streams opened to it, so every version in
		// it is one the new pilot sent.
		status, body, err := getMonitoring(m.pilot, "/debug/syncz")
		if err != nil || status != http.StatusOK {
			return fmt.Errorf("/debug/syncz: %d, %v", status, err)
		}
		if err := proxiesResynced(body, nodes); err != nil {
			return err
		}
		synced = time.Now()
		return nil
	})
	return restartRound{down: start.Sub(killed), sentWhenDown: sentWhenDown, ready: ready.Sub(start), resync: synced.Sub(ready)}
}

// getMonitoring is Pilot.Get without failing the test, for use inside Eventually.
func getMonitoring(p *framework.Pilot, path string) (int, []byte, error) {
	resp, err := framework.Send(http.MethodGet, "http://"+p.MonitoringAddress+path, "", nil)
	if err != nil {
		return 0, nil, err
	}
	return resp.Status, []byte(resp.Body), nil
}

// proxiesResynced checks /debug/syncz: each node is connected, was granted its workload
// identity, and has ACKed what was last sent of every type it asked for (cds, lds and sds at
// least; eds and rds where it has such clusters and routes), with no NACK.
func proxiesResynced(syncz []byte, nodes []string) error {
	for _, node := range nodes {
		p, err := synczEntry(syncz, node)
		if err != nil {
			return err
		}
		if p == nil {
			return fmt.Errorf("proxy %s not connected yet", node)
		}
		if !strings.HasPrefix(p.Identity, "spiffe://") {
			return fmt.Errorf("proxy %s: identity %q, want a SPIFFE ID granted", node, p.Identity)
		}
		for _, typ := range []string{"cds", "lds", "sds"} {
			if _, ok := p.Types[typ]; !ok {
				return fmt.Errorf("proxy %s: no %s request yet", node, typ)
			}
		}
		// Every type the proxy asked for (eds and rds too, where it has such clusters and
		// routes) must have been answered and ACKed.
		for typ, st := range p.Types {
			switch {
			case st.Sent == "":
				return fmt.Errorf("proxy %s, %s: nothing sent yet", node, typ)
			case st.Acked != st.Sent:
				return fmt.Errorf("proxy %s, %s: sent %s, acked %q", node, typ, st.Sent, st.Acked)
			case len(st.LastNack) > 0 && string(st.LastNack) != "null":
				return fmt.Errorf("proxy %s, %s: NACKed: %s", node, typ, st.LastNack)
			}
		}
	}
	return nil
}

// checkSameRoot checks, after a restart, that the CA root is the one of the first run: in the
// CA folder, in what each Envoy trusts (ROOTCA), and as the root of the chain the server
// sidecar presents, which must be a new leaf, issued by the restarted pilot. It returns that
// leaf's serial.
func checkSameRoot(t *testing.T, m *mtlsMesh, caDir, rootPEM string, roots *x509.CertPool, rootSerial, prevLeaf string) string {
	t.Helper()
	if now := caRoot(t, caDir); now != rootPEM {
		t.Errorf("the root in %s changed across the restart", caDir)
	}
	for _, e := range []*framework.Envoy{m.client, m.server} {
		framework.Eventually(t, func() error {
			_, cas, err := certSerials(e)
			if err != nil {
				return err
			}
			if len(cas) == 0 || slices.ContainsFunc(cas, func(s string) bool { return !sameSerial(s, rootSerial) }) {
				return fmt.Errorf("Envoy %s trusts CAs %v; want only the root %s", e.NodeID, cas, rootSerial)
			}
			return nil
		})
	}
	var leaf string
	framework.Eventually(t, func() error {
		var err error
		if leaf, err = serverLeaf(m, roots); err != nil {
			return err
		}
		if leaf == prevLeaf {
			return fmt.Errorf("the server sidecar still presents leaf %s, issued before the restart", leaf)
		}
		return nil
	})
	return leaf
}

// presentedLeaf is serverLeaf failing the test, waiting until the sidecar presents a chain.
func presentedLeaf(t *testing.T, m *mtlsMesh, roots *x509.CertPool) string {
	t.Helper()
	var leaf string
	framework.Eventually(t, func() error {
		var err error
		leaf, err = serverLeaf(m, roots)
		return err
	})
	return leaf
}

// serverLeaf opens a TLS connection to the server sidecar's inbound listener, as the client
// sidecar would, verifies the chain it presents against roots, and returns the leaf's serial
// (hex). The handshake is not finished with a certificate of ours, so the sidecar refuses the
// connection afterwards; the chain was seen by then.
func serverLeaf(m *mtlsMesh, roots *x509.CertPool) (string, error) {
	var leaf string
	var verifyErr error
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"istio-http/1.1", "istio", "http/1.1"},
		// A workload certificate names a SPIFFE ID, not a host: the chain is verified below.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, 0, len(raw))
			for _, der := range raw {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					verifyErr = err
					return err
				}
				certs = append(certs, c)
			}
			if len(certs) == 0 {
				verifyErr = fmt.Errorf("no certificate presented")
				return verifyErr
			}
			intermediates := x509.NewCertPool()
			for _, c := range certs[1:] {
				intermediates.AddCert(c)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates}); err != nil {
				verifyErr = fmt.Errorf("the server sidecar's chain does not verify against the original root: %w", err)
				return verifyErr
			}
			leaf = certs[0].SerialNumber.Text(16)
			return nil
		},
	}
	dialer := &net.Dialer{Timeout: framework.RequestTimeout}
	conn, err := tls.DialWithDialer(dialer, "tcp", net.JoinHostPort(m.place.serverIP, fmt.Sprint(m.inPort)), cfg)
	if conn != nil {
		conn.Close()
	}
	switch {
	case verifyErr != nil:
		return "", verifyErr
	case leaf == "":
		return "", fmt.Errorf("no chain seen from the server sidecar: %v", err)
	}
	return leaf, nil
}

// parseRoot returns the root PEM as a pool and its serial (hex).
func parseRoot(t *testing.T, rootPEM string) (*x509.CertPool, string) {
	t.Helper()
	block, _ := pem.Decode([]byte(rootPEM))
	if block == nil {
		t.Fatalf("the CA root is not PEM: %q", rootPEM)
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("the CA root: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool, root.SerialNumber.Text(16)
}

// sameSerial compares serials as Envoy (hex, maybe with leading zeros) and Go print them.
func sameSerial(a, b string) bool {
	norm := func(s string) string { return strings.TrimLeft(strings.ToLower(s), "0") }
	return norm(a) == norm(b)
}

// restartChange is the change pilot is killed while taking in: a response header on the
// server's route, which only the new configuration adds, and restartBulkServices services on
// port 80 (no traffic goes to them; their one endpoint listens nowhere).
func restartChange(p mtlsPlacement, port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  hosts:
  - %[3]s
  http:
  - headers:
      response:
        set:
          %[4]s: pushed
    route:
    - destination:
        host: %[3]s
        port:
          number: %[5]d
`, p.serverApp, p.namespace, p.host(), restartHeader, port)
	for i := range restartBulkServices {
		fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: bulk-%[1]d
  namespace: %[2]s
spec:
  hosts:
  - bulk-%[1]d.%[2]s.svc.cluster.local
  location: MESH_INTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: %[3]s
    ports:
      http: 9
`, i, p.namespace, p.serverAppIP)
	}
	return b.String()
}

// waitLogCount polls the pilot's log, more often than Eventually does (the moment matters
// here), until substr appears n times.
func waitLogCount(t *testing.T, p *framework.Pilot, substr string, n int) {
	t.Helper()
	deadline := time.Now().Add(framework.Patience)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for strings.Count(p.Log(), substr) < n {
		if time.Now().After(deadline) {
			t.Fatalf("pilot's log has %q %d times after %v, want %d", substr, strings.Count(p.Log(), substr), framework.Patience, n)
		}
		<-tick.C
	}
}

// median of a non-empty list.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
