package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

const (
	sotwMethod  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	unknownType = "type.googleapis.com/skiff.hostile.NoSuchType"
	// victimNode names the WorkloadEntry victimYAML declares, at an address the attackers
	// (on 127.0.0.1) do not have.
	victimNode = "sidecar~10.250.0.1~victim-0.ns-0~ns-0.svc.cluster.local"
)

// victimYAML is the workload the spoof attack claims to be.
const victimYAML = `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: victim-0
  namespace: ns-0
spec:
  address: 10.250.0.1
  serviceAccount: victim
  labels:
    app: victim
`

// rawCodec sends []byte as the message itself, so an attacker can send what no client library
// would, and decodes into a *[]byte by dropping the bytes (an attacker that reads without
// paying for decoding); everything else is proto.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	b, err := proto.Marshal(v.(proto.Message))
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if b, ok := v.(*[]byte); ok {
		*b = nil
		return nil
	}
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

// hostileAttack runs one kind of attack (see the hostile command's help) and counts how its
// streams ended.
type hostileAttack struct {
	cfg     HostileConfig
	address string

	mu     sync.Mutex
	counts map[string]int
	conns  []*grpc.ClientConn
	stuck  []grpc.ClientStream // never-read's streams
	wg     sync.WaitGroup
	// started is when the attack was in place.
	started time.Time
}

func newAttack(cfg HostileConfig, address string) *hostileAttack {
	return &hostileAttack{cfg: cfg, address: address, counts: map[string]int{}}
}

var digits = regexp.MustCompile(`[0-9]+`)

// record counts an outcome: a status with the numbers in its message folded, so that
// outcomes that differ only in sizes or addresses count together.
func (a *hostileAttack) record(outcome string) {
	a.mu.Lock()
	a.counts[outcome]++
	a.mu.Unlock()
}

func statusOutcome(err error) string {
	st := status.Convert(err)
	msg := digits.ReplaceAllString(st.Message(), "N")
	if len(msg) > 160 {
		msg = msg[:160] + "…"
	}
	return st.Code().String() + ": " + msg
}

func (a *hostileAttack) outcomes() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int, len(a.counts))
	for k, v := range a.counts {
		out[k] = v
	}
	return out
}

func (a *hostileAttack) dial(opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(256<<20))}, opts...)
	conn, err := grpc.NewClient(a.address, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", a.address, err)
	}
	a.mu.Lock()
	a.conns = append(a.conns, conn)
	a.mu.Unlock()
	return conn, nil
}

func openRaw(ctx context.Context, conn *grpc.ClientConn) (grpc.ClientStream, error) {
	return conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, sotwMethod)
}

// start puts the attack in place: its streams open (never-read, streams, spoof) or its
// workers running (the others).
func (a *hostileAttack) start(ctx context.Context) error {
	a.started = time.Now()
	switch a.cfg.Attack {
	case "none":
		return nil
	case "never-read":
		return a.startNeverRead(ctx)
	case "streams":
		return a.startStreams(ctx)
	case "spoof":
		return a.startSpoof(ctx)
	}
	payloads, rate, err := a.payloads()
	if err != nil {
		return err
	}
	conn, err := a.dial()
	if err != nil {
		return err
	}
	var next atomic.Int64
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	a.wg.Go(func() {
		<-ctx.Done()
		tick.Stop()
	})
	for range a.cfg.Attackers {
		a.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				p := payloads[int(next.Add(1))%len(payloads)]
				a.record(a.sendOnce(ctx, conn, p))
			}
		})
	}
	return nil
}

// payloads are what the repeating attacks send, one stream each, and at what rate.
func (a *hostileAttack) payloads() ([][]byte, float64, error) {
	node := &corev3.Node{Id: victimNode}
	marshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err) // these messages always marshal
		}
		return b
	}
	switch a.cfg.Attack {
	case "garbage":
		return [][]byte{
			{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02},
			marshal(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}),
			marshal(&discoveryv3.DiscoveryRequest{Node: node}),
		}, a.cfg.Rate, nil
	case "unknown-type":
		return [][]byte{marshal(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: unknownType})}, a.cfg.Rate, nil
	case "huge-names":
		return [][]byte{edsRequestOf(node, 1_000_000), edsRequestOf(node, 100_001)}, a.cfg.Rate / 10, nil
	}
	return nil, 0, fmt.Errorf("unknown attack %q", a.cfg.Attack)
}

// edsRequestOf is an EDS request naming n distinct clusters, encoded by hand.
func edsRequestOf(node *corev3.Node, n int) []byte {
	b, _ := proto.Marshal(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType})
	for i := range n {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, fmt.Sprintf("c%d", i))
	}
	return b
}

// sendOnce opens a stream, sends payload and returns how the stream ended.
func (a *hostileAttack) sendOnce(ctx context.Context, conn *grpc.ClientConn, payload []byte) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cs, err := openRaw(ctx, conn)
	if err != nil {
		return statusOutcome(err)
	}
	_ = cs.SendMsg(payload) // a failed send shows in the status below
	for {
		var drop []byte
		if err := cs.RecvMsg(&drop); err != nil {
			return statusOutcome(err)
		}
	}
}

// startNeverRead opens the stuck streams: a connection each, as Envoy has, with 64 kB HTTP/2
// windows (fixed windows turn off grpc-go's window growth), subscribed to clusters and
// listeners, never read.
func (a *hostileAttack) startNeverRead(ctx context.Context) error {
	for i := range a.cfg.Attackers {
		conn, err := a.dial(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			return err
		}
		node, err := proxyNode(a.cfg.Proxies+i, a.cfg.Proxies, a.address, false)
		if err != nil {
			return err
		}
		cs, err := openRaw(ctx, conn)
		if err != nil {
			return fmt.Errorf("opening a stuck stream: %w", err)
		}
		for _, t := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
			if err := cs.SendMsg(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: t}); err != nil {
				return fmt.Errorf("subscribing a stuck stream: %w", err)
			}
		}
		a.stuck = append(a.stuck, cs)
	}
	return nil
}

