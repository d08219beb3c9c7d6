package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is everything one run measured; --json writes it as is.
type Result struct {
	Scenario      string  `json:"scenario,omitempty"`
	Proxies       int     `json:"proxies"`
	Services      int     `json:"services"`
	Workloads     int     `json:"workloads"`
	Policies      bool    `json:"policies,omitempty"`
	DeltaFraction float64 `json:"delta_fraction"`
	NackFraction  float64 `json:"nack_fraction"`
	// Classes and Configs are the distinct proxy classes and configurations (translations)
	// pilot reports in /debug/syncz after sync; -1 unknown.
	Classes int `json:"classes"`
	Configs int `json:"configs"`

	Sync           Stats       `json:"sync"`
	RouteChange    ChangeStats `json:"virtualservice_change"`
	EndpointChange ChangeStats `json:"endpoint_change"`

	RSSAfterSync   int64 `json:"rss_after_sync_bytes"`
	RSSAfterPushes int64 `json:"rss_after_pushes_bytes"`
	RSSMax         int64 `json:"rss_max_bytes"`

	Responses    map[string]int64   `json:"responses"`
	Bytes        map[string]int64   `json:"bytes"`
	NacksSent    int64              `json:"nacks_sent"`
	PilotRejects map[string]float64 `json:"pilot_total_xds_rejects,omitempty"`
	PilotPushes  map[string]float64 `json:"pilot_xds_pushes,omitempty"`
	// PilotTranslations is skiff_xds_translations_total at the end, -1 where pilot has none.
	PilotTranslations int64 `json:"pilot_translations"`

	Reconnects   int      `json:"reconnects"`
	StreamErrors []string `json:"stream_errors,omitempty"`
	TimedOut     bool     `json:"timed_out"`
	Notes        []string `json:"notes,omitempty"`
	Elapsed      ms       `json:"elapsed_ms"`
}

// Stats are latencies out of an expected count: Count proxies (or proxy-change pairs) were
// measured of Expected.
type Stats struct {
	Count    int `json:"count"`
	Expected int `json:"expected"`
	// Min is the first proxy's latency: for a change, when pilot's push began to arrive.
	Min ms `json:"min_ms"`
	P50 ms `json:"p50_ms"`
	P99 ms `json:"p99_ms"`
	Max ms `json:"max_ms"`
	// Distinct is, for one change, how many different resource contents of the changed type
	// the proxies received (route configurations or endpoint assignments, each counted once).
	Distinct int `json:"distinct_contents,omitempty"`
}

// ChangeStats are the pooled latencies of several changes, and each change's own.
type ChangeStats struct {
	Stats
	PerChange []Stats  `json:"per_change,omitempty"`
	Errors    []string `json:"errors,omitempty"`
}

// ms is a duration in milliseconds, the unit of the JSON output.
type ms float64

func (m ms) String() string { return time.Duration(float64(m) * float64(time.Millisecond)).String() }

