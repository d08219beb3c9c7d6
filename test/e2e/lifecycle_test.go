package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestRedirectModeIsAccepted: a captured sidecar (INTERCEPTION_MODE REDIRECT) gets
// virtualOutbound on 15001 and non-binding service listeners, and Envoy accepts them. A
// connection made straight to 15001 has no other original destination, so it lands on the
// blackhole chain and is closed rather than looping.
func TestRedirectModeIsAccepted(t *testing.T) {
	up := framework.StartUpstream(t, "127.0.0.11", "reviews")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", serviceEntry("reviews", port, endpoint{upstream: up}))
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: sidecarNode("captured-1"), Interception: "redirect"})

	// The service's listener arrives once pilot has read the file (debounced).
	framework.Eventually(t, func() error {
		dump := string(envoy.ConfigDump(t))
		for _, want := range []string{`"name": "virtualOutbound"`, `"use_original_dst": true`, `"bind_to_port": false`} {
			if !strings.Contains(dump, want) {
				return fmt.Errorf("config_dump lacks %s", want)
			}
		}
		return nil
	})

	connectionToItselfDropped(t, envoy, "virtualOutbound", 15001)
}

// connectionToItselfDropped connects to a virtual listener's own port, which capture would
// send straight back to it: the connection must be closed by the blackhole chain, not loop.
func connectionToItselfDropped(t *testing.T, envoy *framework.Envoy, listener string, port int) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatalf("%s is not listening: %v", listener, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
		t.Errorf("a connection to %d itself: read %d bytes, %v; want it closed", port, n, err)
	}
	envoy.WaitStat(t, "tcp.BlackHoleCluster.downstream_cx_total", atLeast(1))
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestEnvoySurvivesPilotRestart: Envoy keeps routing on its last configuration while pilot is
// down, and reconnects to a restarted pilot, which serves it again.
func TestEnvoySurvivesPilotRestart(t *testing.T) {
	up := framework.StartUpstream(t, "127.0.0.12", "reviews")
	port := framework.FreePort(t, "127.0.0.1")
	p := framework.StartPilot(t, framework.PilotOptions{})
	p.WriteConfig(t, "mesh.yaml", serviceEntry("reviews", port, endpoint{upstream: up}))
	node := sidecarNode("app-1")
	envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: node})
	eventuallyAnswers(t, port, "reviews", "reviews")

	p.Stop(t)
	envoy.WaitStat(t, "control_plane.connected_state", func(v uint64) bool { return v == 0 })
	if got, err := get(port, "reviews"); err != nil || got != "reviews" {
		t.Errorf("with pilot down: %q, %v", got, err)
	}
	p.Restart(t)
	envoy.WaitStat(t, "control_plane.connected_state", func(v uint64) bool { return v == 1 })
	framework.Eventually(t, func() error { return allAcked(p.Syncz(t), node, false) })
	eventuallyAnswers(t, port, "reviews", "reviews")
}
