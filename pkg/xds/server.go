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
	"github.com/skiffmesh/skiff/pkg/xds/fanout"
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
	// PushBudget bounds the bytes of responses sent and not yet acknowledged across all
	// proxies (see pushBudget); zero means DefaultPushBudget.
	PushBudget int64
	// SendTimeout closes a stream whose response could not be written for this long: the
	// proxy is not reading (see guard.go). Zero means DefaultSendTimeout, negative never.
	SendTimeout time.Duration
	// MaxStreams bounds the ADS streams open at once; more are refused. Zero means
	// DefaultMaxStreams.
	MaxStreams int
	// Services registers further gRPC services on the server: proxies reach them on the
	// cluster they already have for ADS (pilot's access log service, package telemetry).
	Services func(grpc.ServiceRegistrar)
	// XDSLogProxies writes the protocol log (see XDSLogHandler) of the proxies whose node ID
	// or POD.NAMESPACE matches this glob (path.Match) to the logger, at debug level.
	XDSLogProxies string
}

// Server is the ADS server and its push loop.
type Server struct {
	grpc    *grpc.Server
	health  *health.Server
	xds     serverv3.Server
	cache   *classCache
	sds     *sdsServer
	tracker *tracker
	metrics *metrics
	log     *slog.Logger
	guard   *guard
	// noIdentity warns about proxies translated without default mTLS for want of an identity.
	noIdentity *identityWarnings

	mu        sync.Mutex
	snap      *model.Snapshot
	changedAt time.Time
	// pending is the push the latest snapshots call for, the largest since the last push;
	// pendingEndpoints whether any of them may have moved endpoints or workloads (pending
	// alone cannot say: a routes push also covers endpoint changes before it).
	pending          pushKind
	pendingEndpoints bool
	newClasses       map[string]*model.Proxy
	wake             chan struct{}
	// pushed is the snapshot of the last push that finished, and pushing whether one runs:
	// what /debug/wait reads (see SyncState).
	pushed  *model.Snapshot
	pushing bool

	// routeMemos are the sidecar route configurations' virtual hosts as last translated, by
	// configuration (routes.go); only the push loop uses them.
	routeMemos map[configID]*routeMemo
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
	s := &Server{log: log, newClasses: map[string]*model.Proxy{}, wake: make(chan struct{}, 1), routeMemos: map[configID]*routeMemo{}}
	// Versions carry the process start time, so an Envoy that reconnects after a pilot
	// restart never has its old version mistaken for a current one.
	prefix := strconv.FormatInt(time.Now().UnixMilli(), 36) + "-"
	s.cache = newClassCache(prefix, s.classAppeared)
	s.cache.ignoreNodeLabels = opts.IgnoreNodeLabels
	s.cache.log = log
	s.cache.observeRejections(s.cache.endpoints, "mesh")
	s.metrics = newMetrics(reg)
	reg.MustRegister(newRejectedCollector(s.cache))
	s.noIdentity = newIdentityWarnings(log)
	s.tracker = newTracker(s.metrics, log, func(class string) {
		s.cache.Forget(class)
		s.noIdentity.forget(class)
	}, s.lastChange)
	s.tracker.ignoreNodeLabels = opts.IgnoreNodeLabels
	s.tracker.xlog = newProtocolLog(opts.XDSLogProxies, log)
	s.tracker.onProxyGone = s.cache.forgetProxy
	s.sds = newSDSServer(opts.CA, opts.WorkloadCertTTL, prefix, log, reg)
	s.sds.snapshot, s.sds.classSecrets, s.sds.setIdentity = s.Snapshot, s.classSecrets, s.tracker.setIdentity
	s.cache.sds, s.cache.streamOf = s.sds, s.tracker.streamOfSecretRequest
	s.cache.queueOf = s.tracker.bindQueue
	s.tracker.onStreamClosed = s.sds.drop
	// Ordered ADS sends responses in the order the caches change: clusters, secrets,
	// listeners, routes (and then the endpoints re-sent for modified clusters), the order in
	// which Envoy can apply a change without a window where a listener names a missing cluster.
	s.xds = serverv3.NewServer(context.Background(), s.cache, s.tracker, sotw.WithOrderedADS())

	s.grpc = grpc.NewServer(
		grpc.MaxConcurrentStreams(100000),
		// Responses go out around the resources' shared bytes, not copied per stream.
		grpc.ForceServerCodecV2(fanout.Codec{}),
		// gRPC writes its buffer whole, so the batch decides the TCP segments: 64 kB on
		// loopback (MTU 65,536: 65,483 bytes of payload a segment with timestamps, where
		// pilot and the Envoys of a laptop mesh meet) is one full segment and one of 53 bytes
		// per write, half the segments tiny, each costing a full pass through the send and
		// receive paths. Two full segments a write sent the scale run's VirtualService change
		// 20 % sooner; four did not help and hold more memory (each connection writing holds
		// one, up to the push budget's worth of them). On other links segments are far smaller
		// and the size does not matter. The buffer is released after each flush, so idle
		// connections hold none.
		grpc.WriteBufferSize(2*65483),
		grpc.SharedWriteBuffer(true),
		// Proxies keep one stream for hours; pings find dead peers behind NATs and idle timeouts.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	)
	budget := opts.PushBudget
	if budget <= 0 {
		budget = DefaultPushBudget
	}
	s.guard = newGuard(opts.SendTimeout, opts.MaxStreams, log, reg)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, &adsService{xds: s.xds, budget: newPushBudget(budget), guard: s.guard})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if opts.Services != nil {
		opts.Services(s.grpc)
	}
	if opts.Reflection {
		reflection.Register(s.grpc)
	}
	return s
}

