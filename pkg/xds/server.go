// Package xds serves translated configuration to Envoy over gRPC ADS (state of the world and
// delta) with go-control-plane. It owns connections, caches, push fan-out, proxy status,
// metrics, health and reflection; it never decides what the configuration is — that is
// package translate's job, run here once per proxy class and once for the mesh's endpoints.
package xds

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/skiffmesh/skiff/pkg/ca"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// Options configure a Server.
type Options struct {
	// Reflection registers gRPC server reflection, so grpcurl can list and call the ADS
	// service without proto files.
	Reflection bool
	Logger     *slog.Logger
	Registry   prometheus.Registerer
	// CA issues the workload certificates served as SDS `default` and the trust bundle served
	// as `ROOTCA`. Without one, proxies are refused both (their other config still flows).
	CA *ca.CA
	// WorkloadCertTTL is the lifetime of workload certificates; they are re-issued and pushed
	// at half-life. Zero means ca.DefaultWorkloadTTL (24h).
	WorkloadCertTTL time.Duration
	// IgnoreNodeLabels drops the LABELS proxies send in their node metadata. Kubernetes mode
	// sets it: a proxy's labels are its Pod's, and a proxy that could claim labels could
	// choose which AuthorizationPolicies and PeerAuthentications apply to it.
	IgnoreNodeLabels bool
}

// Server is the ADS server and its push loop.
type Server struct {
	grpc    *grpc.Server
	health  *health.Server
	xds     serverv3.Server
	cache   *classCache
	sds     *sdsServer
	tracker *tracker
	log     *slog.Logger

	mu         sync.Mutex
	snap       *model.Snapshot
	changedAt  time.Time
	fullPush   bool
	newClasses map[string]*model.Proxy
	wake       chan struct{}
}

// New builds a server; call Run to start pushing and Serve to accept connections.
func New(opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{log: log, newClasses: map[string]*model.Proxy{}, wake: make(chan struct{}, 1)}
	// Versions carry the process start time, so an Envoy that reconnects after a pilot
	// restart never has its old version mistaken for a current one.
	prefix := strconv.FormatInt(time.Now().UnixMilli(), 36) + "-"
	s.cache = newClassCache(prefix, s.classAppeared)
	s.cache.ignoreNodeLabels = opts.IgnoreNodeLabels
	s.tracker = newTracker(newMetrics(reg), log, s.cache.Forget, s.lastChange)
	s.tracker.ignoreNodeLabels = opts.IgnoreNodeLabels
	s.sds = newSDSServer(opts.CA, opts.WorkloadCertTTL, prefix, log, reg)
	s.sds.snapshot, s.sds.classSecrets, s.sds.setIdentity = s.Snapshot, s.cache.classSecrets, s.tracker.setIdentity
	s.cache.sds, s.cache.streamOf = s.sds, s.tracker.streamOfSecretRequest
	s.tracker.onStreamClosed = s.sds.drop
	// Ordered ADS sends responses in the order the caches change: clusters, secrets,
	// listeners, routes (and then the endpoints re-sent for modified clusters), the order in
	// which Envoy can apply a change without a window where a listener names a missing cluster.
	s.xds = serverv3.NewServer(context.Background(), s.cache, s.tracker, sotw.WithOrderedADS())

	s.grpc = grpc.NewServer(
		grpc.MaxConcurrentStreams(100000),
		// Proxies keep one stream for hours; pings find dead peers behind NATs and idle timeouts.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, &adsService{xds: s.xds})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if opts.Reflection {
		reflection.Register(s.grpc)
	}
	return s
}

// adsService is the registered ADS implementation: go-control-plane's, with state-of-the-world
// streams wrapped so a half-closed stream is answered before it ends.
type adsService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	xds serverv3.Server
}

func (a *adsService) StreamAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.xds.StreamAggregatedResources(newAnsweringStream(stream))
}

func (a *adsService) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.xds.DeltaAggregatedResources(stream)
}

// Serve accepts gRPC connections on lis until Stop.
func (s *Server) Serve(lis net.Listener) error { return s.grpc.Serve(lis) }

// Stop closes every stream and the listeners.
func (s *Server) Stop() { s.grpc.Stop() }

