package main

import (
	"strings"
	"testing"
	"time"
)

// TestHostileAttacks runs every attack, small, against a real pilot built from this checkout:
// the attackers get the status that names their fault, pilot counts them, and the
// well-behaved proxies get every VirtualService change meanwhile.
func TestHostileAttacks(t *testing.T) {
	pilot := buildPilot(t)
	const proxies = 5
	for _, tc := range []struct {
		attack    string
		attackers int
		// maxStreams is pilot's stream limit, 0 for its default.
		maxStreams int
		// wantOutcome is part of an outcome the attackers must have seen; closed, reasons
		// (separated by |) pilot must have counted in skiff_xds_streams_closed_total, refused
		// one in skiff_sds_refusals_total.
		wantOutcome, closed, refused string
	}{
		// A stuck stream is closed when a Send blocks, or when a response that fitted in its
		// windows goes unanswered: which one depends on the order its responses came in.
		{attack: "never-read", attackers: 2, wantOutcome: "not reading its ADS stream", closed: "send_timeout|unanswered"},
		{attack: "garbage", attackers: 1, wantOutcome: "InvalidArgument: ADS request is not a valid DiscoveryRequest", closed: "undecodable"},
		{attack: "unknown-type", attackers: 1, wantOutcome: "Unimplemented: type type.googleapis.com/skiff.hostile.NoSuchType is not served"},
		{attack: "huge-names", attackers: 1, wantOutcome: "ResourceExhausted: ADS request names more than N resources", closed: "too_many_names"},
		{attack: "streams", attackers: 20, maxStreams: proxies + 10, wantOutcome: "ResourceExhausted: pilot serves at most N ADS streams", closed: "too_many_streams"},
		{attack: "spoof", attackers: 2, wantOutcome: "default (the victim's certificate) never sent", refused: "address_mismatch"},
	} {
		t.Run(tc.attack, func(t *testing.T) {
			res, err := RunHostile(t.Context(), HostileConfig{
				Attack: tc.attack, Attackers: tc.attackers, Rate: 20,
				Proxies: proxies, Services: 300, Changes: 2,
				// The stuck streams must be stuck while the changes are measured: 300 services'
				// clusters are more than their 64 kB windows and grpc-go's write quota.
				Settle: 500 * time.Millisecond, Gap: 100 * time.Millisecond,
				PilotBinary: pilot, SendTimeout: 2 * time.Second, MaxStreams: tc.maxStreams,
				Timeout: runTimeout(t),
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := 2 * proxies; res.Route.Count != want || res.Route.Expected != want {
				t.Errorf("VirtualService changes reached %d of %d (proxy, change) pairs during the attack, want %d", res.Route.Count, res.Route.Expected, want)
			}
			found := false
			for outcome, n := range res.Outcomes {
				if strings.Contains(outcome, tc.wantOutcome) && n > 0 {
					found = true
				}
				if strings.Contains(outcome, "BREACH") {
					t.Errorf("%d × %s", n, outcome)
				}
			}
			if !found {
				t.Errorf("no attacker saw %q; outcomes: %v", tc.wantOutcome, res.Outcomes)
			}
			var closed float64
			for reason := range strings.SplitSeq(tc.closed, "|") {
				closed += res.Closed[reason]
			}
			if tc.closed != "" && closed == 0 {
				t.Errorf("pilot counted no stream closed for %s: %v", tc.closed, res.Closed)
			}
			if tc.refused != "" && res.Refusals[tc.refused] == 0 {
				t.Errorf("pilot counted no certificate refused for %s: %v", tc.refused, res.Refusals)
			}
			if res.RSSPeak == 0 {
				t.Error("pilot's RSS was not read")
			}
		})
	}
}
