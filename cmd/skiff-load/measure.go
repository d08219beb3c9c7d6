package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// Config is one measured run.
type Config struct {
	Scenario      string
	Proxies       int
	Services      int
	Workloads     int
	DeltaFraction float64
	NackFraction  float64
	// Policies adds an AuthorizationPolicy per workload (WritePolicies).
	Policies bool
	// Changes is how many VirtualService changes, and then how many endpoint changes, are
	// measured, each on its own service.
	Changes int

	PilotBinary string
	PilotLog    string // file for the started pilot's output; empty: kept in memory
	// PilotAddress uses a running pilot (which must serve MeshDir) instead of starting one.
	PilotAddress       string
	PilotMonitoring    string
	PilotPID           int
	MeshDir            string // empty: a temporary folder, removed afterwards
	StreamsPerConn     int
	Concurrency        int
	Timeout            time.Duration // the whole run, after which it reports what it has
	ChangeTimeout      time.Duration // per change
	Settle             time.Duration // quiet time before the first change
	Gap                time.Duration // quiet time between changes
	ProgressInterval   time.Duration
	syncPollInterval   time.Duration
	changePollInterval time.Duration
}

// Run measures one scenario and returns what it saw, also when the run timed out or proxies
// failed; the error is for a run that could not start (no pilot, no mesh).
func Run(parent context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	started := time.Now()
	ctx, cancel := context.WithTimeout(parent, cfg.Timeout)
	defer cancel()
	res := newResult(cfg)

	dir := cfg.MeshDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "skiff-load-mesh-"); err != nil {
			return nil, fmt.Errorf("mesh folder: %w", err)
		}
		defer os.RemoveAll(dir)
	}
	mesh, err := GenerateMesh(dir, cfg.Services)
	if err != nil {
		return nil, err
	}
	if cfg.Policies {
		if err := WritePolicies(dir, cfg.Workloads); err != nil {
			return nil, err
		}
	}
	slog.Info("generated mesh", "dir", dir, "services", cfg.Services, "policies", cfg.Policies)

	var pilot *Pilot
	if cfg.PilotAddress != "" {
		pilot, err = ExternalPilot(ctx, cfg.PilotAddress, cfg.PilotMonitoring, cfg.PilotPID)
	} else {
		pilot, err = StartPilot(ctx, cfg.PilotBinary, dir, cfg.PilotLog)
	}
	if err != nil {
		return nil, err
	}
	defer pilot.Stop()
	rss := startRSSSampler(ctx, pilot)

	fleet, err := NewFleet(FleetConfig{
		Proxies: cfg.Proxies, Workloads: cfg.Workloads,
		DeltaFraction: cfg.DeltaFraction, NackFraction: cfg.NackFraction,
		StreamsPerConn: cfg.StreamsPerConn, Concurrency: cfg.Concurrency,
	}, pilot.XDSAddress)
	if err != nil {
		return nil, err
	}
	defer fleet.Close()
	fleetCtx, stopFleet := context.WithCancel(ctx)
	defer func() { stopFleet(); fleet.Wait() }()
	fleet.Start(fleetCtx)

	cfg.waitSynced(ctx, fleet, pilot)
	res.Sync = statsOf(fleet.SyncTimes(), cfg.Proxies)
	res.RSSAfterSync = pilot.RSS()
	res.Classes, res.Configs = -1, -1
	last, cancelLast := tail(ctx)
	defer cancelLast()
	if classes, configs, err := pilot.Sharing(last); err == nil {
		res.Classes, res.Configs = classes, configs
	} else {
		res.note("classes: %v", err)
	}
	slog.Info("sync done", "synced", fleet.Synced(), "of", cfg.Proxies, "p99", res.Sync.P99, "rss", res.RSSAfterSync)

	if fleet.Synced() > 0 && cfg.Changes > 0 {
		res.RouteChange = cfg.measureChanges(ctx, fleet, probeRoutes, mesh)
		res.EndpointChange = cfg.measureChanges(ctx, fleet, probeEndpoints, mesh)
	}
	res.RSSAfterPushes = pilot.RSS()
	res.RSSMax = max(rss.Load(), res.RSSAfterPushes)

	last, cancelLast = tail(ctx)
	defer cancelLast()
	if m, err := pilot.Metrics(last, "pilot_total_xds_rejects", "pilot_xds_pushes", "skiff_xds_translations_total"); err == nil {
		res.PilotRejects, res.PilotPushes = m["pilot_total_xds_rejects"], m["pilot_xds_pushes"]
		res.PilotTranslations = -1
		if v, ok := m["skiff_xds_translations_total"][""]; ok {
			res.PilotTranslations = int64(v)
		}
	} else {
		res.note("metrics: %v", err)
	}
	for t := range numTypes {
		if n := fleet.responses[t].Load(); n > 0 {
			res.Responses[typeNames[t]] = n
			res.Bytes[typeNames[t]] = fleet.bytes[t].Load()
		}
	}
	res.NacksSent = fleet.nacks.Load()
	res.Reconnects = fleet.Reconnects()
	res.StreamErrors = fleet.FirstErrors(5)
	res.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
	if res.TimedOut {
		res.note("the run hit --timeout %s; figures are what was measured until then", cfg.Timeout)
	}
	res.Elapsed = msOf(time.Since(started))
	return res, nil
}

