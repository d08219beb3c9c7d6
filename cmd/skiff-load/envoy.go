package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/bootstrap"
)

// The four xDS types a sidecar asks for, in Envoy's order; secrets (SDS) are never requested.
const (
	tCDS = iota
	tEDS
	tLDS
	tRDS
	tOther
	numTypes
)

var typeURLs = [numTypes]string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, "other"}

var typeNames = [numTypes]string{"cds", "eds", "lds", "rds", "other"}

func typeIndex(url string) int {
	for i, u := range typeURLs[:tOther] {
		if u == url {
			return i
		}
	}
	return tOther
}

// FleetConfig is what the simulated proxies are.
type FleetConfig struct {
	Proxies   int
	Workloads int // proxies are replicas of this many workloads (proxy j is of workload j%Workloads)
	// DeltaFraction of the proxies use incremental xDS, the rest state of the world.
	DeltaFraction float64
	// NackFraction of the proxies reject their first RDS response.
	NackFraction float64
	// StreamsPerConn proxies share one gRPC connection (HTTP/2 multiplexes their streams).
	StreamsPerConn int
	// Concurrency bounds the proxies between stream open and sync, a rolling start: pilot
	// translates for new proxies while the earlier ones keep their streams.
	Concurrency int
}

// Fleet is the simulated Envoys.
type Fleet struct {
	cfg     FleetConfig
	conns   []*grpc.ClientConn
	proxies []*simProxy

	responses [numTypes]atomic.Int64
	bytes     [numTypes]atomic.Int64
	nacks     atomic.Int64
	synced    atomic.Int64
	// reconnects counts streams that ended while the run went on.
	reconnects atomic.Int64
	probe      atomic.Pointer[probe]

	wg sync.WaitGroup
}

// simProxy is one simulated Envoy with its own ADS stream.
type simProxy struct {
	idx   int
	node  *corev3.Node
	delta bool
	nack  bool // reject the first RDS response
	fleet *Fleet

	opened   time.Time
	syncTime atomic.Int64          // nanoseconds from the first stream's open to sync; 0 = not synced
	err      atomic.Pointer[error] // the last stream's end
	release  func()                // frees the start slot, once

	// The state of the current stream; a new stream starts it over, as Envoy's does.
	types    [numTypes]typeState
	received bool
	nacked   bool // only the first RDS response of the proxy's life is rejected
}

// typeState is one type's side of the stream as Envoy keeps it.
type typeState struct {
	requested bool
	names     []string // subscription for EDS and RDS, sorted
	version   string   // last accepted (SotW)
	nonce     string   // last received
	content   bool     // a response with resources arrived and was answered
	// present is, for delta, the resources currently held, with the names they reference.
	present map[string][]string
}

// NewFleet builds the proxies' identities and the gRPC connections they share. Nothing is
// sent until Start.
func NewFleet(cfg FleetConfig, xdsAddress string) (*Fleet, error) {
	if cfg.Proxies < 1 || cfg.Workloads < 1 {
		return nil, fmt.Errorf("fleet: %d proxies of %d workloads: want at least one of each", cfg.Proxies, cfg.Workloads)
	}
	if cfg.StreamsPerConn < 1 {
		cfg.StreamsPerConn = 50
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = cfg.Proxies
	}
	f := &Fleet{cfg: cfg}
	for range (cfg.Proxies + cfg.StreamsPerConn - 1) / cfg.StreamsPerConn {
		conn, err := grpc.NewClient(xdsAddress,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// A sidecar route configuration for 1,000 services is hundreds of kB and CDS
			// several MB; Envoy accepts any size.
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.ForceCodecV2(aliasCodec{})),
			// Envoy's HTTP/2 windows are large (256 MiB by default), so pilot's pushes are
			// never held back by flow control; gRPC's 64 kB start would be.
			grpc.WithInitialWindowSize(16<<20),
			// Fewer, larger reads: the fleet receives gigabytes per change.
			grpc.WithReadBufferSize(256<<10),
			grpc.WithInitialConnWindowSize(64<<20),
			experimental.WithBufferPool(fleetBuffers),
		)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("fleet: connecting to %s: %w", xdsAddress, err)
		}
		f.conns = append(f.conns, conn)
	}
	for j := range cfg.Proxies {
		// Delta proxies are spread evenly over the fleet (and so over workloads); NACKing ones
		// too, counted from the other end, so that both protocols get some.
		delta := pick(j, cfg.DeltaFraction)
		node, err := proxyNode(j, cfg.Workloads, xdsAddress, delta)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.proxies = append(f.proxies, &simProxy{idx: j, node: node, delta: delta, nack: pick(cfg.Proxies-1-j, cfg.NackFraction), fleet: f})
	}
	return f, nil
}

