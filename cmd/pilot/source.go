package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/xds"
)

// configStatus publishes configuration from either source (a folder, or the Kubernetes API)
// and keeps what went wrong with it, for the log, the metrics and /debug/config_errors.
type configStatus struct {
	server *xds.Server
	log    *slog.Logger

	errorsGauge   prometheus.Gauge
	warningsGauge prometheus.Gauge
	reloads       *prometheus.CounterVec

	mu       sync.Mutex
	errors   []*config.Error
	warnings []model.Warning
	loaded   time.Time
}

func newConfigStatus(server *xds.Server, log *slog.Logger, reg prometheus.Registerer) *configStatus {
	s := &configStatus{
		server: server,
		log:    log,
		errorsGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_config_errors",
			Help: "Configuration documents or objects currently rejected; they are served at their last good version.",
		}),
		warningsGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_config_warnings",
			Help: "Problems in loaded configuration that will not do what its author expects (istioctl analyze codes, and SKF codes for what pilot does not serve), listed at /debug/config_errors.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_config_reloads_total",
			Help: "Configuration reloads, by result (ok, or error when any document or object was rejected).",
		}, []string{"result"}),
	}
	reg.MustRegister(s.errorsGauge, s.warningsGauge, s.reloads)
	return s
}

// publish builds a snapshot from set, reports errs and the snapshot's warnings, and pushes it.
func (s *configStatus) publish(set *config.Set, errs []*config.Error, changedAt time.Time) {
	for _, e := range errs {
		s.log.Error("configuration rejected; serving its last good version", "error", e)
	}
	result := "ok"
	if len(errs) > 0 {
		result = "error"
	}
	s.reloads.WithLabelValues(result).Inc()
	s.errorsGauge.Set(float64(len(errs)))
	snap := model.Build(set)
	// Pushed first: the warnings (a walk of every reference in the mesh) are for people, and
	// the proxies need not wait for them.
	s.server.Push(snap, changedAt)
	warnings := snap.Warnings()
	for _, w := range warnings {
		s.log.Warn("configuration loaded but will not work as written", "code", w.Code,
			"object", w.Kind+"/"+w.Namespace+"/"+w.Name, "field", w.Field, "problem", w.Message)
	}
	s.warningsGauge.Set(float64(len(warnings)))
	s.mu.Lock()
	s.errors, s.warnings, s.loaded = errs, warnings, time.Now()
	s.mu.Unlock()
	s.log.Info("configuration loaded", "services", len(snap.Services), "virtualServices", len(snap.VirtualServices),
		"destinationRules", len(snap.DestinationRules), "errors", len(errs), "warnings", len(warnings))
}

// folderSource turns the config folder into snapshots: every reload re-reads the folder (the
// loader keeps the last good version of each broken file) and publishes the result.
type folderSource struct {
	loader *config.Loader
	// mesh is the mesh configuration (--mesh-config, Skiff's defaults without one); meshErr
	// says why the file's current content is not it, when it does not parse.
	mesh        *meshconfig.MeshConfig
	meshErr     *config.Error
	meshWatcher *config.Watcher
	status      *configStatus
	watcher     *config.Watcher
	// mu holds a reload from start to published, so that settle never looks at one half done.
	mu sync.Mutex
}

func (s *folderSource) reload(changedAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set, errs := s.loader.Load()
	set.Mesh = s.mesh
	if s.meshErr != nil {
		errs = append(errs, s.meshErr)
	}
	s.status.publish(set, errs, changedAt)
}

// watchMesh follows the mesh configuration file as the folder's files are followed: an edit
// is read and published; one that does not parse is reported (pilot's log,
// skiff_config_errors, /debug/config_errors) and the last good mesh configuration stays. The
// folder holding the file is watched, so the file belongs outside --config-dir.
func (s *folderSource) watchMesh(file string, base *meshconfig.MeshConfig) {
	s.meshWatcher = &config.Watcher{
		Dir: filepath.Dir(file),
		OnChange: func() {
			data, err := os.ReadFile(file)
			var mesh *meshconfig.MeshConfig
			if err == nil {
				mesh, err = config.ParseMeshConfig(data, base)
			}
			s.mu.Lock()
			if err != nil {
				s.meshErr = &config.Error{File: file, Doc: -1, Err: err}
			} else {
				s.mesh, s.meshErr = mesh, nil
			}
			s.mu.Unlock()
			s.reload(time.Now())
		},
		Logger: s.status.log,
	}
}

// settlePoll is how often settle looks at the folder while a reload is due.
const settlePoll = 10 * time.Millisecond

// settle returns once every change made to the folder before the call has been loaded and
// published (handed to the push loop), or with ctx's error. The watcher's debounce holds a
// change back for a while, and the kernel tells the watcher of a write a moment after the
// write returned: `cat > file; curl /debug/wait` must not find the folder quiet in between,
// so the folder's content is compared with what the last reload read as well.
func (s *folderSource) settle(ctx context.Context) error {
	tick := time.NewTicker(settlePoll)
	defer tick.Stop()
	for {
		s.mu.Lock()
		pending := s.watcher.Pending()
		stale := !pending && s.loader.Stale()
		s.mu.Unlock()
		if !pending && !stale {
			return nil
		}
		if stale {
			// Written, and not seen by the watch yet (or missed): reload it, through the
			// debounce like any change. Should the watch report it too, that is the same burst.
			s.watcher.Notify()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("a change to the configuration folder is not loaded yet: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// configErrorsView is /debug/config_errors.
type configErrorsView struct {
	Loaded   time.Time       `json:"loaded"`
	Errors   []errorDetails  `json:"errors"`
	Warnings []model.Warning `json:"warnings"`
}

// errorDetails is one rejected document (folder mode: file and document index) or object
// (Kubernetes mode: kind, namespace and name).
type errorDetails struct {
	File      string `json:"file,omitempty"`
	Document  *int   `json:"document,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	Field     string `json:"field,omitempty"`
	Message   string `json:"message"`
}

func (s *configStatus) view() configErrorsView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := configErrorsView{Loaded: s.loaded, Errors: []errorDetails{}, Warnings: append([]model.Warning{}, s.warnings...)}
	for _, e := range s.errors {
		d := errorDetails{File: e.File, Kind: e.Kind, Namespace: e.Namespace, Name: e.Name, Field: e.Field, Message: e.Error()}
		if e.Doc >= 0 {
			d.Document = &e.Doc
		}
		v.Errors = append(v.Errors, d)
	}
	return v
}
