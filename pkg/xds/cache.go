package xds

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/xds/fanout"
)

// classTypes are the types translated per proxy class; endpoints are shared by the whole mesh.
// Update fills the stores in this order, so a gateway's secrets are in place before the
// listeners that name them reach Envoy: a state-of-the-world SDS answer without the secret
// asked for would be rejected.
var classTypes = []string{resourcev3.ClusterType, resourcev3.SecretType, resourcev3.ListenerType, resourcev3.RouteType}

// classCache is the cache behind the ADS server. Proxies are grouped twice:
//
//   - a stream belongs to its proxy class (model.Proxy.Class, one per workload), which comes
//     from the node alone and never changes while the stream lives;
//   - each proxy class is bound to a shared configuration: the fanout stores of listeners,
//     routes, clusters and secrets for one translate.ConfigKey. Every proxy class with that key
//     (the replicas of one Deployment, say) watches the same stores, so a configuration is
//     translated, compared and marshalled once however many proxies share it.
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
	// ignoreNodeLabels: see Options.IgnoreNodeLabels.
	ignoreNodeLabels bool

	mu      sync.Mutex
	classes map[string]*proxyClass
	configs map[string]*sharedConfig
	// configSeq numbers shared configurations, for their version prefixes.
	configSeq int
}

// proxyClass is one workload's streams: its configuration binding, and the watches that
// arrived before it was bound.
type proxyClass struct {
	proxy  *model.Proxy  // a representative: the node of the class's first stream
	config *sharedConfig // nil until bound
	parked map[*parkedWatch]struct{}
}

// sharedConfig holds the stores of one configuration key.
type sharedConfig struct {
	key    string
	stores map[string]*fanout.Store
	// snap is the snapshot the stores were last filled from: a class that appears later with
	// the same key is bound without translating again while snap is current.
	snap    *model.Snapshot
	members int // proxy classes bound to it
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
		configs:       map[string]*sharedConfig{},
	}
}

// CreateWatch implements cachev3.ConfigWatcher for state-of-the-world streams.
func (c *classCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, value chan cachev3.Response) (func(), error) {
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
	if pc.config != nil {
		store := pc.config.stores[typeURL]
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

// Config returns the shared configuration of key if its stores were filled from snap, so a
// class with that key can be bound without translating.
func (c *classCache) Config(key string, snap *model.Snapshot) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc, ok := c.configs[key]
	return ok && sc.snap == snap
}

// UpdateConfig makes the stores of key hold byType, translated from snap: only resources whose
// bytes changed are sent again, so streams are woken only for real changes, and the comparison
// is made once per key, not per proxy. It returns the EDS names of modified clusters, whose
// endpoints must be sent again (see ResendEndpoints).
func (c *classCache) UpdateConfig(key string, snap *model.Snapshot, byType map[string]map[string]*fanout.Resource) (rewarm []string) {
	c.mu.Lock()
	sc, ok := c.configs[key]
	if !ok {
		c.configSeq++
		// Each configuration versions its resources apart from every other, so that the
		// version an Envoy holds from one configuration never looks current in another.
		prefix := c.versionPrefix + strconv.Itoa(c.configSeq) + "-"
		sc = &sharedConfig{key: key, stores: map[string]*fanout.Store{}}
		for _, t := range classTypes {
			sc.stores[t] = fanout.NewStore(t, prefix)
		}
		c.configs[key] = sc
	}
	sc.snap = snap
	stores := sc.stores
	c.mu.Unlock()

	for _, t := range classTypes {
		modified := stores[t].Update(byType[t])
		if t == resourcev3.ClusterType {
			rewarm = edsNames(byType[t], modified)
		}
	}
	return rewarm
}

// Bind binds class to the configuration of key, which UpdateConfig has filled. A class bound
// for the first time has its parked watches replayed on the configuration's stores; a class
// that was bound to another key reports moved, and its streams must reconnect (their watches
// are on the old key's stores).
func (c *classCache) Bind(class, key string) (moved bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pc, ok := c.classes[class]
	sc := c.configs[key]
	if !ok || sc == nil {
		return false, nil // the last proxy of the class left while it was being translated
	}
	if pc.config == sc {
		return false, nil
	}
	if pc.config != nil {
		c.releaseLocked(pc.config)
		moved = true
	}
	pc.config = sc
	sc.members++
	var errs []error
	for w := range pc.parked {
		cancel, err := w.start(sc.stores[w.typeURL()])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		w.cancel = cancel
	}
	pc.parked = map[*parkedWatch]struct{}{}
	return moved, errors.Join(errs...)
}

// releaseLocked drops one member of sc. An unused configuration stays until Prune, at the end
// of a push, so that a class binding later in the same push still finds it.
func (c *classCache) releaseLocked(sc *sharedConfig) { sc.members-- }

// Advance records that every configuration translates from snap as it did from the snapshot
// its stores were filled from, so classes that appear are bound without translating.
func (c *classCache) Advance(snap *model.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, sc := range c.configs {
		sc.snap = snap
	}
}

// Prune drops configurations that no class is bound to: left by their last class, or
// translated for a class whose proxy left before it was bound.
func (c *classCache) Prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, sc := range c.configs {
		if sc.members <= 0 {
			delete(c.configs, key)
		}
	}
}