func newResult(cfg Config) *Result {
	return &Result{
		Scenario: cfg.Scenario, Proxies: cfg.Proxies, Services: cfg.Services, Workloads: cfg.Workloads, Policies: cfg.Policies,
		DeltaFraction: cfg.DeltaFraction, NackFraction: cfg.NackFraction,
		Responses: map[string]int64{}, Bytes: map[string]int64{},
		Classes: -1, Configs: -1, PilotTranslations: -1,
	}
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// TableHeader is the header of the summary table, in Markdown.
func TableHeader() string {
	return "| proxies × services | classes | sync p99 | VS change p99 | endpoint p99 | pilot RSS after sync → after pushes |\n" +
		"|---|---|---|---|---|---|"
}

// TableRow is one run as a row of the summary table. A figure that misses proxies says so:
// "1.2 s (1,990/2,000)".
func (r *Result) TableRow() string {
	shape := fmt.Sprintf("%s × %s", thousands(r.Proxies), thousands(r.Services))
	switch {
	case r.Workloads == r.Proxies && r.Policies:
		shape += " (distinct, a policy each)"
	case r.Workloads == r.Proxies:
		shape += " (distinct)"
	default:
		shape += fmt.Sprintf(" (%s workloads)", thousands(r.Workloads))
	}
	// What costs pilot memory and time is translations: configurations where pilot reports
	// them, else classes.
	classes := "-"
	switch {
	case r.Configs >= 0:
		classes = thousands(r.Configs)
	case r.Classes >= 0:
		classes = thousands(r.Classes)
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s → %s |", shape, classes,
		r.Sync.cell(), r.RouteChange.cell(), r.EndpointChange.cell(), bytesIEC(r.RSSAfterSync), bytesIEC(r.RSSAfterPushes))
}

func (s Stats) cell() string {
	if s.Expected == 0 {
		return "-"
	}
	if s.Count == 0 {
		return fmt.Sprintf("none (0/%s)", thousands(s.Expected))
	}
	out := humanDuration(s.P99)
	if s.Count < s.Expected {
		out += fmt.Sprintf(" (%s/%s)", thousands(s.Count), thousands(s.Expected))
	}
	return out
}

// WriteDetails prints what the table row leaves out.
func (r *Result) WriteDetails(w io.Writer) {
	name := r.Scenario
	if name == "" {
		name = "custom"
	}
	fmt.Fprintf(w, "%s: %d proxies × %d services, %d workloads, delta %.0f%%, NACK %.0f%%, %s\n",
		name, r.Proxies, r.Services, r.Workloads, 100*r.DeltaFraction, 100*r.NackFraction, humanDuration(r.Elapsed))
	line := func(label string, s Stats) {
		fmt.Fprintf(w, "  %-22s %s/%s  min %s  p50 %s  p99 %s  max %s\n", label,
			thousands(s.Count), thousands(s.Expected), humanDuration(s.Min), humanDuration(s.P50), humanDuration(s.P99), humanDuration(s.Max))
	}
	fmt.Fprintf(w, "  %-22s %s classes, %s configurations\n", "pilot", countOrDash(r.Classes), countOrDash(r.Configs))
	line("sync", r.Sync)
	line("virtualservice change", r.RouteChange.Stats)
	line("endpoint change", r.EndpointChange.Stats)
	fmt.Fprintf(w, "  %-22s after sync %s, after pushes %s, max %s\n", "pilot RSS",
		bytesIEC(r.RSSAfterSync), bytesIEC(r.RSSAfterPushes), bytesIEC(r.RSSMax))
	for _, t := range slices.Sorted(maps.Keys(r.Responses)) {
		fmt.Fprintf(w, "  %-22s %s responses, %s\n", t+" received", thousands(int(r.Responses[t])), bytesIEC(r.Bytes[t]))
	}
	fmt.Fprintf(w, "  %-22s sent %d; pilot_total_xds_rejects %s\n", "NACKs", r.NacksSent, formatByType(r.PilotRejects))
	fmt.Fprintf(w, "  %-22s %s; translations %s\n", "pilot_xds_pushes", formatByType(r.PilotPushes), countOrDash(int(r.PilotTranslations)))
	if r.Reconnects > 0 {
		fmt.Fprintf(w, "  %-22s %d, e.g. %s\n", "reconnects", r.Reconnects, strings.Join(r.StreamErrors, "; "))
	}
	for _, e := range append(r.RouteChange.Errors, r.EndpointChange.Errors...) {
		fmt.Fprintf(w, "  change error: %s\n", e)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func countOrDash(n int) string {
	if n < 0 {
		return "-"
	}
	return thousands(n)
}

func formatByType(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%s", k, strconv.FormatFloat(m[k], 'f', -1, 64)))
	}
	return strings.Join(parts, " ")
}

// humanDuration rounds to what a person compares: "850 ms", "1.24 s", "1 m 5 s".
func humanDuration(m ms) string {
	d := time.Duration(float64(m) * float64(time.Millisecond))
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(m))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(m))
	case d < time.Minute:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%d m %d s", int(d.Minutes()), int(d.Seconds())%60)
	}
}

// bytesIEC prints a size as "1.6 GiB"; 0 (unknown) as "-".
func bytesIEC(b int64) string {
	if b <= 0 {
		return "-"
	}
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

// thousands prints 2000 as "2,000", as the scale table does.
func thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func msOf(d time.Duration) ms { return ms(float64(d) / float64(time.Millisecond)) }