// adsService is the registered ADS implementation: go-control-plane's, with state-of-the-world
// streams wrapped so a half-closed stream is answered before it ends, and every stream
// admitted and watched by the guard (guard.go).
type adsService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	xds    serverv3.Server
	budget *pushBudget
	guard  *guard
}

func (a *adsService) StreamAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	sg, err := a.guard.admit(stream.Context())
	if err != nil {
		return err
	}
	defer sg.done()
	return serveEndable(stream, sg, func(ctx context.Context) error {
		return a.xds.StreamAggregatedResources(sotwEndable{newAnsweringStream(stream), ctx, newStreamFlow(a.budget), sg})
	})
}

func (a *adsService) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	sg, err := a.guard.admit(stream.Context())
	if err != nil {
		return err
	}
	defer sg.done()
	return serveEndable(stream, sg, func(ctx context.Context) error {
		return a.xds.DeltaAggregatedResources(deltaEndable{stream, ctx, newStreamFlow(a.budget), sg})
	})
}

// Serve accepts gRPC connections on lis until Stop.
func (s *Server) Serve(lis net.Listener) error { return s.grpc.Serve(lis) }

// Stop closes every stream and the listeners, and ends the protocol logs being read.
func (s *Server) Stop() {
	s.tracker.xlog.close()
	s.grpc.Stop()
}

// Push makes snap the configuration served to every proxy. changedAt is when the change that
// produced it reached pilot, for the convergence metric.
func (s *Server) Push(snap *model.Snapshot, changedAt time.Time) {
	s.mu.Lock()
	// Compared with the previous snapshot, not the one last pushed: a full push still pending
	// stays full (pending only grows, see pushKind.and).
	kind := pushFull
	switch {
	case model.EndpointsOnly(s.snap, snap):
		kind = pushEndpoints
	case model.HTTPRoutesOnly(s.snap, snap):
		kind = pushRoutes
	case model.AuthorizationPoliciesOnly(s.snap, snap):
		kind = pushPolicies
	}
	s.snap, s.changedAt, s.pending = snap, changedAt, s.pending.and(kind)
	// Routes and policies changes leave every other object as it was (model.HTTPRoutesOnly,
	// AuthorizationPoliciesOnly), so the endpoints too.
	s.pendingEndpoints = s.pendingEndpoints || (kind != pushRoutes && kind != pushPolicies)
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

// Run is the push loop: it translates on every new snapshot (every configuration in use and
// the endpoints) and for proxy classes that appear, until ctx ends. Pushes coalesce: the loop
// always works from the latest snapshot, so a burst of changes costs one translation per
// configuration key.
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
		snap, kind, endpoints, fresh := s.snap, s.pending, s.pendingEndpoints, s.newClasses
		if snap == nil {
			// No configuration yet: new classes stay parked until the first snapshot.
			s.mu.Unlock()
			continue
		}
		s.pending, s.pendingEndpoints, s.newClasses = pushNone, false, map[string]*model.Proxy{}
		s.pushing = true
		s.mu.Unlock()
		s.push(snap, kind, endpoints, fresh)
		s.mu.Lock()
		s.pushed, s.pushing = snap, false
		s.mu.Unlock()
	}
}

