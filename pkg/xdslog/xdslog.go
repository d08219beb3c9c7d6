// Package xdslog reads the live protocol log of a proxy's ADS stream(s) that pilot serves on
// its monitoring port (GET /debug/xds_log?proxy=ID, newline-delimited JSON): every
// DiscoveryRequest the proxy sends and every DiscoveryResponse pilot sends it, with type,
// version, nonce, resource names and sizes, and ACK/NACK with Envoy's error_detail. It is what
// `skiffctl xds-log` prints, and a way to watch the xDS protocol at work.
package xdslog

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Event is one line of the log.
type Event struct {
	Time time.Time `json:"time"`
	// Kind is what happened: KindRequest or KindResponse for messages; KindFollowing first,
	// once pilot follows the proxy; KindDropped when the reader was too slow and Dropped
	// events were left out; KindClosed when a stream of the proxy ended.
	Kind  string `json:"kind"`
	Proxy string `json:"proxy,omitempty"`
	// Stream numbers the proxy's ADS stream within pilot; Protocol is sotw or delta.
	Stream   int64  `json:"stream,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	// Type is Istio's short name of the type (cds, eds, lds, rds, sds, ecds), TypeURL the
	// full one.
	Type    string `json:"type,omitempty"`
	TypeURL string `json:"type_url,omitempty"`
	// Status classifies a request: StatusSubscribe (a new subscription, answering nothing),
	// StatusACK or StatusNACK (of the response whose nonce it carries).
	Status string `json:"status,omitempty"`
	// Version is a state-of-the-world request's version_info (the last version the proxy
	// accepted) or a response's version (system_version_info for delta).
	Version string `json:"version,omitempty"`
	// Nonce is a response's nonce, or the response_nonce a request answers.
	Nonce string `json:"nonce,omitempty"`
	// Resources are the names a request subscribes to (for delta: subscribes to now) or a
	// response carries; Count is how many. Removed are the names a delta request unsubscribes
	// from or a delta response removes.
	Resources []string `json:"resources,omitempty"`
	Count     int      `json:"count"`
	Removed   []string `json:"removed,omitempty"`
	// Bytes is the size of the message's protobuf encoding; for requests without the node,
	// which Envoy sends in its first request only.
	Bytes int `json:"bytes,omitempty"`
	// ErrorDetail is a NACK's explanation, as Envoy wrote it.
	ErrorDetail string `json:"error_detail,omitempty"`
	// Dropped counts the events left out before a KindDropped event.
	Dropped int64 `json:"dropped,omitempty"`
}

// The kinds of events.
const (
	KindFollowing = "following"
	KindRequest   = "request"
	KindResponse  = "response"
	KindDropped   = "dropped"
	KindClosed    = "closed"
)

// The statuses of requests.
const (
	StatusSubscribe = "subscribe"
	StatusACK       = "ACK"
	StatusNACK      = "NACK"
)

// Follow streams the protocol log of proxy (a node ID, or POD.NAMESPACE) from the pilot whose
// monitoring endpoint is monitoringURL (http://HOST:PORT), calling fn with each event, until
// ctx ends (then it returns nil) or the connection fails. Pilot follows proxies that are not
// connected yet: their conversation shows from their first request.
func Follow(ctx context.Context, monitoringURL, proxy string, fn func(Event)) error {
	u := strings.TrimSuffix(monitoringURL, "/") + "/debug/xds_log?proxy=" + url.QueryEscape(proxy)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("xds log of %s: %w", proxy, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("xds log of %s: %w", proxy, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("xds log of %s: %s: %s", proxy, resp.Status, strings.TrimSpace(string(body)))
	}
	sc := bufio.NewScanner(resp.Body)
	// A response line names every resource it carries: thousands of EDS names.
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("xds log of %s: reading %q: %w", proxy, sc.Text(), err)
		}
		fn(ev)
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("xds log of %s: %w", proxy, err)
	}
	return fmt.Errorf("xds log of %s: pilot ended the log", proxy)
}

// maxListed bounds the names Format prints of one message; the rest are counted.
const maxListed = 8

// Format writes ev as one line of text, for people:
//
//	12:00:01.234 ← cds  response  v=mx7h-1-3 nonce=4  2 resources 1.2 kB: outbound|80||a, outbound|80||b
//	12:00:01.240 → cds  ACK       v=mx7h-1-3 nonce=4
//	12:00:01.250 → lds  NACK      v=mx7h-2-1 nonce=5  error: Error adding/updating listener(s) ...
//
// → is a request from the proxy, ← a response from pilot.
func Format(ev Event) string {
	at := ev.Time.Format("15:04:05.000")
	var b strings.Builder
	switch ev.Kind {
	case KindFollowing:
		fmt.Fprintf(&b, "%s following %s", at, ev.Proxy)
		return b.String()
	case KindDropped:
		fmt.Fprintf(&b, "%s … %d events dropped (the reader was too slow)", at, ev.Dropped)
		return b.String()
	case KindClosed:
		fmt.Fprintf(&b, "%s stream %d (%s) of %s closed", at, ev.Stream, ev.Protocol, ev.Proxy)
		return b.String()
	}
	arrow, what := "→", ev.Status
	if ev.Kind == KindResponse {
		arrow, what = "←", "response"
	}
	fmt.Fprintf(&b, "%s %s %-4s %-9s", at, arrow, ev.Type, what)
	if ev.Version != "" {
		fmt.Fprintf(&b, " v=%s", ev.Version)
	}
	if ev.Nonce != "" {
		fmt.Fprintf(&b, " nonce=%s", ev.Nonce)
	}
	if ev.Kind == KindResponse || len(ev.Resources) > 0 {
		fmt.Fprintf(&b, "  %d %s", ev.Count, plural(ev.Count, "resource"))
	}
	if ev.Bytes > 0 {
		fmt.Fprintf(&b, " %s", size(ev.Bytes))
	}
	if len(ev.Resources) > 0 {
		b.WriteString(": " + list(ev.Resources))
	}
	if len(ev.Removed) > 0 {
		b.WriteString("  removed: " + list(ev.Removed))
	}
	if ev.ErrorDetail != "" {
		b.WriteString("  error: " + strings.Join(strings.Fields(ev.ErrorDetail), " "))
	}
	return b.String()
}

func list(names []string) string {
	if len(names) <= maxListed {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:maxListed], ", ") + fmt.Sprintf(", … %d more", len(names)-maxListed)
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func size(n int) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000_000:
		return fmt.Sprintf("%.1f kB", float64(n)/1000)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1000_000)
}