// Push makes snap the configuration served to every proxy. changedAt is when the change that
// produced it reached pilot, for the convergence metric.
func (s *Server) Push(snap *model.Snapshot, changedAt time.Time) {
	s.mu.Lock()
	s.snap, s.changedAt, s.fullPush = snap, changedAt, true
	s.mu.Unlock()
	s.signal()
}

func (s *Server) classAppeared(class string, proxy *model.Proxy) {
	s.mu.Lock()
	s.newClasses[class] = proxy
	s.mu.Unlock()
	s.signal()
}

func (s *Server) signal() {
	select {
	case s.wake <- struct{}{}:
	default: // a push is already pending; it will see the latest state
	}
}

func (s *Server) lastChange() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changedAt
}

// Run is the push loop: it translates on every new snapshot (all classes and the endpoints)
// and for classes that appear, until ctx ends. Pushes coalesce: the loop always works from the
// latest snapshot, so a burst of changes costs one translation per class.
func (s *Server) Run(ctx context.Context) {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for {
		select {
		case <-ctx.Done():
			s.health.Shutdown()
			return
		case <-s.wake:
		}
		s.mu.Lock()
		snap, full, fresh := s.snap, s.fullPush, s.newClasses
		if snap == nil {
			// No configuration yet: new classes stay parked until the first snapshot.
			s.mu.Unlock()
			continue
		}
		s.fullPush, s.newClasses = false, map[string]*model.Proxy{}
		s.mu.Unlock()

		started := time.Now()
		classes := fresh
		if full {
			if err := s.cache.UpdateEndpoints(endpointResources(snap)); err != nil {
				s.log.Error("updating endpoints", "error", err)
			}
			classes = s.cache.Classes()
		}
		rewarm := map[string]bool{}
		for class, proxy := range classes {
			byType := classResources(snap, proxy)
			names, err := s.cache.Update(class, byType)
			if err != nil {
				s.log.Error("updating proxy class", "class", class, "error", err)
			}
			s.sds.syncClass(class, byType[resourcev3.SecretType])
			for _, n := range names {
				rewarm[n] = true
			}
		}
		if full {
			// A WorkloadEntry may have moved or changed service account.
			s.sds.recheck(snap)
		}
		if err := s.cache.ResendEndpoints(slices.Collect(maps.Keys(rewarm))); err != nil {
			s.log.Error("re-sending endpoints of modified clusters", "error", err)
		}
		s.log.Debug("pushed", "full", full, "classes", len(classes), "took", time.Since(started))
	}
}

// classResources translates one proxy class into cache form. Secrets (gateway credentials)
// hold private keys: they go to the proxy and nowhere else.
func classResources(snap *model.Snapshot, proxy *model.Proxy) map[string]map[string]types.Resource {
	res := translate.ForProxy(snap, proxy)
	out := map[string]map[string]types.Resource{
		resourcev3.ClusterType:  {},
		resourcev3.ListenerType: {},
		resourcev3.RouteType:    {},
		resourcev3.SecretType:   {},
	}
	for _, s := range translate.Secrets(snap, proxy) {
		out[resourcev3.SecretType][s.Name] = s
	}
	for _, c := range res.Clusters {
		out[resourcev3.ClusterType][c.Name] = c
	}
	for _, l := range res.Listeners {
		out[resourcev3.ListenerType][l.Name] = l
	}
	for _, r := range res.Routes {
		out[resourcev3.RouteType][r.Name] = r
	}
	return out
}

func endpointResources(snap *model.Snapshot) map[string]types.Resource {
	out := map[string]types.Resource{}
	for _, cla := range translate.Endpoints(snap) {
		out[cla.ClusterName] = cla
	}
	return out
}

// Statuses lists connected proxies and their per-type sync state.
func (s *Server) Statuses() []ProxyStatus { return s.tracker.Statuses() }

// Snapshot returns the configuration being served, or nil before the first push.
func (s *Server) Snapshot() *model.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

// String names the server in logs.
func (s *Server) String() string { return fmt.Sprintf("xds(%d proxies)", len(s.tracker.Statuses())) }
