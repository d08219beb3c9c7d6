package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestSmoke runs the smoke scenario end to end against a real pilot built from this checkout:
// every proxy syncs, every change reaches every proxy, and pilot counts exactly the NACKs the
// proxies sent (none unless asked for).
func TestSmoke(t *testing.T) {
	pilot := buildPilot(t)
	for _, tc := range []struct {
		name          string
		delta, nack   float64
		wantNacksSent int64
	}{
		{name: "sotw"},
		{name: "delta-and-nacks", delta: 0.5, nack: 0.2, wantNacksSent: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := scenarios["smoke"]
			logFile := filepath.Join(t.TempDir(), "pilot.log")
			cfg := Config{
				Scenario: "smoke", Proxies: s.proxies, Services: s.services, Workloads: s.workloads,
				DeltaFraction: tc.delta, NackFraction: tc.nack, Changes: 3,
				PilotBinary: pilot, PilotLog: logFile,
				StreamsPerConn: 8, Concurrency: 10,
				// Quiet times only separate the changes; the waits themselves poll.
				Settle: 200 * time.Millisecond, Gap: 100 * time.Millisecond,
				Timeout: runTimeout(t), ChangeTimeout: runTimeout(t),
			}
			res, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					out, _ := os.ReadFile(logFile)
					t.Logf("pilot output:\n%s", out)
				}
			})
			t.Log(res.TableRow())
			if res.Sync.Count != cfg.Proxies {
				t.Errorf("synced %d of %d proxies (%d reconnects: %v)", res.Sync.Count, cfg.Proxies, res.Reconnects, res.StreamErrors)
			}
			for _, c := range []struct {
				name string
				s    ChangeStats
			}{{"VirtualService", res.RouteChange}, {"endpoint", res.EndpointChange}} {
				want := cfg.Changes * cfg.Proxies
				if c.s.Expected != want || c.s.Count != want || len(c.s.Errors) > 0 {
					t.Errorf("%s changes reached %d of %d (proxy, change) pairs, want %d: %v", c.name, c.s.Count, c.s.Expected, want, c.s.Errors)
				}
			}
			if res.NacksSent != tc.wantNacksSent {
				t.Errorf("proxies sent %d NACKs, want %d", res.NacksSent, tc.wantNacksSent)
			}
			var rejects float64
			for _, n := range res.PilotRejects {
				rejects += n
			}
			if rejects != float64(res.NacksSent) {
				t.Errorf("pilot_total_xds_rejects = %v (%v), want the %d NACKs sent", rejects, res.PilotRejects, res.NacksSent)
			}
			for _, typ := range []string{"cds", "eds", "lds", "rds"} {
				if res.Responses[typ] < int64(cfg.Proxies) || res.Bytes[typ] == 0 {
					t.Errorf("%s: %d responses, %d bytes: want at least one per proxy", typ, res.Responses[typ], res.Bytes[typ])
				}
			}
			if res.RSSAfterSync == 0 {
				t.Errorf("pilot RSS was not read")
			}
		})
	}
}

// buildPilot builds cmd/pilot into a temporary folder. No bound of its own: a cold build on a
// busy machine takes minutes, and go test's -timeout is the limit.
func buildPilot(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pilot")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/skiffmesh/skiff/cmd/pilot")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pilot: %v\n%s", err, out)
	}
	return bin
}

// runTimeout bounds a run by the test's own deadline, leaving time to report, so that a
// wedged run fails with its figures rather than as a go test panic.
func runTimeout(t *testing.T) time.Duration {
	if d, ok := t.Deadline(); ok {
		return max(time.Until(d)-30*time.Second, time.Second)
	}
	return 10 * time.Minute
}

// durations turns milliseconds into durations, for table-style tests.
func durations(msList []int) []time.Duration {
	out := make([]time.Duration, len(msList))
	for i, m := range msList {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}
