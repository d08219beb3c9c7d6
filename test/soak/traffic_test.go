package soak

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// maxFailuresKept bounds the failures described in the report.
const maxFailuresKept = 20

// traffic is the client's load: requestWorkers loops, each on a keep-alive connection to the
// client's sidecar, together sending requestRate requests a second until stopped.
type traffic struct {
	sent, failed atomic.Int64
	lastEdit     atomic.Pointer[string] // the edit made last, for failure reports

	start  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	failures []string
	byServer map[string]int64
}

func startTraffic(url string) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{start: time.Now(), cancel: cancel, byServer: map[string]int64{}}
	none := "none yet"
	tr.lastEdit.Store(&none)
	client := &http.Client{
		Timeout: framework.RequestTimeout,
		Transport: &http.Transport{
			Proxy: nil, MaxIdleConnsPerHost: requestWorkers, DisableCompression: true,
		},
	}
	for w := range requestWorkers {
		tr.wg.Go(func() {
			tick := time.NewTicker(time.Second * requestWorkers / requestRate)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				tr.request(ctx, client, fmt.Sprintf("%sw%d-%d", url, w, n))
			}
		})
	}
	return tr
}

// request sends one request and records its outcome. A request cut short by stop is not
// counted.
func (tr *traffic) request(ctx context.Context, client *http.Client, url string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		panic(err) // the URL is the test's own
	}
	req.Host = host
	resp, err := client.Do(req)
	var (
		status int
		body   []byte
		server string
	)
	if err == nil {
		status, server = resp.StatusCode, resp.Header.Get("x-upstream")
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if ctx.Err() != nil {
		return
	}
	tr.sent.Add(1)
	if err == nil && status == http.StatusOK && strings.HasPrefix(server, "server-") {
		tr.mu.Lock()
		tr.byServer[server]++
		tr.mu.Unlock()
		return
	}
	tr.failed.Add(1)
	what := fmt.Sprintf("status %d %q", status, truncate(string(body), 200))
	if err != nil {
		what = err.Error()
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.failures) < maxFailuresKept {
		tr.failures = append(tr.failures, fmt.Sprintf("  at %s, after edit %q: GET %s: %s",
			time.Since(tr.start).Round(time.Millisecond), *tr.lastEdit.Load(), url, what))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// stop ends the load and waits for the loops.
func (tr *traffic) stop() {
	tr.cancel()
	tr.wg.Wait()
}

func (tr *traffic) firstFailures() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.failures)
}

func (tr *traffic) answersByServer() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(tr.byServer)) {
		parts = append(parts, fmt.Sprintf("%s %d", name, tr.byServer[name]))
	}
	return strings.Join(parts, ", ")
}
