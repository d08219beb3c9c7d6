package skiffctl

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestXDSLogShowsAChangeAndItsACK: `skiffctl xds-log` follows a connected Envoy's stream; a
// VirtualService change shows as pilot's RDS response carrying the route configuration and,
// after it, the Envoy's ACK of that response's nonce. The text form prints the same
// conversation with arrows.
func TestXDSLogShowsAChangeAndItsACK(t *testing.T) {
	s := startShop(t, false)
	s.mustCtl(t, "wait", "--timeout", "2m")

	cmd := exec.Command(binary, "--pilot", s.pilot.MonitoringAddress, "xds-log", apiPod, "-o", "json",
		"--timeout", framework.Patience.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting skiffctl xds-log: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	type event struct {
		Kind, Type, Status, Nonce, Version, ErrorDetail string
		Resources                                       []string
	}
	events := make(chan event, 1024) // room for what comes after the test stops reading
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				// Reported by the reader (t must not be used once the test may have ended).
				ev = event{Kind: "unreadable", ErrorDetail: sc.Text() + ": " + err.Error()}
			}
			events <- ev
		}
	}()
	next := func(what string) event {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("xds-log ended while waiting for %s", what)
			}
			if ev.Kind == "unreadable" {
				t.Fatalf("xds-log -o json printed a line that is not an event: %s", ev.ErrorDetail)
			}
			return ev
		case <-time.After(framework.Patience):
			t.Fatalf("xds-log: no %s within %s", what, framework.Patience)
		}
		return event{}
	}
	if ev := next("the first event"); ev.Kind != "following" {
		t.Fatalf("xds-log's first event is %+v, want kind following", ev)
	}

	s.pilot.WriteConfig(t, "route.yaml", reviewsRoute("v2"))
	var response event
	for response.Nonce == "" {
		if ev := next("pilot's RDS response"); ev.Kind == "response" && ev.Type == "rds" {
			response = ev
		}
	}
	if len(response.Resources) == 0 || response.Version == "" {
		t.Fatalf("RDS response without resources or version: %+v", response)
	}
	for {
		ev := next("the ACK of nonce " + response.Nonce)
		if ev.Kind != "request" || ev.Type != "rds" || ev.Nonce != response.Nonce {
			continue
		}
		if ev.Status != "ACK" || ev.Version != response.Version {
			t.Fatalf("the answer to RDS nonce %s is %+v, want an ACK of version %s", response.Nonce, ev, response.Version)
		}
		break
	}

	// Text, in a bounded run that stops by itself after --count events.
	text := s.mustCtl(t, "xds-log", apiPod, "--count", "1")
	if !strings.Contains(text, "following") {
		t.Errorf("xds-log --count 1 printed %q, want the following line", text)
	}
}
