package skiffctl

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestProxyStatusShowsSynced: with a real Envoy connected and its configuration ACKed,
// proxy-status shows it SYNCED for every type pilot sent (SDS too: api-1 is granted its
// certificate), NOT SENT for the rest, names the pilot, and the detail view says for each type
// which version was sent and ACKed, and that pilot's configuration matches the Envoy's. Over
// both protocols.
func TestProxyStatusShowsSynced(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			s := startShop(t, delta, policies)
			s.mustCtl(t, "wait", "--timeout", "2m")

			table := s.mustCtl(t, "proxy-status")
			lines := strings.Split(strings.TrimSpace(table), "\n")
			if len(lines) != 2 {
				t.Fatalf("proxy-status: want a header and one proxy:\n%s", table)
			}
			header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
			if want := []string{"NAME", "CONFIG", "CDS", "LDS", "EDS", "RDS", "ECDS", "SDS", "PILOT", "VERSION"}; !slices.Equal(header, want) {
				t.Fatalf("proxy-status header %v, want %v", header, want)
			}
			if row[0] != apiNode || !slices.Contains(row, s.pilot.MonitoringAddress) {
				t.Fatalf("proxy-status row %v: want %s served by %s", row, apiNode, s.pilot.MonitoringAddress)
			}
			// CDS LDS EDS RDS ECDS (the RBAC rules of api-1's policies) SDS: all sent and ACKed.
			for i, typ := range header[2:8] {
				if row[2+i] != "SYNCED" {
					t.Errorf("proxy-status: %s is %s, want SYNCED:\n%s", typ, row[2+i], table)
				}
			}

			var statuses []struct {
				Proxy string                     `json:"proxy"`
				Types map[string]json.RawMessage `json:"types"`
				Pilot string                     `json:"pilot"`
			}
			if err := json.Unmarshal([]byte(s.mustCtl(t, "proxy-status", "-o", "json")), &statuses); err != nil {
				t.Fatalf("proxy-status -o json: %v", err)
			}
			if len(statuses) != 1 || statuses[0].Proxy != apiNode || len(statuses[0].Types) < 6 {
				t.Fatalf("proxy-status -o json: %+v", statuses)
			}

			detail := s.mustCtl(t, "proxy-status", apiPod, "--envoy", s.envoy.AdminAddress)
			for _, want := range []string{"Proxy:     " + apiNode, "CDS: SYNCED", "LDS: SYNCED", "SDS: SYNCED",
				"sent and ACKed version", "clusters match", "listeners match", "routes match", "endpoints match", "secrets match"} {
				if !strings.Contains(detail, want) {
					t.Errorf("proxy-status %s lacks %q:\n%s", apiPod, want, detail)
				}
			}
		})
	}
}

// TestProxyStatusUnknownProxy: a proxy that is not connected is an error that says so.
func TestProxyStatusUnknownProxy(t *testing.T) {
	s := startShop(t, false)
	r := s.ctl(t, "proxy-status", "nobody.shop")
	if r.code == 0 || !strings.Contains(r.stderr, `proxy "nobody.shop" is not connected`) {
		t.Fatalf("proxy-status nobody.shop: want an error naming it: %s", r)
	}
}
