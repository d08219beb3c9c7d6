// Command skiff-load measures pilot at scale on one machine. It generates a mesh of HTTP
// services as a folder of Istio YAML, starts pilot on it (or uses a running one), and connects
// N simulated Envoys as in-process ADS clients that ask for, acknowledge and follow
// configuration the way Envoy does (CDS → EDS → LDS → RDS, state of the world or delta). It
// then reports how long the proxies took to sync, how long a VirtualService change and an
// endpoint change took to reach every proxy, and pilot's memory.
//
// The proxies behave like Envoy in what they ask for and answer, not in what they do with the
// configuration: they decode only what decides their next request, and share the decoding
// between proxies that receive identical bytes, so that a 2,000-proxy run leaves the machine's
// cores to pilot.
//
//	skiff-load bench --scenario smoke
//	skiff-load bench --scenario 100x1000,500x1000 --json out.json
//	skiff-load bench --proxies 300 --services 1000 --workloads 30 --delta-fraction 0.5
//	skiff-load mesh --services 1000 DIR   # the mesh alone, for a pilot started by hand
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // --debug-address
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// scenario is a named shape from the scale table: proxies × services, replicas of workloads,
// and whether each workload has a policy of its own (see --policies).
type scenario struct {
	proxies, services, workloads int
	policies                     bool
}

// scenarios are the rows of the scale table, plus smoke, which the tests run.
var scenarios = map[string]scenario{
	"smoke":              {proxies: 20, services: 50, workloads: 4},
	"100x1000":           {proxies: 100, services: 1000, workloads: 100},
	"500x1000":           {proxies: 500, services: 1000, workloads: 500},
	"2000x100":           {proxies: 2000, services: 100, workloads: 2000},
	"2000x100-replicas":  {proxies: 2000, services: 100, workloads: 4},
	"2000x1000-replicas": {proxies: 2000, services: 1000, workloads: 50},
	"2000x1000":          {proxies: 2000, services: 1000, workloads: 2000},
	"2000x1000-policies": {proxies: 2000, services: 1000, workloads: 2000, policies: true},
}

func scenarioNames() []string {
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "skiff-load:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "skiff-load",
		Short:         "Measure pilot with many simulated Envoys on one machine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newBenchCommand(), newMeshCommand(), newHostileCommand())
	return root
}

