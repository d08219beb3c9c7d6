package e2e

import (
	"fmt"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/test/framework"
)

// Pilot's mesh graph page in a real browser: the metrics mesh (two sidecars, STRICT mTLS, HTTP
// with 200s and 503s, and TCP), its access logs streamed to pilot, and headless Chromium
// loading http://PILOT/graph. What is asserted is the DOM after the page's script fetched
// /graph/data and drew it: the workloads and the service as nodes, and the edges with a rate
// above zero, errors where the 503s went, and the mTLS mark.
//
// SKIFF_SCREENSHOT_DIR=DIR also saves what the browser showed, as DIR/graph.png.
func TestGraphPageInBrowser(t *testing.T) {
	browser := framework.StartChromium(t)
	t.Logf("%s", browser.Version)
	m := startMetricsMesh(t, metricsPlace{net: "127.0.47"})
	page := "http://" + m.pilot.MonitoringAddress + "/graph"

	const (
		client  = "workload:shop/client-1"
		server  = "workload:shop/server-1"
		service = "service:server.shop.svc.cluster.local"
	)
	var dom string
	framework.Eventually(t, func() error {
		if err := m.traffic(); err != nil {
			return err
		}
		var err error
		if dom, err = browser.RenderDOM(page, framework.RenderOptions{}); err != nil {
			return err
		}
		if !strings.Contains(dom, `data-state="ok"`) {
			return fmt.Errorf("the page did not draw the graph (body state not ok):\n%.2000s", dom)
		}
		for _, id := range []string{client, server, service} {
			if !strings.Contains(dom, `class="node `) || !strings.Contains(dom, `data-id="`+id+`"`) {
				return fmt.Errorf("no node %s in the graph:\n%.4000s", id, dom)
			}
		}
		for _, name := range []string{">client-1<", ">server-1<", ">server<", "client v1", "server v2"} {
			if !strings.Contains(dom, name) {
				return fmt.Errorf("the graph does not show %q:\n%.4000s", name, dom)
			}
		}
		rows := edgeRows(dom)
		for _, want := range []struct{ source, target, protocol string }{
			{client, service, "http"}, {service, server, "http"}, {client, service, "tcp"}, {service, server, "tcp"},
		} {
			row, ok := rows[want.source+" "+want.target+" "+want.protocol]
			if !ok {
				return fmt.Errorf("no table row %s → %s (%s); rows %v", want.source, want.target, want.protocol, rows)
			}
			if row.attrs["mtls"] != "mutual_tls" || !strings.Contains(row.cells[7], "mTLS") {
				return fmt.Errorf("row %s → %s (%s): mTLS %q, cell %q; want mutual_tls", want.source, want.target, want.protocol, row.attrs["mtls"], row.cells[7])
			}
			if want.protocol == "tcp" {
				if rate, err := strconv.ParseFloat(row.cells[6], 64); err != nil || rate <= 0 {
					return fmt.Errorf("row %s → %s (tcp): bytes/s %q, want > 0", want.source, want.target, row.cells[6])
				}
				continue
			}
			if rate, err := strconv.ParseFloat(row.attrs["rate"], 64); err != nil || rate <= 0 {
				return fmt.Errorf("row %s → %s (http): rate %q, want > 0", want.source, want.target, row.attrs["rate"])
			}
			// Every round sends a 200 and a 503 (which the client's sidecar retries, Istio's
			// default: the server answers three 503s to each 200).
			if errs := strings.TrimSuffix(row.cells[4], "%"); errs == "0.0" || errs == row.cells[4] {
				return fmt.Errorf("row %s → %s (http): errors %q, want above 0", want.source, want.target, row.cells[4])
			}
			if _, err := strconv.ParseFloat(row.cells[5], 64); err != nil {
				return fmt.Errorf("row %s → %s (http): p99 %q, want a number", want.source, want.target, row.cells[5])
			}
		}
		// The drawn edges carry the same: a rate and the lock.
		if !regexp.MustCompile(`<g class="edge [a-z]+" data-source="` + client + `" data-target="` + service +
			`" data-protocol="http" data-rate="[0-9.]*[1-9][0-9.]*" data-mtls="mutual_tls">`).MatchString(dom) {
			return fmt.Errorf("no drawn edge client-1 → server (http) with a rate and mTLS:\n%.6000s", dom)
		}
		if !strings.Contains(dom, " rps") || !strings.Contains(dom, `<g class="lock"`) {
			return fmt.Errorf("the drawn edges show no rate or no lock:\n%.6000s", dom)
		}
		return nil
	})
	if dir := os.Getenv("SKIFF_SCREENSHOT_DIR"); dir != "" {
		path := filepath.Join(dir, "graph.png")
		if err := browser.Screenshot(page, path, framework.RenderOptions{}); err != nil {
			t.Errorf("screenshot: %v", err)
		} else {
			t.Logf("screenshot: %s", path)
		}
	}
	// The page refreshes itself: over 12 s of its time it fetched the data again.
	framework.Eventually(t, func() error {
		dom, err := browser.RenderDOM(page, framework.RenderOptions{VirtualTime: 12 * time.Second})
		if err != nil {
			return err
		}
		m := refreshesPattern.FindStringSubmatch(dom)
		if m == nil {
			return fmt.Errorf("the page has no data-refreshes:\n%.2000s", dom)
		}
		if n, _ := strconv.Atoi(m[1]); n < 2 {
			return fmt.Errorf("the page fetched the graph %d times in 12 s, want at least 2", n)
		}
		return nil
	})
}

type edgeRow struct {
	attrs map[string]string
	cells []string
}

var (
	rowPattern  = regexp.MustCompile(`(?s)<tr class="edge-row"([^>]*)>(.*?)</tr>`)
	attrPattern = regexp.MustCompile(`data-([a-z]+)="([^"]*)"`)
	cellPattern = regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`)
	tagPattern  = regexp.MustCompile(`<[^>]+>`)
)

// edgeRows reads the table of the rendered page, keyed "SOURCE TARGET PROTOCOL".
func edgeRows(dom string) map[string]edgeRow {
	rows := map[string]edgeRow{}
	for _, m := range rowPattern.FindAllStringSubmatch(dom, -1) {
		r := edgeRow{attrs: map[string]string{}}
		for _, a := range attrPattern.FindAllStringSubmatch(m[1], -1) {
			r.attrs[a[1]] = html.UnescapeString(a[2])
		}
		for _, c := range cellPattern.FindAllStringSubmatch(m[2], -1) {
			r.cells = append(r.cells, html.UnescapeString(tagPattern.ReplaceAllString(c[1], "")))
		}
		if len(r.cells) < 9 {
			continue
		}
		rows[r.attrs["source"]+" "+r.attrs["target"]+" "+r.attrs["protocol"]] = r
	}
	return rows
}

var refreshesPattern = regexp.MustCompile(`data-refreshes="([0-9]+)"`)
