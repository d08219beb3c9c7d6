package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/xds"
)

type serveOptions struct {
	configDir         string
	xdsAddress        string
	monitoringAddress string
	reflection        bool
	logger            *slog.Logger
}

// serve runs pilot until ctx ends: load the folder, push, watch for changes, and serve ADS
// and the monitoring endpoints.
func serve(ctx context.Context, opts serveOptions) error {
	log := opts.logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	server := xds.New(xds.Options{Reflection: opts.reflection, Logger: log, Registry: reg})
	source := newFolderSource(opts.configDir, server, log, reg)

	xdsListener, err := net.Listen("tcp", opts.xdsAddress)
	if err != nil {
		return fmt.Errorf("xDS listener: %w", err)
	}
	monListener, err := net.Listen("tcp", opts.monitoringAddress)
	if err != nil {
		xdsListener.Close()
		return fmt.Errorf("monitoring listener: %w", err)
	}

	var ready atomic.Bool
	mon := &http.Server{Handler: monitoringMux(reg, server, source, &ready), ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Go(func() { server.Run(ctx) })
	wg.Go(func() {
		if err := server.Serve(xdsListener); err != nil {
			errs <- fmt.Errorf("xDS server: %w", err)
		}
	})
	wg.Go(func() {
		if err := mon.Serve(monListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("monitoring server: %w", err)
		}
	})

	// The first load happens once the folder is watched, so no edit falls between the two.
	loaded := make(chan struct{})
	watcher := &config.Watcher{
		Dir:      opts.configDir,
		OnChange: func() { source.reload(time.Now()) },
		Ready:    func() { source.reload(time.Now()); close(loaded) },
		Logger:   log,
	}
	wg.Go(func() {
		if err := watcher.Run(ctx); err != nil {
			errs <- fmt.Errorf("config folder: %w", err)
		}
	})
	select {
	case <-loaded:
		ready.Store(true)
	case err := <-errs:
		cancel()
		server.Stop()
		_ = mon.Close()
		wg.Wait()
		return err
	}
	log.Info("pilot serving", "xds", xdsListener.Addr().String(), "monitoring", monListener.Addr().String(), "config-dir", opts.configDir)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	log.Info("pilot stopping")
	cancel()
	server.Stop()
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = mon.Shutdown(shutdownCtx)
	wg.Wait()
	return runErr
}

// folderSource turns the config folder into snapshots: every reload re-reads the folder (the
// loader keeps the last good version of each broken file) and pushes the result.
type folderSource struct {
	loader *config.Loader
	server *xds.Server
	log    *slog.Logger

	errorsGauge prometheus.Gauge
	reloads     *prometheus.CounterVec

	mu     sync.Mutex
	errors []*config.Error
	loaded time.Time
}

func newFolderSource(dir string, server *xds.Server, log *slog.Logger, reg prometheus.Registerer) *folderSource {
	s := &folderSource{
		loader: config.NewLoader(dir),
		server: server,
		log:    log,
		errorsGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_config_errors",
			Help: "Configuration documents currently rejected; their files are served at their last good version.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_config_reloads_total",
			Help: "Reloads of the configuration folder, by result (ok, or error when any document was rejected).",
		}, []string{"result"}),
	}
	reg.MustRegister(s.errorsGauge, s.reloads)
	return s
}

func (s *folderSource) reload(changedAt time.Time) {
	set, errs := s.loader.Load()
	for _, e := range errs {
		s.log.Error("configuration rejected; serving the last good version of the file", "error", e)
	}
	result := "ok"
	if len(errs) > 0 {
		result = "error"
	}
	s.reloads.WithLabelValues(result).Inc()
	s.errorsGauge.Set(float64(len(errs)))
	s.mu.Lock()
	s.errors, s.loaded = errs, time.Now()
	s.mu.Unlock()
	snap := model.Build(set)
	s.log.Info("configuration loaded", "services", len(snap.Services), "virtualServices", len(snap.VirtualServices),
		"destinationRules", len(snap.DestinationRules), "errors", len(errs))
	s.server.Push(snap, changedAt)
}

// configErrorsView is /debug/config_errors.
type configErrorsView struct {
	Loaded time.Time      `json:"loaded"`
	Errors []errorDetails `json:"errors"`
}

type errorDetails struct {
	File      string `json:"file"`
	Document  int    `json:"document"`
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	Field     string `json:"field,omitempty"`
	Message   string `json:"message"`
}

func (s *folderSource) view() configErrorsView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := configErrorsView{Loaded: s.loaded, Errors: []errorDetails{}}
	for _, e := range s.errors {
		v.Errors = append(v.Errors, errorDetails{File: e.File, Document: e.Doc, Kind: e.Kind, Namespace: e.Namespace,
			Name: e.Name, Field: e.Field, Message: e.Error()})
	}
	return v
}
