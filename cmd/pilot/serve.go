package main

import (
	"context"
	"crypto/tls"
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
	meshconfig "istio.io/api/mesh/v1alpha1"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/kube"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/pkg/xds"
)

type serveOptions struct {
	configDir         string
	kubernetes        bool   // watch the Kubernetes API instead of a folder
	kubeconfig        string // empty: in-cluster configuration
	namespace         string // the control plane's namespace (CA Secret)
	caSecret          string
	xdsAddress        string
	monitoringAddress string
	reflection        bool
	istioMetrics      bool
	meshConfig        string // a MeshConfig file; empty: Skiff's defaults
	xdsTLSAddress     string // empty: no TLS xDS port
	caDir             string
	trustDomain       string
	workloadCertTTL   time.Duration
	sendTimeout       time.Duration // 0: never (xds.Options takes a negative value for that)
	maxStreams        int
	xdsLog            string // glob of proxies whose protocol log goes to the debug log
	logger            *slog.Logger
}

// serve runs pilot until ctx ends: load the configuration (a folder, or the Kubernetes API),
// push it, follow its changes, and serve ADS and the monitoring endpoints.
func serve(ctx context.Context, opts serveOptions) error {
	log := opts.logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var (
		authority *ca.CA
		clients   *kube.Clients
		err       error
	)
	if opts.kubernetes {
		cfg, err := kube.RESTConfig(opts.kubeconfig)
		if err != nil {
			return err
		}
		if clients, err = kube.NewClients(cfg); err != nil {
			return err
		}
		authority, err = kube.LoadOrCreateCA(ctx, clients.Kube, opts.namespace, opts.caSecret, opts.trustDomain, log)
		if err != nil {
			return err
		}
	} else if authority, err = ca.LoadOrCreate(opts.caDir, opts.trustDomain); err != nil {
		return fmt.Errorf("CA (--ca-dir %s): %w", opts.caDir, err)
	}
	// The mesh configuration says what the proxies' telemetry is (with the Telemetry objects):
	// it travels in every configuration set, so translation reads it from the snapshot.
	mesh := config.DefaultMeshConfig(opts.istioMetrics)
	if opts.meshConfig != "" {
		if mesh, err = config.ReadMeshConfig(opts.meshConfig, mesh); err != nil {
			return fmt.Errorf("--mesh-config: %w", err)
		}
	}
	// Istio's standard metrics, counted from the proxies' access logs (package telemetry), are
	// served on /metrics with pilot's own; the service reads the snapshot the server pushes.
	var server *xds.Server
	metrics := telemetry.New(telemetry.Options{Snapshot: func() *model.Snapshot { return server.Snapshot() },
		Registry: reg, Logger: log, TrustDomain: authority.TrustDomain()})
	server = xds.New(xds.Options{Reflection: opts.reflection, Logger: log, Registry: reg,
		CA: authority, WorkloadCertTTL: opts.workloadCertTTL, IgnoreNodeLabels: opts.kubernetes,
		SendTimeout: sendTimeoutOption(opts.sendTimeout), MaxStreams: opts.maxStreams,
		Services: metrics.Register, XDSLogProxies: opts.xdsLog})
	if opts.xdsLog != "" && !log.Enabled(ctx, slog.LevelDebug) {
		log.Warn("--xds-log writes the protocol log at debug level, which --log-level leaves out: add --log-level debug", "xds-log", opts.xdsLog)
	}
	status := newConfigStatus(server, log, reg)

	xdsListener, err := net.Listen("tcp", opts.xdsAddress)
	if err != nil {
		return fmt.Errorf("xDS listener: %w", err)
	}
	var tlsListener net.Listener
	var tlsConfig *tls.Config
	if opts.xdsTLSAddress != "" {
		tlsConfig, err = xds.ServingTLS(authority, xds.ServingNamesIn(opts.namespace), xds.ServingIPs, opts.workloadCertTTL)
		if err != nil {
			xdsListener.Close()
			return err
		}
		if tlsListener, err = net.Listen("tcp", opts.xdsTLSAddress); err != nil {
			xdsListener.Close()
			return fmt.Errorf("TLS xDS listener: %w", err)
		}
	}
	monListener, err := net.Listen("tcp", opts.monitoringAddress)
	if err != nil {
		xdsListener.Close()
		if tlsListener != nil {
			tlsListener.Close()
		}
		return fmt.Errorf("monitoring listener: %w", err)
	}

	var (
		ready  atomic.Bool
		loaded = make(chan struct{})
		folder *folderSource
		source *kube.Source
		// settle waits for the changes pilot has been told of to be loaded: see waitHandler.
		settle func(context.Context) error
	)
	if opts.kubernetes {
		source = newKubeSource(clients, kube.MeshOptions{Namespace: opts.namespace, Base: config.DefaultMeshConfig(opts.istioMetrics), Default: mesh}, status, loaded, log)
		settle = source.Settle
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "skiff_kube_events_total",
			Help: "Changes to watched objects received from the API server (as istiod's pilot_k8s_cfg_events); each burst is loaded after 100 ms of quiet.",
		}, func() float64 { return float64(source.Received()) }))
	} else {
		folder = newFolderSource(opts.configDir, mesh, status, loaded, log)
		settle = folder.settle
		if opts.meshConfig != "" {
			folder.watchMesh(opts.meshConfig, config.DefaultMeshConfig(opts.istioMetrics))
		}
	}
	mon := &http.Server{Handler: monitoringMux(reg, server, status, &ready, settle, metrics), ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Go(func() { server.Run(ctx) })
	wg.Go(func() { metrics.Run(ctx) })
	wg.Go(func() {
		if err := server.Serve(xdsListener); err != nil {
			errs <- fmt.Errorf("xDS server: %w", err)
		}
	})
	if tlsListener != nil {
		wg.Go(func() {
			if err := server.ServeTLS(tlsListener, tlsConfig); err != nil {
				errs <- fmt.Errorf("TLS xDS server: %w", err)
			}
		})
	}
	wg.Go(func() {
		if err := mon.Serve(monListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("monitoring server: %w", err)
		}
	})

	if opts.kubernetes {
		runKubernetes(ctx, &wg, errs, clients, source, authority, log)
	} else {
		runFolder(ctx, &wg, errs, folder)
	}
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
	tlsAddr := "off"
	if tlsListener != nil {
		tlsAddr = tlsListener.Addr().String()
	}
	configFrom := "folder " + opts.configDir
	if opts.kubernetes {
		configFrom = "kubernetes"
	}
	log.Info("pilot serving", "xds", xdsListener.Addr().String(), "xds-tls", tlsAddr, "monitoring", monListener.Addr().String(),
		"config", configFrom, "trust-domain", authority.TrustDomain())

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

// newFolderSource is the source of the configuration folder dir; loaded is closed after the
// first load. The first load happens once the folder is watched, so no edit falls between the
// two.
func newFolderSource(dir string, mesh *meshconfig.MeshConfig, status *configStatus, loaded chan struct{}, log *slog.Logger) *folderSource {
	source := &folderSource{loader: config.NewLoader(dir), mesh: mesh, status: status}
	source.watcher = &config.Watcher{
		Dir:      dir,
		OnChange: func() { source.reload(time.Now()) },
		Ready:    func() { source.reload(time.Now()); close(loaded) },
		Logger:   log,
	}
	return source
}

// runFolder follows the configuration folder, and the mesh configuration file if any.
func runFolder(ctx context.Context, wg *sync.WaitGroup, errs chan<- error, source *folderSource) {
	wg.Go(func() {
		if err := source.watcher.Run(ctx); err != nil {
			errs <- fmt.Errorf("config folder: %w", err)
		}
	})
	if source.meshWatcher != nil {
		wg.Go(func() {
			if err := source.meshWatcher.Run(ctx); err != nil {
				errs <- fmt.Errorf("mesh configuration: %w", err)
			}
		})
	}
}

// newKubeSource is the source of the API server's configuration; loaded is closed after the
// first report.
func newKubeSource(clients *kube.Clients, mesh kube.MeshOptions, status *configStatus, loaded chan struct{}, log *slog.Logger) *kube.Source {
	var first sync.Once
	return kube.NewSource(clients, kube.Options{Logger: log, Mesh: mesh, OnChange: func(set *config.Set, cerrs []*config.Error, changedAt time.Time) {
		status.publish(set, cerrs, changedAt)
		first.Do(func() { close(loaded) })
	}})
}

// runKubernetes follows the API server, and publishes the root certificate to every namespace.
func runKubernetes(ctx context.Context, wg *sync.WaitGroup, errs chan<- error, clients *kube.Clients, source *kube.Source, authority *ca.CA, log *slog.Logger) {
	publisher := kube.NewRootPublisher(clients.Kube, source.Namespaces(), authority.RootPEM(), log)
	wg.Go(func() {
		if err := source.Run(ctx); err != nil {
			errs <- fmt.Errorf("kubernetes: %w", err)
		}
	})
	wg.Go(func() { publisher.Run(ctx) })
}

// sendTimeoutOption turns --xds-send-timeout, where 0 means never, into xds.Options', where 0
// means the default.
func sendTimeoutOption(flag time.Duration) time.Duration {
	if flag <= 0 {
		return -1
	}
	return flag
}