// pushKind is how much of the caches a push must rebuild.
type pushKind int

const (
	// pushNone: no new snapshot, only proxy classes that appeared need binding.
	pushNone pushKind = iota
	// pushEndpoints: the snapshot moved endpoints only (model.EndpointsOnly): new
	// ClusterLoadAssignments and identity checks, no translation.
	pushEndpoints
	// pushRoutes: at most endpoints and HTTP-only VirtualServices changed
	// (model.HTTPRoutesOnly): sidecars' route configurations are translated again, their
	// other types are not; gateways are translated in full.
	pushRoutes
	// pushPolicies: only AuthorizationPolicies changed (model.AuthorizationPoliciesOnly):
	// extension configurations (sidecars' inbound RBAC rules) and listeners are translated
	// again, the other types are not, for gateways neither (they read no policy).
	pushPolicies
	// pushFull: anything else; every configuration in use is translated again.
	pushFull
)

// push brings the caches up to snap. A full push re-translates every configuration in use; an
// endpoints push rebuilds only the ClusterLoadAssignments; in every case the fresh classes are
// bound, translating just the keys that have no configuration from snap yet. The
// ClusterLoadAssignments are rebuilt only when endpoints may have moved: for a VirtualService
// change on 1,000 services that was 40 ms of work before any translation began, to find
// nothing changed.
func (s *Server) push(snap *model.Snapshot, kind pushKind, endpoints bool, fresh map[string]*model.Proxy) {
	started := time.Now()
	full := kind >= pushRoutes // every configuration in use is brought up to snap
	classes := fresh
	if endpoints {
		if eds, err := fanout.EncodeAll(resourcev3.EndpointType, endpointResources(snap)); err != nil {
			s.log.Error("encoding endpoints; keeping the last ones", "error", err)
		} else {
			s.cache.UpdateEndpoints(eds)
		}
		// A WorkloadEntry may have moved or changed service account.
		s.sds.recheck(snap)
	}
	if kind == pushEndpoints {
		// Every configuration translates from snap exactly as from the snapshot it was built from.
		s.cache.Advance(snap)
		// But a proxy's key may follow endpoint addresses: its configuration may be another.
		classes = s.withAddressFollowers(classes, snap)
	}
	if full {
		classes = s.cache.Classes()
	}
	// Group the classes by configuration key, per type, and translate each key once.
	keysOf := make(map[string]map[string]string, len(classes))
	todo := map[configID]*model.Proxy{}
	seen := map[configID]bool{}
	for class, proxy := range classes {
		keys := configKeys(snap, proxy)
		keysOf[class] = keys
		s.noIdentity.check(snap, class, proxy)
		for t, key := range keys {
			id := configID{t, key}
			if seen[id] {
				continue
			}
			seen[id] = true
			if !full && s.cache.Config(id, snap) {
				continue
			}
			if kind.keeps(t) && (proxy.Type == model.SidecarProxy || kind == pushPolicies) && s.cache.AdvanceConfig(id, snap) {
				continue // filled from the last snapshot, which translates the same for this type
			}
			todo[id] = proxy
		}
	}
	translated := translateAll(snap, todo, s.routeMemos)
	s.metrics.translations.Add(float64(len(translated)))
	for id, enc := range translated {
		if enc.routes != nil {
			s.routeMemos[id] = enc.routes
		}
	}
	if full { // every configuration in use was seen: the others' memos go
		for id := range s.routeMemos {
			if !seen[id] {
				delete(s.routeMemos, id)
			}
		}
	}
	rewarm := map[string]bool{}
	// Stores are filled in the order of classTypes (a gateway's secrets before its listeners).
	for _, t := range classTypes {
		for id, enc := range translated {
			if id.typeURL != t {
				continue
			}
			if enc.err != nil {
				// The last good configuration stays (a class new to the key stays parked).
				s.log.Error("encoding configuration; keeping the last one", "type", t, "key", id.key, "error", enc.err)
				continue
			}
			for _, n := range s.cache.UpdateConfig(id, snap, enc.resources) {
				rewarm[n] = true
			}
		}
	}
	for class, keys := range keysOf {
		moved, err := s.cache.Bind(class, keys)
		if err != nil {
			s.log.Error("binding proxy class", "class", class, "error", err)
		}
		if moved {
			// Its streams watch the old configuration's stores: have them reconnect.
			s.log.Info("proxy class changed configuration; its proxies reconnect", "class", class, "key", keys[fullKeyType])
			s.tracker.disconnectClass(class)
		}
		if secrets, err := s.cache.classSecrets(class); err != nil {
			s.log.Error("decoding a proxy class's secrets; its proxies keep the last ones", "class", class, "error", err)
		} else {
			s.sds.syncClass(class, secrets)
		}
	}
	s.cache.Prune()
	s.cache.ResendEndpoints(slices.Collect(maps.Keys(rewarm)))
	configs, stores := s.cache.ConfigCount()
	s.metrics.configs.Set(float64(configs))
	s.metrics.stores.Set(float64(stores))
	s.log.Debug("pushed", "kind", kind, "classes", len(classes), "translated", len(translated), "took", time.Since(started))
}

