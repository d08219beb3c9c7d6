package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// HostileConfig is one `skiff-load hostile` run: a fleet of well-behaved proxies measuring
// VirtualService changes while one attack runs against the same pilot.
type HostileConfig struct {
	Attack    string
	Attackers int // 0: the attack's default
	// Rate bounds the requests per second of the attacks that repeat (garbage, unknown-type,
	// huge-names), across all their workers.
	Rate float64

	Proxies, Services int
	Changes           int
	// Settle is the time between the attack's start and the first change, Gap between changes.
	Settle, Gap time.Duration
	PilotBinary string
	PilotLog    string
	// SendTimeout and MaxStreams are passed to pilot (--xds-send-timeout, --xds-max-streams)
	// when set.
	SendTimeout time.Duration
	MaxStreams  int
	Timeout     time.Duration
}

// HostileResult is what one run measured.
type HostileResult struct {
	Attack    string `json:"attack"`
	Attackers int    `json:"attackers"`
	// Outcomes counts how the attackers' streams ended, by "CODE: message" (numbers in the
	// message folded to N).
	Outcomes map[string]int `json:"outcomes"`
	// Closed is pilot's skiff_xds_streams_closed_total by reason, and Refusals its
	// skiff_sds_refusals_total by reason.
	Closed   map[string]float64 `json:"closed"`
	Refusals map[string]float64 `json:"sds_refusals"`
	Route    ChangeStats        `json:"virtualservice_change"`
	// RSS of pilot: after the fleet synced, the highest while the attack ran, and at its end.
	RSSBefore int64    `json:"rss_before_bytes"`
	RSSPeak   int64    `json:"rss_peak_bytes"`
	RSSAfter  int64    `json:"rss_after_bytes"`
	Notes     []string `json:"notes,omitempty"`
}

