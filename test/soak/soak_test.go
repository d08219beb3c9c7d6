// Package soak runs pilot under continuous configuration churn with traffic flowing, and
// measures it: a folder-mode mesh of a client and three server workloads, each behind a real
// Envoy sidecar with mTLS (certificates from pilot's CA over SDS), while the test rewrites the
// mesh's files all the time (VirtualService weights, the service's endpoints, the
// DestinationRule's traffic policy, PeerAuthentication and AuthorizationPolicies) and sends
// requests through the client's sidecar. Every version of the mesh answers every request 200,
// so any other answer is a failure the configuration did not ask for.
//
// The run fails on any such failure, on any rejected xDS update (NACK), on a configuration
// file pilot refused, and, in runs of 5 minutes or more, when pilot's resident memory grows by
// more than half from the first third of the run to the last. It logs pilot's RSS over time.
//
// SKIFF_SOAK is how long the churn lasts (a Go duration, 30s when unset: the version `make
// test` runs); `make soak` runs it for 10 minutes. SKIFF_SOAK_SEED replays a run's edits.
//
// AuthorizationPolicy edits reach the servers' open connections over ECDS; PeerAuthentication
// edits change their listeners, and Envoy serves connections accepted before a listener change
// on their old filter chains while it drains them. Every policy allows the traffic, so the
// soak does not depend on when a policy reaches an open connection.
package soak

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

const (
	// editEvery is how often a file of the mesh is rewritten: each edit is a push of its
	// own (pilot's debounce waits for 100 ms of quiet).
	editEvery = 500 * time.Millisecond
	// requestRate is the client's requests per second, over requestWorkers connections.
	requestRate    = 40
	requestWorkers = 4
	// rssGrowthLimit is how much pilot's RSS may grow from the first third of a long run to
	// the last, as a fraction, beyond rssGrowthSlack.
	rssGrowthLimit = 0.5
	rssGrowthSlack = 32 << 20
	// longRun is the shortest run whose RSS curve is judged.
	longRun = 5 * time.Minute
)

func TestSoak(t *testing.T) {
	duration := 30 * time.Second
	if v := os.Getenv("SKIFF_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SKIFF_SOAK=%q: want a positive duration such as 10m", v)
		}
		duration = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SKIFF_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SKIFF_SOAK_SEED=%q: want a number", v)
		}
		seed = s
	}
	t.Logf("soak: %s of edits every %s, %d requests/s; SKIFF_SOAK_SEED=%d replays the edits", duration, editEvery, requestRate, seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	m := &mesh{svcPort: framework.FreePort(t, clientIP)}
	for i, name := range []string{"a", "b", "c"} {
		ip := fmt.Sprintf("127.0.21.%d", 2+i)
		app := framework.StartUpstream(t, fmt.Sprintf("127.0.21.%d", 12+i), "server-"+name)
		m.servers = append(m.servers, server{name: name, ip: ip, inPort: framework.FreePort(t, ip), appAddr: app.Address()})
	}
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "static.yaml", m.staticConfig())
	for _, kind := range editKinds {
		e := kind(m, rng)
		p.WriteConfig(t, e.file, e.content)
	}
	var envoys []*framework.Envoy
	for _, s := range m.servers {
		envoys = append(envoys, framework.StartEnvoy(t, p, framework.EnvoyOptions{
			NodeID: fmt.Sprintf("sidecar~%s~server-%s.%s~%s.svc.cluster.local", s.ip, s.name, namespace, namespace),
		}))
	}
	envoys = append(envoys, framework.StartEnvoy(t, p, framework.EnvoyOptions{
		NodeID: fmt.Sprintf("sidecar~%s~client-1.%s~%s.svc.cluster.local", clientIP, namespace, namespace),
	}))
	url := fmt.Sprintf("http://%s:%d/soak/", clientIP, m.svcPort)
	framework.Eventually(t, func() error {
		resp, err := framework.Send(http.MethodGet, url+"first", host, nil)
		if err != nil {
			return err
		}
		if resp.Status != http.StatusOK {
			return fmt.Errorf("first request through the mesh: %d %q", resp.Status, resp.Body)
		}
		return nil
	})

	traffic := startTraffic(url)
	start := time.Now()
	var (
		samples  []sample
		edits    int
		nacked   bool
		kind     int
		deadline = time.After(duration)
		editTick = time.NewTicker(editEvery)
		// About twenty rows whatever the duration, at most one every 5 s.
		sampleTick = time.NewTicker(max(duration/20, 5*time.Second))
	)
	defer editTick.Stop()
	defer sampleTick.Stop()
	take := func() {
		s := takeSample(t, p, envoys, traffic, time.Since(start), edits)
		samples = append(samples, s)
		if s.nacks > 0 && !nacked {
			nacked = true
			t.Errorf("after %s and %d edits: %d rejected xDS updates (the Envoys' logs say which)", s.at.Round(time.Second), edits, s.nacks)
		}
	}
	take()
