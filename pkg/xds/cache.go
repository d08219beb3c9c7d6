package xds

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/xds/fanout"
)

// classTypes are the types translated per proxy class; endpoints are shared by the whole mesh.
// Update fills the stores in this order, so a gateway's secrets are in place before the
// listeners that name them reach Envoy (a state-of-the-world SDS answer without the secret
// asked for would be rejected), and so are the extension configurations (a sidecar's inbound
// RBAC rules) that listeners' filters fetch: a new listener warms only until they come.
var classTypes = []string{resourcev3.ClusterType, resourcev3.SecretType, resourcev3.ExtensionConfigType, resourcev3.ListenerType, resourcev3.RouteType}

// classCache is the cache behind the ADS server. Proxies are grouped twice:
//
//   - a stream belongs to its proxy class (model.Proxy.Class, one per workload), which comes
//     from the node alone and never changes while the stream lives;
//   - each proxy class is bound, per type, to a shared configuration: the fanout store of that
//     type for one key (see configs.go). Extension configurations (inbound RBAC rules) and
//     listeners are keyed by translate.ConfigKey (listeners mark their TCP chains with the
//     workload's TCP rules, so that a rule change drains them); clusters, routes and secrets by
//     translate.TrafficConfigKey, which leaves out the labels only policies select by. Every
//     proxy class with a key (the replicas of one Deployment, say) watches the same store, so
//     a configuration is translated, compared and marshalled once however many proxies share
//     it: workloads that differ only in their policies share all but their listeners and RBAC
//     rules.
//
// Endpoints are one store for the whole mesh. A store sends each resource's bytes as encoded
// once, and re-sends only what changed where the protocol allows (RDS, EDS, and every type in
// delta).
//
// A proxy class is bound by the push loop, never on a stream's goroutine; until then its
// watches are parked and replayed against its shared stores once bound. When a push finds that
// a class's key changed (a Pod relabelled), the class is bound to the other configuration and
// its streams are closed: Envoy reconnects at once, keeps serving its current configuration
// meanwhile, and its new stream watches the stores of its new configuration.
type classCache struct {
	endpoints *fanout.Store
	// versionPrefix makes versions from an earlier pilot process look foreign, so a
	// reconnecting Envoy is always answered in full.
	versionPrefix string
	// onNewClass asks the push loop to bind a class that has no configuration yet.
	onNewClass func(class string, proxy *model.Proxy)
	// sds serves the per-proxy secrets (default, ROOTCA) from per-stream caches, and
	// streamOf ties a Secret request to its stream and source address.
	sds      *sdsServer
	streamOf func(req any) (id int64, address string, ok bool)
	// queueOf tells the tracker the send queue of the stream a request came from (the same
	// channel for every watch of a stream), so that /debug/wait sees responses not yet sent.
	queueOf func(req any, queued func() int)
	// ignoreNodeLabels: see Options.IgnoreNodeLabels.
	ignoreNodeLabels bool
	log              *slog.Logger

	mu      sync.Mutex
	classes map[string]*proxyClass
	configs map[configID]*sharedConfig
	// configSeq numbers shared configurations, for their version prefixes.
	configSeq int
}

// proxyClass is one workload's streams: its configuration bindings, and the watches that
// arrived before it was bound.
type proxyClass struct {
	proxy *model.Proxy // a representative: the node of the class's first stream
	// bound is the shared configuration of each type; nil until bound.
	bound  map[string]*sharedConfig
	parked map[*parkedWatch]struct{}
}

// parkedWatch is a SotW or delta watch waiting for its class to be bound.
type parkedWatch struct {
	request      *cachev3.Request
	deltaRequest *cachev3.DeltaRequest
	sub          cachev3.Subscription
	value        chan cachev3.Response
	deltaValue   chan cachev3.DeltaResponse
	// cancel is the real watch's cancel once the watch is replayed.
	cancel func()
}

var _ cachev3.Cache = (*classCache)(nil)

func newClassCache(versionPrefix string, onNewClass func(string, *model.Proxy)) *classCache {
	return &classCache{
		endpoints:     fanout.NewStore(resourcev3.EndpointType, versionPrefix+"eds-"),
		versionPrefix: versionPrefix,
		onNewClass:    onNewClass,
		classes:       map[string]*proxyClass{},
		configs:       map[configID]*sharedConfig{},
	}
}