func newHostileCommand() *cobra.Command {
	cfg := HostileConfig{}
	var attacks []string
	var jsonPath string
	cmd := &cobra.Command{
		Use:   "hostile",
		Short: "Measure push latency and pilot's memory while slow or hostile clients attack it",
		Long: `hostile runs, for each --attack, a fresh pilot with --proxies well-behaved simulated
Envoys (state of the world, as in bench) that measure --changes VirtualService changes while
the attack runs against the same pilot, and prints a Markdown table: what the attackers got,
the proxies' change latency p50/p99, and pilot's RSS before, at its peak during, and after
the attack. "none" is the baseline.

Attacks:
  none          no attack
  never-read    streams that subscribe to clusters and listeners and never read (64 kB
                HTTP/2 windows): pilot closes them after --pilot-send-timeout
  garbage       streams that send undecodable bytes, a delta request on the SotW method, or a
                request without a type URL, at --rate
  unknown-type  streams that ask for a type URL pilot does not serve, at --rate
  huge-names    requests of 1,000,000 names (9 MB, over gRPC's 4 MB limit) and of 100,001
                names (1 MB, over pilot's name limit), at --rate
  streams       --attackers idle subscribers (a listener request each, responses ACKed),
                100 per connection, held open during the changes; beyond
                --pilot-max-streams they are refused
  spoof         streams whose node ID names a WorkloadEntry at another address, asking for
                its certificate (SDS default) and its configuration`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var results []*HostileResult
			for _, a := range attacks {
				if _, ok := attackDefaults[a]; !ok {
					return fmt.Errorf("unknown attack %q: want one of %s", a, strings.Join(slices.Sorted(maps.Keys(attackDefaults)), ", "))
				}
			}
			for _, a := range attacks {
				c := cfg
				c.Attack = a
				slog.Info("running", "attack", a)
				r, err := RunHostile(cmd.Context(), c)
				if err != nil {
					return fmt.Errorf("attack %q: %w", a, err)
				}
				results = append(results, r)
				if cmd.Context().Err() != nil {
					break
				}
			}
			WriteHostileTable(cmd.OutOrStdout(), results)
			if jsonPath != "" {
				js, err := json.MarshalIndent(results, "", "  ")
				if err != nil {
					return fmt.Errorf("encoding results: %w", err)
				}
				if err := os.WriteFile(jsonPath, append(js, '\n'), 0o644); err != nil {
					return fmt.Errorf("writing --json: %w", err)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&attacks, "attack", []string{"none", "never-read", "garbage", "unknown-type", "huge-names", "streams", "spoof"}, "attacks to run, one pilot each")
	f.IntVar(&cfg.Attackers, "attackers", 0, "hostile streams or workers (0: the attack's default: never-read 50, garbage 4, unknown-type 4, huge-names 2, streams 10000, spoof 100)")
	f.Float64Var(&cfg.Rate, "rate", 200, "requests per second of the repeating attacks (garbage, unknown-type; huge-names at a tenth of it)")
	f.IntVar(&cfg.Proxies, "proxies", 100, "well-behaved simulated Envoys, each its own workload")
	f.IntVar(&cfg.Services, "services", 1000, "HTTP services in the mesh")
	f.IntVar(&cfg.Changes, "changes", 5, "VirtualService changes measured during each attack")
	f.DurationVar(&cfg.Settle, "settle", 2*time.Second, "time between the attack's start and the first change")
	f.DurationVar(&cfg.Gap, "gap", 500*time.Millisecond, "quiet time between changes")
	f.StringVar(&cfg.PilotBinary, "pilot", "bin/pilot", "pilot binary to start (go build -o bin/ ./cmd/pilot)")
	f.StringVar(&cfg.PilotLog, "pilot-log", "", "file for the started pilot's output (appended to per attack)")
	f.DurationVar(&cfg.SendTimeout, "pilot-send-timeout", 0, "pilot's --xds-send-timeout (0: pilot's default)")
	f.IntVar(&cfg.MaxStreams, "pilot-max-streams", 0, "pilot's --xds-max-streams (0: pilot's default)")
	f.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "hard bound on each attack's run")
	f.StringVar(&jsonPath, "json", "", "write the results as JSON to this file")
	return cmd
}

// attackDefaults is each attack's number of attackers when --attackers is 0.
var attackDefaults = map[string]int{
	"none": 0, "never-read": 50, "garbage": 4, "unknown-type": 4, "huge-names": 2, "streams": 10000, "spoof": 100,
}

// RunHostile runs one attack against a fresh pilot while a fleet measures VirtualService
// changes.
func RunHostile(parent context.Context, hc HostileConfig) (*HostileResult, error) {
	if hc.Attackers <= 0 {
		hc.Attackers = attackDefaults[hc.Attack]
	}
	ctx, cancel := context.WithTimeout(parent, hc.Timeout)
	defer cancel()
	res := &HostileResult{Attack: hc.Attack, Attackers: hc.Attackers, Outcomes: map[string]int{}}
	if hc.Attack == "none" {
		res.Attackers = 0
	}

	dir, err := os.MkdirTemp("", "skiff-load-hostile-")
	if err != nil {
		return nil, fmt.Errorf("mesh folder: %w", err)
	}
	defer os.RemoveAll(dir)
	mesh, err := GenerateMesh(dir, hc.Services)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "victim.yaml"), []byte(victimYAML), 0o644); err != nil {
		return nil, fmt.Errorf("writing the spoofed workload: %w", err)
	}

	var extra []string
	if hc.SendTimeout != 0 {
		extra = append(extra, "--xds-send-timeout", hc.SendTimeout.String())
	}
	if hc.MaxStreams != 0 {
		extra = append(extra, "--xds-max-streams", fmt.Sprint(hc.MaxStreams))
	}
	pilot, err := StartPilot(ctx, hc.PilotBinary, dir, "", extra...)
	if err != nil {
		return nil, err
	}
	defer func() {
		pilot.Stop()
		if hc.PilotLog != "" {
			appendFile(hc.PilotLog, fmt.Sprintf("=== attack %s\n%s", hc.Attack, pilot.Output()))
		}
	}()

	cfg := Config{Proxies: hc.Proxies, Services: hc.Services, Workloads: hc.Proxies, Changes: hc.Changes, Timeout: hc.Timeout,
		Settle: hc.Settle, Gap: hc.Gap}
	cfg.defaults()
	fleet, err := NewFleet(FleetConfig{Proxies: hc.Proxies, Workloads: hc.Proxies, StreamsPerConn: 50, Concurrency: 200}, pilot.XDSAddress)
	if err != nil {
		return nil, err
	}
	defer fleet.Close()
	fleetCtx, stopFleet := context.WithCancel(ctx)
	defer func() { stopFleet(); fleet.Wait() }()
	fleet.Start(fleetCtx)
	cfg.waitSynced(ctx, fleet, pilot)
	if fleet.Synced() < hc.Proxies {
		res.note("only %d of %d proxies synced", fleet.Synced(), hc.Proxies)
	}
	res.RSSBefore = pilot.RSS()

	attack := newAttack(hc, pilot.XDSAddress)
	attackCtx, stopAttack := context.WithCancel(ctx)
	rss := startRSSSampler(attackCtx, pilot)
	if err := attack.start(attackCtx); err != nil {
		stopAttack()
		return nil, fmt.Errorf("starting the attack: %w", err)
	}
	res.Route = cfg.measureChanges(ctx, fleet, probeRoutes, mesh)
	res.RSSPeak = max(rss.Load(), pilot.RSS())
	attack.finish(ctx, pilot, stopAttack)
	res.RSSAfter = pilot.RSS()
	maps.Copy(res.Outcomes, attack.outcomes())

	last, cancelLast := tail(ctx)
	defer cancelLast()
	if m, err := pilot.MetricsBy(last, "reason", "skiff_xds_streams_closed_total", "skiff_sds_refusals_total"); err == nil {
		res.Closed, res.Refusals = m["skiff_xds_streams_closed_total"], m["skiff_sds_refusals_total"]
	} else {
		res.note("metrics: %v", err)
	}
	if fleet.Reconnects() > 0 {
		res.note("well-behaved proxies reconnected %d times", fleet.Reconnects())
	}
	return res, nil
}