// and is the push that does what both k and next call for.
func (k pushKind) and(next pushKind) pushKind {
	if k != next && k >= pushRoutes && next >= pushRoutes {
		return pushFull // each of routes and policies translates a type the other does not
	}
	return max(k, next)
}

// keeps reports whether a push of this kind leaves a sidecar's configuration of type t as the
// last snapshot translated it: a routes push translates only route configurations again, a
// policies push only the RBAC rules and the listeners (whose TCP chains carry a mark of the
// rules, see translate's authz_ecds.go); the other kinds translate every type.
func (k pushKind) keeps(t string) bool {
	switch k {
	case pushRoutes:
		return t != resourcev3.RouteType
	case pushPolicies:
		return t != resourcev3.ExtensionConfigType && t != resourcev3.ListenerType
	}
	return false
}

// withAddressFollowers is classes and those of the bound classes whose configuration key
// changed with an endpoints-only change: captured sidecars that name no workload serve the
// endpoints at their IP (translate.InboundPortsFollowAddresses), so moved endpoints can give
// them other inbound ports. Their keys are compared here, the full key holding every input,
// so only a class that must move is bound (and translated for) again: a fleet of such
// proxies costs a key each per change, not a rebinding each.
func (s *Server) withAddressFollowers(classes map[string]*model.Proxy, snap *model.Snapshot) map[string]*model.Proxy {
	out := make(map[string]*model.Proxy, len(classes))
	maps.Copy(out, classes)
	for class, proxy := range s.cache.Classes() {
		if !translate.InboundPortsFollowAddresses(snap, proxy) {
			continue
		}
		if translate.ConfigKey(snap, proxy) != s.cache.KeyOf(class) {
			out[class] = proxy
		}
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

// classSecrets is the kubernetes:// secrets a class's proxies are served.
func (s *Server) classSecrets(class string) map[string]types.Resource {
	secrets, err := s.cache.classSecrets(class)
	if err != nil {
		s.log.Error("decoding a proxy class's secrets", "class", class, "error", err)
	}
	return secrets
}

// Statuses lists connected proxies and their per-type sync state.
func (s *Server) Statuses() []ProxyStatus {
	out := s.tracker.Statuses()
	for i := range out {
		out[i].Config = s.cache.KeyOf(out[i].Class)
		for typ, list := range s.cache.rejections(out[i].Class, out[i].NodeID) {
			if ts := out[i].Types[typ]; ts != nil {
				ts.Rejected = list
			}
		}
	}
	return out
}

// Snapshot returns the configuration being served, or nil before the first push.
func (s *Server) Snapshot() *model.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

// String names the server in logs.
func (s *Server) String() string { return fmt.Sprintf("xds(%d proxies)", len(s.tracker.Statuses())) }