// tail is a context for a last reading from pilot: it outlives the run's deadline by a few
// seconds, so a run that timed out still reports classes and metrics.
func tail(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

func (cfg *Config) defaults() {
	if cfg.Workloads <= 0 {
		cfg.Workloads = cfg.Proxies
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.ChangeTimeout <= 0 {
		cfg.ChangeTimeout = time.Minute
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = 5 * time.Second
	}
	cfg.syncPollInterval = 50 * time.Millisecond
	cfg.changePollInterval = 10 * time.Millisecond
}

// waitSynced waits until every proxy has synced, pilot has exited, or the run's deadline.
func (cfg *Config) waitSynced(ctx context.Context, fleet *Fleet, pilot *Pilot) {
	tick := time.NewTicker(cfg.syncPollInterval)
	defer tick.Stop()
	lastLog := time.Now()
	for fleet.Synced() < cfg.Proxies {
		if pilot.exited() {
			slog.Error("pilot exited", "output", pilot.Output())
			return
		}
		select {
		case <-ctx.Done():
			slog.Warn("stopped waiting for sync", "synced", fleet.Synced(), "of", cfg.Proxies, "error", ctx.Err())
			return
		case <-tick.C:
		}
		if time.Since(lastLog) >= cfg.ProgressInterval {
			lastLog = time.Now()
			slog.Info("syncing", "synced", fleet.Synced(), "of", cfg.Proxies, "reconnects", fleet.Reconnects())
		}
	}
}

// measureChanges makes cfg.Changes changes of one kind, one after the other, each on its own
// service, and measures for each how long every synced proxy took to receive it. A change that
// does not reach every proxy within ChangeTimeout counts the missing ones and moves on.
func (cfg *Config) measureChanges(ctx context.Context, fleet *Fleet, kind probeKind, mesh *Mesh) ChangeStats {
	var all []time.Duration
	out := ChangeStats{}
	for c := range cfg.Changes {
		pause := cfg.Gap
		if c == 0 {
			pause = cfg.Settle
		}
		if !sleep(ctx, pause) {
			break
		}
		// Route changes take evenly spaced services, endpoint changes the ones halfway between,
		// so no service is changed twice (with at least 2×Changes services).
		stride := max(mesh.Services()/cfg.Changes, 1)
		svc := (c * stride) % mesh.Services()
		if kind == probeEndpoints {
			svc = (svc + stride/2) % mesh.Services()
		}
		expected := fleet.SyncedMask()
		var p *probe
		var write func() error
		switch kind {
		case probeRoutes:
			p = newProbe(kind, cfg.Proxies, weightsMatcher(svc, 80, 20))
			write = func() error { return mesh.SetWeights(svc, 80, 20) }
		case probeEndpoints:
			addr := endpointAddr(128, svc)
			p = newProbe(kind, cfg.Proxies, addressMatcher(svc, addr))
			write = func() error { return mesh.SetEndpointV1(svc, addr) }
		}
		want := 0
		for _, e := range expected {
			if e {
				want++
			}
		}
		p.start = time.Now()
		fleet.probe.Store(p)
		if err := write(); err != nil {
			out.Errors = append(out.Errors, err.Error())
			fleet.probe.Store(nil)
			continue
		}
		cfg.waitReached(ctx, p, want)
		fleet.probe.Store(nil)
		reached := 0
		var lat []time.Duration
		for i, e := range expected {
			if d := p.arrived[i].Load(); e && d != 0 {
				reached++
				lat = append(lat, time.Duration(d))
			}
		}
		s := statsOf(lat, want)
		s.Distinct = p.distinct()
		slog.Info("change measured", "kind", kindName(kind), "service", serviceName(svc), "reached", reached, "of", want, "min", s.Min, "p50", s.P50, "p99", s.P99, "max", s.Max, "distinct_contents", s.Distinct)
		out.PerChange = append(out.PerChange, s)
		out.Expected += want
		all = append(all, lat...)
	}
	out.Stats = statsOf(all, out.Expected)
	return out
}

// waitReached polls until want proxies have the change, or ChangeTimeout, or the deadline.
func (cfg *Config) waitReached(ctx context.Context, p *probe, want int) {
	ctx, cancel := context.WithTimeout(ctx, cfg.ChangeTimeout)
	defer cancel()
	tick := time.NewTicker(cfg.changePollInterval)
	defer tick.Stop()
	for int(p.reached.Load()) < want {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func kindName(k probeKind) string {
	if k == probeRoutes {
		return "virtualservice"
	}
	return "endpoint"
}

// startRSSSampler keeps the highest RSS seen, every 500 ms, until ctx ends.
func startRSSSampler(ctx context.Context, pilot *Pilot) *atomic.Int64 {
	var peak atomic.Int64
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if r := pilot.RSS(); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return &peak
}

// sleep waits d unless ctx ends first; it reports whether the run goes on.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// statsOf summarises latencies out of expected.
func statsOf(lat []time.Duration, expected int) Stats {
	s := Stats{Count: len(lat), Expected: expected}
	if len(lat) == 0 {
		return s
	}
	slices.Sort(lat)
	s.Min, s.P50, s.P99, s.Max = msOf(lat[0]), msOf(percentile(lat, 50)), msOf(percentile(lat, 99)), msOf(lat[len(lat)-1])
	return s
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 × n)
	return sorted[max(rank, 1)-1]
}
