package framework

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// pilotDebugListing finds the paths pilot's /debug index lists.
var pilotDebugListing = regexp.MustCompile(`(?m)^\s+(/[a-z_/]+)`)

// MonitoringSources fetches everything the pilot serves on its monitoring port, for a test
// that searches it (for key material, say), and returns each body by what was fetched, with
// the pilot's log as "log". proxies are node IDs of connected proxies: their config dumps are
// fetched by node ID and by POD.NAMESPACE. Every endpoint pilot's /debug index lists must be
// among those fetched, so a new one is not left out silently: the test fails naming it. Go's
// profiles (/debug/pprof/) are fetched too, the CPU profile and the trace for one second.
func (p *Pilot) MonitoringSources(tb testing.TB, proxies []string) map[string][]byte {
	tb.Helper()
	paths := []string{
		"/metrics", "/ready", "/debug", "/debug/syncz", "/debug/wait?timeout=5s", "/debug/config_errors",
		"/graph", "/graph/data",
		// What pilot would serve a proxy it has never seen.
		"/debug/config_dump?proxy=sidecar~127.0.0.1~nobody-1.default~default.svc.cluster.local",
		"/debug/describe?proxy=sidecar~127.0.0.1~nobody-1.default~default.svc.cluster.local",
		"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/symbol", "/debug/pprof/goroutine?debug=2",
		"/debug/pprof/heap?debug=1", "/debug/pprof/heap", "/debug/pprof/allocs", "/debug/pprof/threadcreate?debug=1",
		"/debug/pprof/block?debug=1", "/debug/pprof/mutex?debug=1", "/debug/pprof/profile?seconds=1",
		"/debug/pprof/trace?seconds=1",
	}
	for _, id := range proxies {
		paths = append(paths, "/debug/config_dump?proxy="+id, "/debug/describe?proxy="+id)
		if parts := strings.Split(id, "~"); len(parts) == 4 {
			paths = append(paths, "/debug/config_dump?proxy="+parts[2])
		}
	}
	_, index := p.Get(tb, "/debug")
	streamed := []string{"/debug/xds_log"} // read below, for each proxy
	for _, listed := range pilotDebugListing.FindAllStringSubmatch(string(index), -1) {
		if !slices.ContainsFunc(slices.Concat(paths, streamed), func(path string) bool { return strings.HasPrefix(path, listed[1]) }) {
			tb.Errorf("framework: pilot's /debug lists %s, which MonitoringSources does not fetch: add it", listed[1])
		}
	}
	sources := map[string][]byte{}
	for _, path := range paths {
		status, body := p.Get(tb, path)
		if status != http.StatusOK {
			tb.Errorf("framework: pilot GET %s: %d %.200s", path, status, body)
		}
		sources[path] = body
	}
	// The protocol log streams: each proxy's is read for a second (what its stream carries
	// meanwhile, names and sizes of secrets included).
	for _, id := range proxies {
		path := "/debug/xds_log?proxy=" + url.QueryEscape(id)
		body, err := p.readFor(path, time.Second)
		if err != nil {
			tb.Errorf("framework: pilot GET %s: %v", path, err)
		}
		sources[path] = body
	}
	sources["log"] = []byte(p.Log())
	return sources
}

// readFor reads a streaming response of the monitoring port for d and returns what came.
func (p *Pilot) readFor(path string, d time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.MonitoringAddress+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if ctx.Err() != nil {
		err = nil // the read was cut at d, as meant
	}
	return body, err
}