func (r *HostileResult) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func appendFile(path, text string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		slog.Warn("writing the pilot log", "error", err)
		return
	}
	defer f.Close()
	_, _ = f.WriteString(text)
}

// WriteHostileTable prints the results as a Markdown table, with what the attackers got and
// what pilot counted below it.
func WriteHostileTable(w io.Writer, results []*HostileResult) {
	fmt.Fprintln(w, "| attack | attackers | VS change p50 | VS change p99 | reached | pilot RSS before → peak → after |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d/%d | %s → %s → %s |\n", r.Attack, thousands(r.Attackers),
			humanDuration(r.Route.P50), humanDuration(r.Route.P99), r.Route.Count, r.Route.Expected,
			bytesIEC(r.RSSBefore), bytesIEC(r.RSSPeak), bytesIEC(r.RSSAfter))
	}
	fmt.Fprintln(w)
	for _, r := range results {
		fmt.Fprintf(w, "%s:\n", r.Attack)
		for _, k := range slices.Sorted(maps.Keys(r.Outcomes)) {
			fmt.Fprintf(w, "  %6d × %s\n", r.Outcomes[k], k)
		}
		for _, k := range slices.Sorted(maps.Keys(r.Closed)) {
			fmt.Fprintf(w, "  pilot skiff_xds_streams_closed_total{reason=%q} %v\n", k, r.Closed[k])
		}
		for _, k := range slices.Sorted(maps.Keys(r.Refusals)) {
			fmt.Fprintf(w, "  pilot skiff_sds_refusals_total{reason=%q} %v\n", k, r.Refusals[k])
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
}
