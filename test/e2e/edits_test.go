package e2e

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestFolderEditsApplyWithoutRestart: a new endpoint and then a 50/50 VirtualService written to
// the folder reach the running Envoy, which is never restarted.
func TestFolderEditsApplyWithoutRestart(t *testing.T) {
	v1 := framework.StartUpstream(t, "127.0.0.4", "v1")
	v2 := framework.StartUpstream(t, "127.0.0.5", "v2")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "reviews.yaml", serviceEntry("reviews", port, endpoint{v1, "v1"}))
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("app-1")})
	eventuallyAnswers(t, port, "reviews", "v1")
	uptime := envoy.Stat(t, "server.uptime")

	// A second endpoint: traffic spreads over both.
	p.WriteConfig(t, "reviews.yaml", serviceEntry("reviews", port, endpoint{v1, "v1"}, endpoint{v2, "v2"}))
	framework.Eventually(t, func() error {
		got, err := count(port, "reviews", 20)
		if err == nil && (got["v1"] == 0 || got["v2"] == 0) {
			err = fmt.Errorf("answers %v: want both endpoints", got)
		}
		return err
	})

	// Make before break, as Istio's documentation asks: the subsets' clusters first, and the
	// VirtualService that uses them once Envoy has them (a route to a cluster Envoy is still
	// warming answers 503).
	p.WriteConfig(t, "subsets.yaml", subsets("reviews"))
	for _, subset := range []string{"v1", "v2"} {
		envoy.WaitStat(t, fmt.Sprintf("cluster.outbound|%d|%s|reviews.default.svc.cluster.local.update_success", port, subset), atLeast(1))
	}
	p.WriteConfig(t, "routing.yaml", split("reviews", 100))
	framework.Eventually(t, func() error {
		got, err := count(port, "reviews", 50)
		if err == nil && got["v1"] != 50 {
			err = fmt.Errorf("answers %v: want all v1", got)
		}
		return err
	})

	// Then a 50/50 split, measured once Envoy has applied the new routes.
	rds := fmt.Sprintf("http.outbound_127.0.0.1_%d.rds.%d.update_success", port, port)
	routesBefore := envoy.Stat(t, rds)
	p.WriteConfig(t, "routing.yaml", split("reviews", 50))
	envoy.WaitStat(t, rds, atLeast(routesBefore+1))
	const n = 1000
	got, err := count(port, "reviews", n)
	if err != nil {
		t.Fatal(err)
	}
	// 50% of 1,000 has a standard deviation of 1.6 points; ±6 points is nearly four of them.
	if share := 100 * float64(got["v1"]) / n; math.Abs(share-50) > 6 {
		t.Errorf("v1 got %.1f%% of %d requests (%v), want 50±6", share, n, got)
	}
	if now := envoy.Stat(t, "server.uptime"); now < uptime {
		t.Errorf("Envoy restarted: uptime went from %d to %d", uptime, now)
	}
}

// TestEndpointChangeResendsOnlyItsAssignment: changing one service's endpoints sends Envoy that
// service's ClusterLoadAssignment and leaves every other cluster's alone, over both protocols.
func TestEndpointChangeResendsOnlyItsAssignment(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			a1 := framework.StartUpstream(t, "127.0.0.6", "a1")
			a2 := framework.StartUpstream(t, "127.0.0.7", "a2")
			b := framework.StartUpstream(t, "127.0.0.8", "b")
			port := framework.FreePort(t, "127.0.0.1")
			p := framework.StartPilot(t, framework.PilotOptions{})
			p.WriteConfig(t, "a.yaml", serviceEntry("svc-a", port, endpoint{upstream: a1}))
			p.WriteConfig(t, "b.yaml", serviceEntry("svc-b", port, endpoint{upstream: b}))
			envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("app-1"), Delta: delta})
			eventuallyAnswers(t, port, "svc-a", "a1")
			eventuallyAnswers(t, port, "svc-b", "b")

			edsA := fmt.Sprintf("cluster.outbound|%d||svc-a.default.svc.cluster.local.update_success", port)
			edsB := fmt.Sprintf("cluster.outbound|%d||svc-b.default.svc.cluster.local.update_success", port)
			beforeA, beforeB := envoy.Stat(t, edsA), envoy.Stat(t, edsB)
			cdsBefore := envoy.Stat(t, "cluster_manager.cds.update_success")
			pushesBefore := p.Metric(t, "pilot_xds_pushes", map[string]string{"type": "eds"})

			p.WriteConfig(t, "a.yaml", serviceEntry("svc-a", port, endpoint{upstream: a2}))
			eventuallyAnswers(t, port, "svc-a", "a2")
			envoy.WaitStat(t, edsA, atLeast(beforeA+1))
			if got := envoy.Stat(t, edsB); got != beforeB {
				t.Errorf("svc-b's assignment was re-sent: %s went from %d to %d", edsB, beforeB, got)
			}
			if got := envoy.Stat(t, "cluster_manager.cds.update_success"); got != cdsBefore {
				t.Errorf("an endpoint change re-sent clusters: cds.update_success %d → %d", cdsBefore, got)
			}
			if got := p.Metric(t, "pilot_xds_pushes", map[string]string{"type": "eds"}); got != pushesBefore+1 {
				t.Errorf("pilot sent %v EDS responses for one endpoint change, want 1", got-pushesBefore)
			}
		})
	}
}

// TestBrokenEditKeepsServing: a broken file leaves traffic on the last good configuration and
// the error shows in pilot's log, metric and debug endpoint; fixing it clears the error.
func TestBrokenEditKeepsServing(t *testing.T) {
	v1 := framework.StartUpstream(t, "127.0.0.9", "v1")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	good := serviceEntry("reviews", port, endpoint{upstream: v1})
	p.WriteConfig(t, "reviews.yaml", good)
	framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("app-1")})
	eventuallyAnswers(t, port, "reviews", "v1")

	cases := []struct {
		name, content, wantError string
	}{
		{"syntax", good + "  - [unclosed\n", "reviews.yaml"},
		{"unknown field", strings.Replace(good, "resolution: STATIC", "resolution: STATIC\n  resolutoin: DNS", 1), "resolutoin"},
		{"bad value", strings.Replace(good, fmt.Sprintf("number: %d", port), "number: 70000", 1), "spec.ports[0].number"},
	}
	for _, c := range cases {
		p.WriteConfig(t, "reviews.yaml", c.content)
		framework.Eventually(t, func() error {
			_, body := p.Get(t, "/debug/config_errors")
			if !strings.Contains(string(body), c.wantError) {
				return fmt.Errorf("%s: /debug/config_errors lacks %q: %s", c.name, c.wantError, body)
			}
			return nil
		})
		if got := p.Metric(t, "skiff_config_errors", nil); got != 1 {
			t.Errorf("%s: skiff_config_errors = %v, want 1", c.name, got)
		}
		if !strings.Contains(p.Log(), c.wantError) {
			t.Errorf("%s: pilot's log does not mention %q", c.name, c.wantError)
		}
		if got, err := get(port, "reviews"); err != nil || got != "v1" {
			t.Errorf("%s: traffic stopped with a broken file: %q, %v", c.name, got, err)
		}
	}
	p.WriteConfig(t, "reviews.yaml", good)
	framework.Eventually(t, func() error {
		if got := p.Metric(t, "skiff_config_errors", nil); got != 0 {
			return fmt.Errorf("skiff_config_errors = %v after the fix", got)
		}
		return nil
	})
	eventuallyAnswers(t, port, "reviews", "v1")
}