churn:
	for {
		select {
		case <-editTick.C:
			e := editKinds[kind%len(editKinds)](m, rng)
			kind++
			traffic.lastEdit.Store(&e.what)
			p.WriteConfig(t, e.file, e.content)
			edits++
		case <-sampleTick.C:
			take()
		case <-deadline:
			break churn
		}
	}
	// The last edits reach every proxy, and every proxy takes them.
	status, body := p.Get(t, "/debug/wait?timeout=2m")
	if status != http.StatusOK || strings.Contains(string(body), `"rejected"`) {
		t.Errorf("after the last edit, /debug/wait: %d %s", status, body)
	}
	traffic.stop()
	take()

	report(t, samples, traffic)
	if n := p.Metric(t, "skiff_config_reloads_total", map[string]string{"result": "error"}); n > 0 {
		t.Errorf("pilot refused %v configuration reloads; every edit is valid", n)
	}
	if failed := traffic.failed.Load(); failed > 0 {
		t.Errorf("%d of %d requests failed; the configuration never asked for a failure. The first ones:\n%s",
			failed, traffic.sent.Load(), strings.Join(traffic.firstFailures(), "\n"))
	}
	if traffic.sent.Load() < int64(duration.Seconds())*requestRate/2 {
		t.Errorf("only %d requests in %s: the traffic did not keep up", traffic.sent.Load(), duration)
	}
	if duration >= longRun {
		checkRSSFlat(t, samples)
	}
	checkServersSawTheMesh(t, envoys[:len(m.servers)])
}

// checkServersSawTheMesh checks, from the server sidecars' stats, that the traffic was what
// the soak claims: over mTLS, through the servers' authorization filters, none of it denied.
func checkServersSawTheMesh(t *testing.T, servers []*framework.Envoy) {
	t.Helper()
	var handshakes, allowed, denied uint64
	for _, e := range servers {
		for name, v := range e.Stats(t) {
			switch {
			case strings.HasPrefix(name, "listener.") && strings.HasSuffix(name, ".ssl.handshake"):
				handshakes += v
			case strings.HasSuffix(name, ".rbac.allowed"):
				allowed += v
			case strings.HasSuffix(name, ".rbac.denied"):
				denied += v
			}
		}
	}
	t.Logf("server sidecars: %d TLS handshakes, %d requests allowed by RBAC, %d denied", handshakes, allowed, denied)
	if handshakes == 0 || allowed == 0 || denied > 0 {
		t.Errorf("the servers' sidecars saw %d TLS handshakes and %d allowed, %d denied requests: want mTLS, and every request allowed", handshakes, allowed, denied)
	}
}

// sample is one row of the soak's record.
type sample struct {
	at              time.Duration
	rss, heap       float64 // pilot's resident memory and in-use heap, bytes
	sent, failed    int64
	edits           int
	nacks           uint64 // rejected updates over every Envoy
	pilotRejections float64
}

func takeSample(t *testing.T, p *framework.Pilot, envoys []*framework.Envoy, tr *traffic, at time.Duration, edits int) sample {
	t.Helper()
	samples := p.Metrics(t)
	value := func(name string) float64 {
		for _, s := range samples {
			if s.Name == name {
				return s.Value
			}
		}
		return 0
	}
	var rejections float64
	for _, s := range samples {
		if s.Name == "pilot_total_xds_rejects" {
			rejections += s.Value
		}
	}
	s := sample{
		at: at, rss: value("process_resident_memory_bytes"), heap: value("go_memstats_heap_inuse_bytes"),
		sent: tr.sent.Load(), failed: tr.failed.Load(), edits: edits, pilotRejections: rejections,
	}
	for _, e := range envoys {
		for name, v := range e.Stats(t) {
			if strings.HasSuffix(name, "update_rejected") {
				s.nacks += v
			}
		}
	}
	if rejections > 0 && s.nacks == 0 {
		s.nacks = uint64(rejections)
	}
	return s
}

// report logs the soak's record as a table.
func report(t *testing.T, samples []sample, tr *traffic) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%8s  %9s  %10s  %6s  %9s  %7s  %5s\n", "time", "pilot RSS", "pilot heap", "edits", "requests", "failed", "NACKs")
	for _, s := range samples {
		fmt.Fprintf(&b, "%8s  %5.1f MiB  %6.1f MiB  %6d  %9d  %7d  %5d\n",
			s.at.Round(time.Second), s.rss/(1<<20), s.heap/(1<<20), s.edits, s.sent, s.failed, s.nacks)
	}
	fmt.Fprintf(&b, "answers by server: %s", tr.answersByServer())
	t.Logf("soak record:\n%s", b.String())
}

// checkRSSFlat compares pilot's largest RSS in the last third of the run with the first third.
func checkRSSFlat(t *testing.T, samples []sample) {
	t.Helper()
	end := samples[len(samples)-1].at
	var first, last float64
	for _, s := range samples {
		switch {
		case s.at <= end/3:
			first = max(first, s.rss)
		case s.at >= 2*end/3:
			last = max(last, s.rss)
		}
	}
	if last > first*(1+rssGrowthLimit)+rssGrowthSlack {
		t.Errorf("pilot's RSS grew from %.1f MiB (largest in the first third) to %.1f MiB (in the last third)", first/(1<<20), last/(1<<20))
	}
}
