package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/skiffmesh/skiff/pkg/xdslog"
	"github.com/skiffmesh/skiff/test/framework"
)

// eventLog collects a protocol log as it arrives.
type eventLog struct {
	mu     sync.Mutex
	events []xdslog.Event
}

func (l *eventLog) add(ev xdslog.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
}

func (l *eventLog) snapshot() []xdslog.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]xdslog.Event(nil), l.events...)
}

// followXDSLog follows proxy's protocol log on p until the test ends, from before the proxy
// connects.
func followXDSLog(t *testing.T, p *framework.Pilot, proxy string) *eventLog {
	t.Helper()
	log := &eventLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- xdslog.Follow(ctx, "http://"+p.MonitoringAddress, proxy, log.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("following the xDS log: %v", err)
		}
	})
	framework.Eventually(t, func() error {
		if evs := log.snapshot(); len(evs) == 0 || evs[0].Kind != xdslog.KindFollowing {
			return fmt.Errorf("pilot has not started the log: %v", evs)
		}
		return nil
	})
	return log
}

// answered finds, from index from on, a response of typ and the request that answers it (the
// ACK with its nonce), and returns the index of the response.
func answered(evs []xdslog.Event, typ string) (response int, err error) {
	for i, ev := range evs {
		if ev.Kind != xdslog.KindResponse || ev.Type != typ {
			continue
		}
		for _, later := range evs[i+1:] {
			if later.Kind == xdslog.KindRequest && later.Type == typ && later.Nonce == ev.Nonce {
				if later.Status != xdslog.StatusACK || later.Version != ev.Version && ev.Protocol == "sotw" {
					return 0, fmt.Errorf("the %s response %s was answered %s (version %q)", typ, ev.Nonce, later.Status, later.Version)
				}
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("no ACKed %s response yet", typ)
}

// TestXDSLogShowsTheConversation: following a proxy's protocol log from before it connects, a
// real Envoy's start shows as the xDS conversation: clusters, then their endpoints, then
// listeners, then their routes, each response ACKed with its nonce (and, in state of the world,
// its version). pilot serve --xds-log writes the same events to its debug log. Over both
// protocols.
func TestXDSLogShowsTheConversation(t *testing.T) {
	for _, delta := range []bool{false, true} {
		protocol := map[bool]string{false: "sotw", true: "delta"}[delta]
		t.Run(protocol, func(t *testing.T) {
			api := framework.StartUpstream(t, "127.0.41.3", "api")
			port := framework.FreePort(t, "127.0.0.1")
			// --xds-log writes the same log to pilot's own, at debug level.
			p := framework.StartPilot(t, framework.PilotOptions{Args: []string{"--xds-log", "xdslog-*.default", "--log-level", "debug"}})
			p.WriteConfig(t, "api.yaml", serviceEntry("api", port, endpoint{upstream: api}))
			node := sidecarNode("xdslog-" + protocol)
			log := followXDSLog(t, p, "xdslog-"+protocol+".default")
			framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: node, Delta: delta})
			eventuallyAnswers(t, port, "api", "api")

			var order []int
			framework.Eventually(t, func() error {
				evs := log.snapshot()
				order = order[:0]
				for _, typ := range []string{"cds", "eds", "lds", "rds"} {
					i, err := answered(evs, typ)
					if err != nil {
						return err
					}
					order = append(order, i)
				}
				return nil
			})
			evs := log.snapshot()
			for i := 1; i < len(order); i++ {
				if order[i] < order[i-1] {
					t.Errorf("the conversation is out of order (first ACKed responses at %v of cds, eds, lds, rds)", order)
				}
			}
			var lines []string
			for _, ev := range evs {
				if ev.Kind == xdslog.KindRequest || ev.Kind == xdslog.KindResponse {
					if ev.Proxy != node || ev.Protocol != protocol {
						t.Errorf("event of another stream: %+v", ev)
					}
				}
				lines = append(lines, xdslog.Format(ev))
			}
			cds := evs[order[0]]
			if !strings.Contains(strings.Join(cds.Resources, " "), drClusterName(port, "", "api")) || cds.Bytes == 0 {
				t.Errorf("the CDS response does not name the api cluster or its size: %+v", cds)
			}
			t.Logf("protocol log:\n%s", strings.Join(lines, "\n"))
			framework.Eventually(t, func() error {
				for _, want := range []string{`msg="xds response"`, "proxy=" + node, "type=rds", "status=ACK"} {
					if !strings.Contains(p.Log(), want) {
						return fmt.Errorf("pilot's log (--xds-log) has no %s", want)
					}
				}
				return nil
			})
		})
	}
}
