package framework

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Stats returns Envoy's counters and gauges by name (histograms and text
// readouts are left out).
func (e *Envoy) Stats(tb testing.TB) map[string]uint64 {
	tb.Helper()
	stats, err := e.stats("")
	if err != nil {
		tb.Fatalf("framework: Envoy %s: %v", e.NodeID, err)
	}
	return stats
}

// Stat returns one counter or gauge, failing the test if Envoy has no stat of
// that name (most likely a typo; the message lists near names). Stats of a
// cluster or listener only exist once Envoy has it: use WaitStat to wait.
func (e *Envoy) Stat(tb testing.TB, name string) uint64 {
	tb.Helper()
	stats, err := e.stats(exactStat(name))
	if err != nil {
		tb.Fatalf("framework: Envoy %s: %v", e.NodeID, err)
	}
	v, ok := stats[name]
	if !ok {
		tb.Fatalf("framework: Envoy %s has no stat %q%s", e.NodeID, name, e.nearStats(name))
	}
	return v
}

// WaitStat polls the stat name until ok accepts its value, and fails the test
// if that does not happen within Patience or Envoy exits. A stat that does not
// exist yet is waited for.
func (e *Envoy) WaitStat(tb testing.TB, name string, ok func(uint64) bool) {
	tb.Helper()
	last := "absent"
	err := e.proc.WaitFor(Patience, func() error {
		stats, err := e.stats(exactStat(name))
		if err != nil {
			return err
		}
		v, found := stats[name]
		if !found {
			return fmt.Errorf("stat %s absent", name)
		}
		last = strconv.FormatUint(v, 10)
		if !ok(v) {
			return fmt.Errorf("stat %s = %d", name, v)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("framework: Envoy %s: stat %s not as expected (last value: %s): %v%s",
			e.NodeID, name, last, err, e.nearStats(name))
	}
}

// AssertNoRejections checks that every stat whose name ends in
// "update_rejected" (cluster_manager.cds., listener_manager.lds., each
// route config's rds., each EDS cluster's...) is 0, and marks the test
// failed (without stopping it) listing those that are not, with the
// rejection messages from the config dump. StartEnvoy runs it when the test
// ends.
func (e *Envoy) AssertNoRejections(tb testing.TB) {
	tb.Helper()
	if err := e.checkNoRejections(); err != nil {
		tb.Errorf("framework: Envoy %s: %v", e.NodeID, err)
	}
}

func (e *Envoy) checkNoRejections() error {
	stats, err := e.stats(`update_rejected$`)
	if err != nil {
		return fmt.Errorf("checking for rejected xDS updates: %w", err)
	}
	var offenders []string
	for name, v := range stats {
		if strings.HasSuffix(name, "update_rejected") && v != 0 {
			offenders = append(offenders, fmt.Sprintf("%s = %d", name, v))
		}
	}
	if len(offenders) == 0 {
		return nil
	}
	slices.Sort(offenders)
	msg := "Envoy rejected xDS updates (NACKs):\n  " + strings.Join(offenders, "\n  ")
	if details := e.rejectionDetails(); len(details) > 0 {
		msg += "\nrejection details from /config_dump:\n  " + strings.Join(details, "\n  ")
	}
	if lines := rejectionLogLines(e.log.String()); len(lines) > 0 {
		msg += "\nrejections in Envoy's log:\n  " + strings.Join(lines, "\n  ")
	}
	return fmt.Errorf("%s", msg)
}

// rejectionLogLines returns the distinct log entries in which Envoy said
// why it rejected an update ("gRPC config for TYPE rejected: REASON"); the
// config dump only has per-resource reasons for some types. At most the last
// 10 are kept.
func rejectionLogLines(log string) []string {
	var entries []string
	seen := map[string]bool{}
	var cur strings.Builder
	flush := func() {
		entry := strings.TrimSpace(cur.String())
		cur.Reset()
		// Drop the "[time][thread][level][logger] [file:line] " prefix.
		if i := strings.Index(entry, "] "); i >= 0 && strings.HasPrefix(entry, "[") {
			if j := strings.Index(entry[i+2:], "] "); j >= 0 && strings.HasPrefix(entry[i+2:], "[") {
				entry = entry[i+2+j+2:]
			}
		}
		if strings.Contains(entry, " rejected: ") && !seen[entry] {
			seen[entry] = true
			entries = append(entries, strings.Join(strings.Fields(entry), " "))
		}
	}
	for _, line := range strings.Split(log, "\n") {
		// Each entry starts with "[" and may go on over several lines.
		if strings.HasPrefix(line, "[") {
			flush()
		}
		cur.WriteString(line + "\n")
	}
	flush()
	if len(entries) > 10 {
		entries = entries[len(entries)-10:]
	}
	return entries
}

// rejectionDetails collects the "error_state" entries of the config dump:
// Envoy keeps there why it rejected the last update of each resource.
func (e *Envoy) rejectionDetails() []string {
	status, body, err := httpGet(e.AdminAddress, "/config_dump?include_eds")
	if err != nil || status != http.StatusOK {
		return nil
	}
	var dump any
	if json.Unmarshal(body, &dump) != nil {
		return nil
	}
	var details []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if es, ok := v["error_state"].(map[string]any); ok {
				name, _ := v["name"].(string)
				d, _ := es["details"].(string)
				details = append(details, fmt.Sprintf("%s: %s", name, d))
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(dump)
	slices.Sort(details)
	return details
}

// stats fetches the counters and gauges whose names match the RE2 regexp
// filter (all of them if empty).
func (e *Envoy) stats(filter string) (map[string]uint64, error) {
	path := "/stats?format=json"
	if filter != "" {
		path += "&filter=" + url.QueryEscape(filter)
	}
	status, body, err := httpGet(e.AdminAddress, path)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %s", path, status, body)
	}
	return parseEnvoyStats(body)
}

// parseEnvoyStats reads /stats?format=json: {"stats": [{"name", "value"},
// ..., {"histograms": ...}]}. Text readouts have string values and are
// skipped along with histograms.
func parseEnvoyStats(body []byte) (map[string]uint64, error) {
	var doc struct {
		Stats []struct {
			Name  string          `json:"name"`
			Value json.RawMessage `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("parsing Envoy stats: %w", err)
	}
	stats := make(map[string]uint64, len(doc.Stats))
	for _, s := range doc.Stats {
		if s.Name == "" {
			continue
		}
		if v, err := strconv.ParseUint(string(s.Value), 10, 64); err == nil {
			stats[s.Name] = v
		}
	}
	return stats, nil
}

func exactStat(name string) string { return "^" + regexp.QuoteMeta(name) + "$" }

// nearStats lists, for a failure message, stats sharing the last part of
// name, to make a misspelt prefix obvious.
func (e *Envoy) nearStats(name string) string {
	last := name[strings.LastIndex(name, ".")+1:]
	stats, err := e.stats(regexp.QuoteMeta(last))
	if err != nil || len(stats) == 0 {
		return ""
	}
	var names []string
	for n := range stats {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) > 15 {
		names = append(names[:15], "...")
	}
	return fmt.Sprintf("; stats named like it: %s", strings.Join(names, ", "))
}

// onlyExpectedRejections reports whether Envoy logged rejections and each of
// them contains one of EnvoyOptions.ExpectRejections.
func (e *Envoy) onlyExpectedRejections() bool {
	if len(e.opts.ExpectRejections) == 0 {
		return false
	}
	lines := rejectionLogLines(e.log.String())
	if len(lines) == 0 {
		return false
	}
	for _, line := range lines {
		if !slices.ContainsFunc(e.opts.ExpectRejections, func(want string) bool { return strings.Contains(line, want) }) {
			return false
		}
	}
	return true
}