// CreateWatch implements cachev3.ConfigWatcher for state-of-the-world streams.
func (c *classCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, value chan cachev3.Response) (func(), error) {
	if req.GetErrorDetail() != nil {
		defer fanout.DropNack(req) // taken by a store, or not meant for one (per-proxy secrets)
	}
	if c.queueOf != nil {
		c.queueOf(req, func() int { return len(value) })
	}
	fanout.Unstash(req) // the names the stream took out of it before the server saw it
	if req.GetTypeUrl() == resourcev3.EndpointType {
		return c.endpoints.CreateWatch(req, sub, value)
	}
	w := &parkedWatch{request: req, sub: sub, value: value}
	if req.GetTypeUrl() == resourcev3.SecretType && slices.ContainsFunc(req.GetResourceNames(), isProxySecret) {
		return c.proxySecretWatch(req, w)
	}
	return c.watch(w)
}

// CreateDeltaWatch implements cachev3.ConfigWatcher for delta streams.
func (c *classCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, value chan cachev3.DeltaResponse) (func(), error) {
	if req.GetErrorDetail() != nil {
		defer fanout.DropNack(req)
	}
	if c.queueOf != nil {
		c.queueOf(req, func() int { return len(value) })
	}
	if req.GetTypeUrl() == resourcev3.EndpointType {
		return c.endpoints.CreateDeltaWatch(req, sub, value)
	}
	w := &parkedWatch{deltaRequest: req, sub: sub, deltaValue: value}
	if req.GetTypeUrl() == resourcev3.SecretType {
		for name := range sub.SubscribedResources() {
			if isProxySecret(name) {
				return c.proxySecretWatch(req, w)
			}
		}
	}
	return c.watch(w)
}

// proxySecretWatch routes a Secret watch that names default or ROOTCA to the stream's own
// cache: those secrets differ between proxies of one class.
func (c *classCache) proxySecretWatch(req any, w *parkedWatch) (func(), error) {
	proxy, err := proxyFromNode(w.node(), !c.ignoreNodeLabels)
	if err != nil {
		return nil, err
	}
	if c.sds == nil || c.streamOf == nil {
		return nil, status.Error(codes.Unimplemented, "per-proxy secrets are not served")
	}
	id, address, ok := c.streamOf(req)
	if !ok {
		return nil, status.Error(codes.Internal, errNoStream.Error())
	}
	return c.sds.watch(id, address, proxy, w)
}

// Fetch is the REST (polling) API, which Skiff does not serve.
func (c *classCache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("fetch is not supported: use ADS")
}

// watch opens w on its class's cache, or parks it until the class has been translated.
func (c *classCache) watch(w *parkedWatch) (func(), error) {
	typeURL := w.typeURL()
	if !slices.Contains(classTypes, typeURL) {
		return nil, status.Errorf(codes.Unimplemented, "type %s is not served", typeURL)
	}
	proxy, err := proxyFromNode(w.node(), !c.ignoreNodeLabels)
	if err != nil {
		return nil, err
	}
	class := proxy.Class()

	c.mu.Lock()
	pc, ok := c.classes[class]
	if !ok {
		pc = &proxyClass{proxy: proxy, parked: map[*parkedWatch]struct{}{}}
		c.classes[class] = pc
	}
	if pc.bound != nil {
		store := pc.bound[typeURL].store
		c.mu.Unlock()
		return w.start(store)
	}
	pc.parked[w] = struct{}{}
	c.mu.Unlock()
	if !ok {
		c.onNewClass(class, proxy)
	}
	return func() { c.cancelParked(class, w) }, nil
}

func (w *parkedWatch) node() *corev3.Node {
	if w.request != nil {
		return w.request.GetNode()
	}
	return w.deltaRequest.GetNode()
}

// start opens the watch on a store: the class's for its type, or a stream's own for its secrets.
func (w *parkedWatch) start(on cachev3.ConfigWatcher) (func(), error) {
	if w.request != nil {
		return on.CreateWatch(w.request, w.sub, w.value)
	}
	return on.CreateDeltaWatch(w.deltaRequest, w.sub, w.deltaValue)
}

func (c *classCache) cancelParked(class string, w *parkedWatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pc, ok := c.classes[class]; ok {
		delete(pc.parked, w)
	}
	if w.cancel != nil {
		w.cancel()
	}
}

// Classes returns the classes that have watchers, with a representative proxy each.
func (c *classCache) Classes() map[string]*model.Proxy {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]*model.Proxy, len(c.classes))
	for k, pc := range c.classes {
		out[k] = pc.proxy
	}
	return out
}

func (w *parkedWatch) typeURL() string {
	if w.request != nil {
		return w.request.GetTypeUrl()
	}
	return w.deltaRequest.GetTypeUrl()
}