// startStreams opens the idle subscribers, 100 to a connection, and returns once each has
// had its first answer (or been refused).
func (a *hostileAttack) startStreams(ctx context.Context) error {
	var conn *grpc.ClientConn
	var first sync.WaitGroup
	for i := range a.cfg.Attackers {
		if i%100 == 0 {
			var err error
			if conn, err = a.dial(); err != nil {
				return err
			}
		}
		node, err := proxyNode(a.cfg.Proxies+i, a.cfg.Proxies, a.address, false)
		if err != nil {
			return err
		}
		first.Add(1)
		a.wg.Go(func() {
			answered := sync.OnceFunc(first.Done)
			defer answered()
			cs, err := openRaw(ctx, conn)
			if err != nil {
				a.record(statusOutcome(err))
				return
			}
			if err := cs.SendMsg(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ListenerType}); err != nil {
				a.record(statusOutcome(err))
				return
			}
			for n := 0; ; n++ {
				var resp discoveryv3.DiscoveryResponse
				if err := cs.RecvMsg(&resp); err != nil {
					if ctx.Err() == nil {
						a.record(statusOutcome(err))
					} else if n > 0 {
						a.record("OK: subscribed, held open until the end")
					}
					return
				}
				answered()
				// ACKed, as Envoy does: a stream that never answers is closed after the send
				// timeout, and these are to stay open, costing pilot a stream each.
				ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
				if err := cs.SendMsg(ack); err != nil {
					a.record(statusOutcome(err))
					return
				}
			}
		})
	}
	waited := make(chan struct{})
	go func() { first.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
	}
	slog.Info("hostile streams open", "streams", a.cfg.Attackers)
	return nil
}

// startSpoof opens streams that claim the victim workload, ask for its configuration and its
// certificate, and ACK what they get, as an Envoy would.
func (a *hostileAttack) startSpoof(ctx context.Context) error {
	conn, err := a.dial()
	if err != nil {
		return err
	}
	var configured sync.WaitGroup
	for range a.cfg.Attackers {
		configured.Add(1)
		a.wg.Go(func() {
			gotConfig := sync.OnceFunc(configured.Done)
			defer gotConfig()
			a.record(spoofOnce(ctx, conn, gotConfig))
		})
	}
	waited := make(chan struct{})
	go func() { configured.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
	}
	return nil
}

func spoofOnce(ctx context.Context, conn *grpc.ClientConn, gotConfig func()) string {
	cs, err := openRaw(ctx, conn)
	if err != nil {
		return statusOutcome(err)
	}
	node := &corev3.Node{Id: victimNode}
	secrets := []string{"default", "ROOTCA"}
	for _, r := range []*discoveryv3.DiscoveryRequest{
		{Node: node, TypeUrl: resourcev3.ClusterType},
		{Node: node, TypeUrl: resourcev3.SecretType, ResourceNames: secrets},
	} {
		if err := cs.SendMsg(r); err != nil {
			return statusOutcome(err)
		}
	}
	config, root := false, false
	for {
		var resp discoveryv3.DiscoveryResponse
		if err := cs.RecvMsg(&resp); err != nil {
			if ctx.Err() == nil {
				return statusOutcome(err)
			}
			return fmt.Sprintf("OK: clusters served %v, ROOTCA served %v, default (the victim's certificate) never sent", config, root)
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
		switch resp.TypeUrl {
		case resourcev3.ClusterType:
			config = true
			gotConfig()
		case resourcev3.SecretType:
			ack.ResourceNames = secrets
			for _, r := range resp.Resources {
				var s tlsv3.Secret
				if r.UnmarshalTo(&s) == nil && s.Name == "default" {
					return "BREACH: the victim's certificate (default) was sent"
				}
				if s.Name == "ROOTCA" {
					root = true
				}
			}
		}
		if err := cs.SendMsg(ack); err != nil {
			return statusOutcome(err)
		}
	}
}

// finish ends the attack and collects its outcomes. never-read's streams are left stuck
// until pilot has closed them (its send timeout), then read, so that they see the status
// pilot closed them with.
func (a *hostileAttack) finish(ctx context.Context, pilot *Pilot, stop func()) {
	if a.cfg.Attack == "never-read" {
		timeout := a.cfg.SendTimeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		// Every stuck stream blocks within moments of the start: past its send timeout and a
		// margin, a stream pilot has not closed was not stuck (its responses fitted its windows).
		deadline := a.started.Add(timeout + 10*time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			m, err := pilot.MetricsBy(ctx, "reason", "skiff_xds_streams_closed_total")
			if closed := m["skiff_xds_streams_closed_total"]; err == nil && int(closed["send_timeout"]+closed["unanswered"]) >= len(a.stuck) {
				break
			}
			sleep(ctx, 500*time.Millisecond)
		}
		drainCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var drained sync.WaitGroup
		for _, cs := range a.stuck {
			drained.Go(func() {
				for {
					var drop []byte
					if err := cs.RecvMsg(&drop); err != nil {
						a.record(statusOutcome(err))
						return
					}
				}
			})
		}
		go func() { <-drainCtx.Done(); stop() }() // a stream pilot never closed ends here
		drained.Wait()
		cancel()
	}
	stop()
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		_ = c.Close()
	}
}
