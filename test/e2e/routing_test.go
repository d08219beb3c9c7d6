package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestRoutesByHost: requests through Envoy's outbound listener reach the service their Host
// header names, over state-of-the-world and delta ADS; Envoy ACKs every type and its
// config_dump uses Istio's names.
func TestRoutesByHost(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			reviews := framework.StartUpstream(t, "127.0.0.2", "reviews")
			ratings := framework.StartUpstream(t, "127.0.0.3", "ratings")
			port := framework.FreePort(t, "127.0.0.1")
			p := framework.StartPilot(t, framework.PilotOptions{})
			p.WriteConfig(t, "mesh.yaml", serviceEntry("reviews", port, endpoint{upstream: reviews})+"---\n"+
				serviceEntry("ratings", port, endpoint{upstream: ratings}))
			node := sidecarNode("productpage-1")
			envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: node, Delta: delta})

			for _, host := range []string{"reviews", "reviews.default", "reviews.default.svc.cluster.local", fmt.Sprintf("reviews:%d", port)} {
				eventuallyAnswers(t, port, host, "reviews")
			}
			eventuallyAnswers(t, port, "ratings.default.svc", "ratings")

			// Envoy's own view: Istio's names, every type applied.
			dump := string(envoy.ConfigDump(t))
			for _, name := range []string{
				fmt.Sprintf(`"name": "127.0.0.1_%d"`, port),
				fmt.Sprintf(`"route_config_name": "%d"`, port),
				fmt.Sprintf(`"outbound|%d||reviews.default.svc.cluster.local"`, port),
				`"name": "PassthroughCluster"`, `"name": "BlackHoleCluster"`, `"name": "allow_any"`,
			} {
				if !strings.Contains(dump, name) {
					t.Errorf("Envoy's config_dump lacks %s", name)
				}
			}
			envoy.WaitStat(t, "cluster_manager.cds.update_success", atLeast(1))
			envoy.WaitStat(t, "listener_manager.lds.update_success", atLeast(1))
			envoy.WaitStat(t, fmt.Sprintf("http.outbound_127.0.0.1_%d.rds.%d.update_success", port, port), atLeast(1))
			envoy.WaitStat(t, fmt.Sprintf("cluster.outbound|%d||reviews.default.svc.cluster.local.update_success", port), atLeast(1))

			// Pilot's view: every type sent was ACKed by this proxy.
			framework.Eventually(t, func() error { return allAcked(p.Syncz(t), node, delta) })
			if got := p.Metric(t, "pilot_xds", nil); got != 1 {
				t.Errorf("pilot_xds = %v, want 1 connected proxy", got)
			}
			// And pilot's debug config dump shows the same names.
			if served := string(p.ConfigDump(t, node)); !strings.Contains(served, fmt.Sprintf(`"outbound|%d||ratings.default.svc.cluster.local"`, port)) {
				t.Errorf("pilot's config_dump lacks the ratings cluster:\n%.2000s", served)
			}
		})
	}
}

func atLeast(n uint64) func(uint64) bool { return func(v uint64) bool { return v >= n } }

// synczProxy is one proxy's stream in /debug/syncz.
type synczProxy struct {
	Proxy     string    `json:"proxy"`
	Protocol  string    `json:"protocol"`
	Identity  string    `json:"identity"`
	Connected time.Time `json:"connected"`
	Types     map[string]struct {
		Sent     string          `json:"sent"`
		Acked    string          `json:"acked"`
		LastNack json.RawMessage `json:"last_nack"`
	} `json:"types"`
}

// synczEntry is node's newest stream in /debug/syncz, nil when it has none. While a proxy
// reconnects its old stream can still be listed beside the new one, whose state is the one
// that counts.
func synczEntry(syncz []byte, node string) (*synczProxy, error) {
	var proxies []synczProxy
	if err := json.Unmarshal(syncz, &proxies); err != nil {
		return nil, fmt.Errorf("syncz: %w: %s", err, syncz)
	}
	var newest *synczProxy
	for i := range proxies {
		if p := &proxies[i]; p.Proxy == node && (newest == nil || p.Connected.After(newest.Connected)) {
			newest = p
		}
	}
	return newest, nil
}

// allAcked checks /debug/syncz: the proxy is connected with the expected protocol and, for
// cds, eds, lds and rds, the version ACKed is the version sent and nothing was NACKed.
func allAcked(syncz []byte, node string, delta bool) error {
	p, err := synczEntry(syncz, node)
	if err != nil {
		return err
	}
	if p == nil {
		return fmt.Errorf("proxy %s not in syncz: %s", node, syncz)
	}
	want := "sotw"
	if delta {
		want = "delta"
	}
	if p.Protocol != want {
		return fmt.Errorf("protocol %s, want %s", p.Protocol, want)
	}
	for _, typ := range []string{"cds", "eds", "lds", "rds"} {
		if err := p.acked(typ); err != nil {
			return err
		}
	}
	return nil
}

// acked checks that the stream was sent typ and ACKed the version it was last sent.
func (p *synczProxy) acked(typ string) error {
	st, ok := p.Types[typ]
	switch {
	case !ok || st.Sent == "":
		return fmt.Errorf("%s: nothing sent yet", typ)
	case st.Acked != st.Sent:
		return fmt.Errorf("%s: sent %s, acked %q", typ, st.Sent, st.Acked)
	case len(st.LastNack) > 0:
		return fmt.Errorf("%s: NACKed: %s", typ, st.LastNack)
	}
	return nil
}
