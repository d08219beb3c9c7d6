package skiffctl

import (
	"encoding/json"
	"strings"
	"testing"
)

// synczFixture is /debug/syncz as pilot serves it with NACKs attributed to resources (the
// "rejected" list): one type of each state.
const synczFixture = `[{
  "proxy": "sidecar~127.0.0.1~app-1.default~default.svc.cluster.local",
  "class": "c", "config": "k", "protocol": "sotw", "connected": "2026-01-01T00:00:00Z",
  "types": {
    "cds": {"sent": "v2", "sent_nonce": "4", "sent_at": "2026-01-01T00:00:02Z", "acked": "v2"},
    "lds": {"sent": "v3", "sent_nonce": "5", "sent_at": "2026-01-01T00:00:03Z", "acked": "v2"},
    "rds": {"sent": "v3", "sent_nonce": "6", "sent_at": "2026-01-01T00:00:04Z", "acked": "v2",
            "last_nack": {"version": "v3", "nonce": "6", "error": "route: invalid regex", "at": "2026-01-01T00:00:05Z"}},
    "eds": {"sent": "v4", "sent_nonce": "8", "sent_at": "2026-01-01T00:00:06Z", "acked": "v4",
            "last_nack": {"version": "v3", "nonce": "7", "error": "bad endpoint", "at": "2026-01-01T00:00:05Z"},
            "rejected": [{"name": "outbound|80||a.default.svc.cluster.local", "error": "bad endpoint", "held_version": "v2"}]}
  }
}]`

// TestStatesFromSyncz: the state of each type follows from what syncz says was sent, ACKed and
// rejected; resources pilot holds back after a NACK keep the type NACKED although the
// response that followed was ACKed, and the detail names them with Envoy's error.
func TestStatesFromSyncz(t *testing.T) {
	var statuses []ProxyStatus
	if err := json.Unmarshal([]byte(synczFixture), &statuses); err != nil {
		t.Fatal(err)
	}
	row := Rows(statuses)[0]
	want := map[string]State{"cds": Synced, "lds": Stale, "rds": Nacked, "eds": Nacked, "ecds": NotSent, "sds": NotSent}
	for typ, state := range want {
		if row.States[typ] != state {
			t.Errorf("%s: %s, want %s", typ, row.States[typ], state)
		}
	}
	if row.Version != "v4" {
		t.Errorf("version %q, want the latest sent, v4", row.Version)
	}
	var detail strings.Builder
	PrintStatusDetail(&detail, &statuses[0])
	for _, s := range []string{"LDS: STALE", "sent version v3 (nonce 5", "the proxy holds version v2",
		"RDS: NACKED", "route: invalid regex", "rejected outbound|80||a.default.svc.cluster.local (held at version v2): bad endpoint"} {
		if !strings.Contains(detail.String(), s) {
			t.Errorf("detail lacks %q:\n%s", s, detail.String())
		}
	}
}

// TestUnifiedDiff: the diff of two resources' YAML marks the changed lines with their context.
func TestUnifiedDiff(t *testing.T) {
	var out strings.Builder
	writeUnified(&out, strings.Split("a\nb\nc\nd\ne\nf\ng\nh\ni", "\n"), strings.Split("a\nb\nc\nd\nE\nf\ng\nh\ni", "\n"), 3)
	want := "@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
	if out.String() != want {
		t.Errorf("diff:\n%s\nwant:\n%s", out.String(), want)
	}
}