// KeyOf returns the configuration key class is bound to, "" if none yet.
func (c *classCache) KeyOf(class string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pc, ok := c.classes[class]; ok && pc.config != nil {
		return pc.config.key
	}
	return ""
}

// ConfigCount is the number of distinct configurations served.
func (c *classCache) ConfigCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.configs)
}

func (w *parkedWatch) typeURL() string {
	if w.request != nil {
		return w.request.GetTypeUrl()
	}
	return w.deltaRequest.GetTypeUrl()
}

// ResendEndpoints sends the named assignments again. Envoy re-warms a modified EDS cluster: it
// waits for that cluster's endpoints again but asks with a version it already has, which the
// cache would not answer, and Envoy would sit out its 15 s initial fetch timeout. istiod pushes
// EDS with every CDS change for the same reason.
func (c *classCache) ResendEndpoints(names []string) {
	c.endpoints.Resend(names)
}

// UpdateEndpoints replaces the mesh's ClusterLoadAssignments, re-sending only changed ones.
func (c *classCache) UpdateEndpoints(resources map[string]*fanout.Resource) {
	c.endpoints.Update(resources)
}

// edsNames are the EDS service names of the named clusters.
func edsNames(clusters map[string]*fanout.Resource, names []string) []string {
	var out []string
	for _, n := range names {
		m, err := clusters[n].Message()
		if err != nil {
			continue // cannot happen: it was just encoded from a Cluster
		}
		if c, ok := m.(*clusterv3.Cluster); ok {
			if svc := c.GetEdsClusterConfig().GetServiceName(); svc != "" {
				out = append(out, svc)
			}
		}
	}
	return out
}

// Resources returns what a class's proxies are served, by type, including the endpoints of its
// clusters, decoded from the bytes they are sent as. ok is false when the class has no
// translated resources.
func (c *classCache) Resources(class string) (byType map[string]map[string]types.Resource, ok bool, err error) {
	c.mu.Lock()
	pc, ok := c.classes[class]
	var stores map[string]*fanout.Store
	if ok && pc.config != nil {
		stores = pc.config.stores
	}
	c.mu.Unlock()
	if stores == nil {
		return nil, false, nil
	}
	byType = map[string]map[string]types.Resource{}
	for t, store := range stores {
		if byType[t], err = asResources(store.Resources()); err != nil {
			return nil, false, err
		}
	}
	if byType[resourcev3.EndpointType], err = asResources(c.endpoints.Resources()); err != nil {
		return nil, false, err
	}
	return byType, true, nil
}

// classSecrets returns the translated kubernetes:// secrets of a class, nil if it has none yet.
func (c *classCache) classSecrets(class string) (map[string]types.Resource, error) {
	c.mu.Lock()
	pc, ok := c.classes[class]
	var store *fanout.Store
	if ok && pc.config != nil {
		store = pc.config.stores[resourcev3.SecretType]
	}
	c.mu.Unlock()
	if store == nil {
		return nil, nil
	}
	return asResources(store.Resources())
}

// asResources converts a store's messages to go-control-plane's resource type.
func asResources(msgs map[string]proto.Message, err error) (map[string]types.Resource, error) {
	if err != nil {
		return nil, err
	}
	out := make(map[string]types.Resource, len(msgs))
	for name, m := range msgs {
		out[name] = m
	}
	return out, nil
}

// Forget drops a class whose last proxy disconnected.
func (c *classCache) Forget(class string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pc, ok := c.classes[class]; ok && pc.config != nil {
		c.releaseLocked(pc.config)
	}
	delete(c.classes, class)
}
