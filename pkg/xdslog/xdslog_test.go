package xdslog

import (
	"strings"
	"testing"
	"time"
)

// Format prints one line per event, with what a reader of the protocol looks for.
func TestFormat(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 0, 1, 234e6, time.UTC)
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	for _, tc := range []struct {
		ev   Event
		want []string
	}{
		{Event{Time: at, Kind: KindResponse, Type: "cds", Version: "v1", Nonce: "4", Resources: names, Count: len(names), Bytes: 1234},
			[]string{"12:00:01.234 ← cds  response", "v=v1 nonce=4", "10 resources 1.2 kB", "a, b, c, d, e, f, g, h, … 2 more"}},
		{Event{Time: at, Kind: KindRequest, Type: "lds", Status: StatusNACK, Version: "v0", Nonce: "5", ErrorDetail: "Error adding/updating listener(s) l3:\n bad"},
			[]string{"→ lds  NACK", "v=v0 nonce=5", "error: Error adding/updating listener(s) l3: bad"}},
		{Event{Time: at, Kind: KindRequest, Type: "rds", Status: StatusACK, Nonce: "6", Resources: []string{"80"}, Count: 1, Removed: []string{"81"}},
			[]string{"→ rds  ACK", "1 resource: 80", "removed: 81"}},
		{Event{Time: at, Kind: KindDropped, Dropped: 7}, []string{"7 events dropped"}},
		{Event{Time: at, Kind: KindFollowing, Proxy: "app-1.default"}, []string{"following app-1.default"}},
	} {
		got := Format(tc.ev)
		for _, want := range tc.want {
			if !strings.Contains(got, want) {
				t.Errorf("Format(%+v) = %q, want it to contain %q", tc.ev, got, want)
			}
		}
		if strings.Contains(got, "\n") {
			t.Errorf("Format(%+v) spans lines: %q", tc.ev, got)
		}
	}
}