// pick says whether the j-th of a sequence is among an evenly spaced fraction of it.
func pick(j int, fraction float64) bool {
	return int(float64(j+1)*fraction) > int(float64(j)*fraction)
}

// proxyNode is proxy j's node exactly as `pilot bootstrap --interception redirect --labels
// app=wl-W` writes it (the bootstrap package builds it), plus the user agent Envoy adds.
func proxyNode(j, workloads int, xdsAddress string, delta bool) (*corev3.Node, error) {
	w := j % workloads
	ns := namespace(w % namespaces)
	ip := netip.AddrFrom4([4]byte{10, byte(1 + j>>16), byte(j >> 8), byte(j)})
	id := fmt.Sprintf("sidecar~%s~wl-%d-%d.%s~%s.svc.cluster.local", ip, w, j, ns, ns)
	b, err := bootstrap.Build(bootstrap.Options{
		NodeID:       id,
		XDSAddress:   xdsAddress,
		Delta:        delta,
		Interception: bootstrap.InterceptionRedirect,
		Labels:       map[string]string{"app": fmt.Sprintf("wl-%d", w)},
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: node of proxy %d: %w", j, err)
	}
	node := b.GetNode()
	node.UserAgentName = "envoy"
	return node, nil
}

// Start opens the proxies' streams, at most Concurrency of them still syncing at a time, and
// returns at once. Streams end when ctx does.
func (f *Fleet) Start(ctx context.Context) {
	slots := make(chan struct{}, f.cfg.Concurrency)
	f.wg.Go(func() {
		for _, p := range f.proxies {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			p.release = sync.OnceFunc(func() { <-slots })
			f.wg.Go(func() {
				defer p.release()
				p.runUntil(ctx, f.conns[p.idx/f.cfg.StreamsPerConn])
			})
		}
	})
}

// runUntil keeps the proxy connected until ctx ends: like Envoy, it reconnects after a stream
// ends (pilot may end streams on purpose, e.g. when a proxy's configuration moves), with
// jittered exponential backoff from 500 ms to 30 s that starts over once a stream has
// delivered something.
func (p *simProxy) runUntil(ctx context.Context, conn *grpc.ClientConn) {
	attempt := 0
	for {
		err := p.run(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stream closed by pilot")
		}
		p.err.Store(&err)
		p.fleet.reconnects.Add(1)
		slog.Debug("proxy stream ended; reconnecting", "proxy", p.node.GetId(), "error", err)
		if p.received {
			attempt = 0
		}
		limit := min(500*time.Millisecond<<min(attempt, 6), 30*time.Second)
		attempt++
		if !sleep(ctx, limit/2+rand.N(limit/2)) {
			return
		}
	}
}

// Wait blocks until every stream has ended (after ctx passed to Start is done).
func (f *Fleet) Wait() { f.wg.Wait() }

// Close closes the gRPC connections.
func (f *Fleet) Close() {
	for _, c := range f.conns {
		_ = c.Close()
	}
}

// Synced is how many proxies have synced so far.
func (f *Fleet) Synced() int { return int(f.synced.Load()) }

// Reconnects is how many streams ended, and were opened again, during the run.
func (f *Fleet) Reconnects() int { return int(f.reconnects.Load()) }

// SyncTimes are the synced proxies' times from stream open to sync.
func (f *Fleet) SyncTimes() []time.Duration {
	var out []time.Duration
	for _, p := range f.proxies {
		if d := p.syncTime.Load(); d != 0 {
			out = append(out, time.Duration(d))
		}
	}
	return out
}

// FirstErrors returns up to n proxies' last stream errors, for the report.
func (f *Fleet) FirstErrors(n int) []string {
	var out []string
	for _, p := range f.proxies {
		if e := p.err.Load(); e != nil && len(out) < n {
			out = append(out, fmt.Sprintf("%s: %v", p.node.GetId(), *e))
		}
	}
	return out
}

// SyncedMask says which proxies are synced now: the ones a change is expected to reach.
func (f *Fleet) SyncedMask() []bool {
	out := make([]bool, len(f.proxies))
	for i, p := range f.proxies {
		out[i] = p.syncTime.Load() != 0
	}
	return out
}

func (f *Fleet) count(typ int, size int64) {
	f.responses[typ].Add(1)
	f.bytes[typ].Add(size)
}

// observe hands a received response to the armed probe, if it measures this type.
func (f *Fleet) observe(idx, typ int, recv time.Time, resources []*anypb.Any) {
	p := f.probe.Load()
	if p == nil {
		return
	}
	if (p.kind == probeRoutes && typ == tRDS) || (p.kind == probeEndpoints && typ == tEDS) {
		p.observe(idx, recv, resources)
	}
}

func (p *simProxy) run(ctx context.Context, conn *grpc.ClientConn) error {
	p.types, p.received = [numTypes]typeState{}, false
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	if p.delta {
		return p.runDelta(ctx, client)
	}
	return p.runSotW(ctx, client)
}

// checkSynced records the sync time once every type has had content and been answered.
func (p *simProxy) checkSynced() {
	if p.syncTime.Load() != 0 {
		return
	}
	for t := range tOther {
		if !p.types[t].content {
			return
		}
	}
	p.syncTime.Store(int64(max(time.Since(p.opened), 1)))
	p.fleet.synced.Add(1)
	p.release()
}

// nackDetail is the error_detail of a deliberate rejection.
func nackDetail() *status.Status {
	return &status.Status{Code: int32(codes.InvalidArgument), Message: "skiff-load: deliberate NACK of the first route configuration"}
}

// runSotW is Envoy's state-of-the-world ADS conversation: wildcard CDS; EDS for the clusters
// CDS names (then LDS, as Envoy asks for listeners once its clusters are warm); RDS for the
// route configurations LDS names. Every response is answered with the version and nonce, and
// the subscriptions follow CDS and LDS as they change.
func (p *simProxy) runSotW(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient) error {
	stream, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("opening ADS stream: %w", err)
	}
	if p.opened.IsZero() {
		p.opened = time.Now()
	}
	nodeSent := false
	send := func(typ int, names []string, version, nonce string, detail *status.Status) error {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typeURLs[typ], ResourceNames: names, VersionInfo: version, ResponseNonce: nonce, ErrorDetail: detail}
		if !nodeSent { // set_node_on_first_message_only, as pilot's bootstrap sets it
			req.Node, nodeSent = p.node, true
		}
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("sending %s request: %w", typeNames[typ], err)
		}
		return nil
	}
	// request (re)subscribes typ to names, carrying the last version and nonce as Envoy does.
	request := func(typ int, names []string) error {
		st := &p.types[typ]
		st.requested, st.names = true, names
		return send(typ, names, st.version, st.nonce, nil)
	}
	if err := request(tCDS, nil); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return recvError(err)
		}
		recv := time.Now()
		p.received = true
		typ := typeIndex(resp.GetTypeUrl())
		p.fleet.count(typ, responseSize(resp))
		st := &p.types[typ]
		st.nonce = resp.GetNonce()
		if typ == tRDS && p.nack && !p.nacked {
			// Rejected: the version stays the previous one, as Envoy reports it.
			p.nacked = true
			p.fleet.nacks.Add(1)
			if err := send(typ, st.names, st.version, st.nonce, nackDetail()); err != nil {
				return err
			}
			st.content = st.content || len(resp.GetResources()) > 0
			p.checkSynced()
			release(resp)
			continue
		}
		st.version = resp.GetVersionInfo()
		if err := send(typ, st.names, st.version, st.nonce, nil); err != nil {
			return err
		}
		st.content = st.content || len(resp.GetResources()) > 0
		switch typ {
		case tCDS:
			names := referenced(clusterNames, resp.GetResources())
			// An empty list would be a wildcard (legacy SotW), which EDS must never be.
			if len(names) > 0 && !slices.Equal(names, p.types[tEDS].names) {
				if err := request(tEDS, names); err != nil {
					return err
				}
			}
			if len(names) == 0 && !p.types[tLDS].requested {
				err = request(tLDS, nil)
			}
		case tEDS:
			if !p.types[tLDS].requested {
				err = request(tLDS, nil)
			}
		case tLDS:
			names := referenced(listenerNames, resp.GetResources())
			if len(names) > 0 && !slices.Equal(names, p.types[tRDS].names) {
				err = request(tRDS, names)
			}
		}
		if err != nil {
			return err
		}
		p.checkSynced()
		p.fleet.observe(p.idx, typ, recv, resp.GetResources())
		release(resp)
	}
}

// referenced is the sorted union of the names resources reference.
func referenced(c *nameCache, resources []*anypb.Any) []string {
	var names []string
	for _, r := range resources {
		names = append(names, c.get(r).refs...)
	}
	slices.Sort(names)
	return requestLists.intern(slices.Compact(names))
}

// recvError turns the end of a stream into the error to report; the run's own cancellation
// is not one.
func recvError(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("stream closed by pilot")
	}
	if s, ok := grpcstatus.FromError(err); ok && s.Code() == codes.Canceled {
		return nil
	}
	return fmt.Errorf("receiving: %w", err)
}