func newBenchCommand() *cobra.Command {
	cfg := Config{}
	var names []string
	var jsonPath, cpuProfile, debugAddress string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run scenarios and print the scale table",
		Long: `bench runs each --scenario in turn (or one run shaped by --proxies, --services and
--workloads) against a fresh pilot, prints a Markdown table row per run with details below,
and with --json writes every result.

Scenarios: ` + strings.Join(scenarioNames(), ", ") + `.
Flags given explicitly override a scenario's proxies, services and workloads.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			runs, err := plan(cmd, cfg, names)
			if err != nil {
				return err
			}
			if debugAddress != "" {
				// Goroutine dumps of the fleet while it runs: how to see where a slow change
				// waits on the receiving side.
				lis, err := net.Listen("tcp", debugAddress)
				if err != nil {
					return fmt.Errorf("--debug-address: %w", err)
				}
				defer lis.Close()
				go http.Serve(lis, http.DefaultServeMux) //nolint:errcheck // ends when lis closes
				slog.Info("serving /debug/pprof/", "address", lis.Addr().String())
			}
			if cpuProfile != "" {
				// The simulated proxies share the machine with pilot: what they cost is part
				// of reading the figures.
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			var results []*Result
			for _, c := range runs {
				slog.Info("running", "scenario", c.Scenario, "proxies", c.Proxies, "services", c.Services, "workloads", c.Workloads)
				r, err := Run(cmd.Context(), c)
				if err != nil {
					return fmt.Errorf("scenario %q: %w", c.Scenario, err)
				}
				results = append(results, r)
				if cmd.Context().Err() != nil {
					break
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, TableHeader())
			for _, r := range results {
				fmt.Fprintln(out, r.TableRow())
			}
			fmt.Fprintln(out)
			for _, r := range results {
				r.WriteDetails(out)
			}
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
	f.StringSliceVar(&names, "scenario", nil, "named scenario(s), comma-separated or repeated: "+strings.Join(scenarioNames(), ", "))
	f.IntVar(&cfg.Proxies, "proxies", 20, "simulated Envoys (N)")
	f.IntVar(&cfg.Services, "services", 50, "HTTP services in the mesh (S), over namespaces ns-0..ns-9")
	f.IntVar(&cfg.Workloads, "workloads", 0, "proxies are replicas of this many workloads (0: every proxy its own workload)")
	f.Float64Var(&cfg.DeltaFraction, "delta-fraction", 0, "fraction of proxies using delta xDS (the rest state of the world)")
	delta := f.Bool("delta", false, "every proxy uses delta xDS (--delta-fraction 1)")
	f.Float64Var(&cfg.NackFraction, "nack-fraction", 0, "fraction of proxies that NACK their first RDS response")
	f.BoolVar(&cfg.Policies, "policies", false, "an AuthorizationPolicy per workload, selecting it by app label, so that every workload's configuration differs (without it, workloads that no selector tells apart share one)")
	f.IntVar(&cfg.Changes, "changes", 5, "VirtualService changes, and then endpoint changes, measured one after the other")
	f.StringVar(&cfg.PilotBinary, "pilot", "bin/pilot", "pilot binary to start (go build -o bin/ ./cmd/pilot)")
	f.StringVar(&cfg.PilotLog, "pilot-log", "", "file for the started pilot's output (default: shown only if it fails to start)")
	f.StringVar(&cfg.PilotAddress, "pilot-address", "", "ADS address of a running pilot to use instead of starting one; it must serve --mesh-dir")
	f.StringVar(&cfg.PilotMonitoring, "pilot-monitoring-address", "", "monitoring address (/ready, /metrics, /debug) of the running pilot")
	f.IntVar(&cfg.PilotPID, "pilot-pid", 0, "PID of the running pilot, to read its RSS")
	f.StringVar(&cfg.MeshDir, "mesh-dir", "", "folder to generate the mesh into (default: a temporary folder, removed afterwards)")
	f.IntVar(&cfg.StreamsPerConn, "streams-per-conn", 50, "ADS streams sharing one gRPC connection")
	f.IntVar(&cfg.Concurrency, "concurrency", 200, "proxies syncing at once; the next connects when one has synced")
	f.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "hard bound on each run; the figures measured so far are reported")
	f.DurationVar(&cfg.ChangeTimeout, "change-timeout", time.Minute, "how long one change may take to reach every proxy")
	f.DurationVar(&cfg.Settle, "settle", 2*time.Second, "quiet time after sync before the first change of each kind")
	f.DurationVar(&cfg.Gap, "gap", 500*time.Millisecond, "quiet time between changes")
	f.StringVar(&jsonPath, "json", "", "write the full results as JSON to this file")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write skiff-load's own CPU profile to this file")
	f.StringVar(&debugAddress, "debug-address", "", "serve skiff-load's own /debug/pprof/ on this address while it runs (e.g. 127.0.0.1:6060)")
	cmd.PreRun = func(*cobra.Command, []string) {
		if *delta {
			cfg.DeltaFraction = 1
		}
	}
	return cmd
}

// plan turns the flags into runs: one per scenario, or one from the shape flags alone.
func plan(cmd *cobra.Command, base Config, names []string) ([]Config, error) {
	if base.DeltaFraction < 0 || base.DeltaFraction > 1 || base.NackFraction < 0 || base.NackFraction > 1 {
		return nil, fmt.Errorf("--delta-fraction and --nack-fraction are fractions, 0 to 1")
	}
	if base.PilotAddress != "" && base.MeshDir == "" {
		return nil, fmt.Errorf("--pilot-address needs --mesh-dir: the folder that pilot serves, where the mesh is written")
	}
	if len(names) == 0 {
		return []Config{base}, nil
	}
	var runs []Config
	for _, n := range names {
		s, ok := scenarios[n]
		if !ok {
			return nil, fmt.Errorf("unknown scenario %q: want one of %s", n, strings.Join(scenarioNames(), ", "))
		}
		c := base
		c.Scenario = n
		if !cmd.Flags().Changed("proxies") {
			c.Proxies = s.proxies
		}
		if !cmd.Flags().Changed("services") {
			c.Services = s.services
		}
		if !cmd.Flags().Changed("workloads") {
			c.Workloads = s.workloads
		}
		if !cmd.Flags().Changed("policies") {
			c.Policies = s.policies
		}
		runs = append(runs, c)
	}
	return runs, nil
}

func newMeshCommand() *cobra.Command {
	var services int
	cmd := &cobra.Command{
		Use:   "mesh DIR",
		Short: "Write the generated mesh into DIR, for a pilot started by hand",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := GenerateMesh(args[0], services)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d services into %s\n", m.Services(), m.Dir)
			return nil
		},
	}
	cmd.Flags().IntVar(&services, "services", 1000, "HTTP services in the mesh")
	return cmd
}
