package xds

import (
	"errors"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
	"github.com/skiffmesh/skiff/pkg/xds/fanout"
)

// configID names a shared configuration: one resource type for one key.
type configID struct {
	typeURL string
	key     string
}

// configKeys are a proxy's keys per type in snap: extension configurations (the inbound RBAC
// rules) and listeners (which mark their TCP chains with those rules, see translate's
// authz_ecds.go) by everything translation reads from a proxy, the other types by all of it
// but the labels only policies select by.
func configKeys(snap *model.Snapshot, proxy *model.Proxy) map[string]string {
	keys := translate.ConfigKeys(snap, proxy)
	return map[string]string{
		resourcev3.ExtensionConfigType: keys.Full,
		resourcev3.ListenerType:        keys.Full,
		resourcev3.ClusterType:         keys.Traffic,
		resourcev3.RouteType:           keys.Traffic,
		resourcev3.SecretType:          keys.Traffic,
	}
}

// fullKeyType is the type keyed by translate.ConfigKey, which holds every input: a class's
// configuration is named by its key for this type.
const fullKeyType = resourcev3.ExtensionConfigType

// sharedConfig is the store of one type for one key, watched by every class with that key.
type sharedConfig struct {
	id    configID
	store *fanout.Store
	// snap is the snapshot the store was last filled from: a class that appears later with
	// the same key is bound without translating again while snap is current.
	snap    *model.Snapshot
	members int // proxy classes bound to it
	// idle: no class was bound to it at the last Prune (see Prune).
	idle bool
}

// Config reports whether the configuration id was filled from snap, so that a class with its
// key can be bound without translating.
func (c *classCache) Config(id configID, snap *model.Snapshot) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc, ok := c.configs[id]
	return ok && sc.snap == snap
}

// UpdateConfig makes the store of id hold resources, translated from snap: only resources whose
// bytes changed are sent again, so streams are woken only for real changes, and the comparison
// is made once per key, not per proxy. For clusters it returns the EDS names of the modified
// ones, whose endpoints must be sent again (see ResendEndpoints).
func (c *classCache) UpdateConfig(id configID, snap *model.Snapshot, resources map[string]*fanout.Resource) (rewarm []string) {
	c.mu.Lock()
	sc, ok := c.configs[id]
	if !ok {
		c.configSeq++
		// Each configuration versions its resources apart from every other, so that the
		// version an Envoy holds from one configuration never looks current in another.
		prefix := c.versionPrefix + strconv.Itoa(c.configSeq) + "-"
		sc = &sharedConfig{id: id, store: fanout.NewStore(id.typeURL, prefix)}
		c.observeRejections(sc.store, id.key)
		c.configs[id] = sc
	}
	sc.snap = snap
	c.mu.Unlock()

	modified := sc.store.Update(resources)
	if id.typeURL == resourcev3.ClusterType {
		rewarm = edsNames(resources, modified)
	}
	return rewarm
}

// Bind binds class to the configurations of keys (by type), which UpdateConfig has filled. A
// class bound for the first time has its parked watches replayed on them; a class that was
// bound to other keys reports moved, and its streams must reconnect (their watches are on the
// old stores).
func (c *classCache) Bind(class string, keys map[string]string) (moved bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pc, ok := c.classes[class]
	if !ok {
		return false, nil // the last proxy of the class left while it was being translated
	}
	bound := make(map[string]*sharedConfig, len(classTypes))
	same := pc.bound != nil
	for _, t := range classTypes {
		sc := c.configs[configID{t, keys[t]}]
		if sc == nil {
			return false, nil // translated for a snapshot that a newer push replaces
		}
		bound[t] = sc
		same = same && pc.bound[t] == sc
	}
	if same {
		return false, nil
	}
	if pc.bound != nil {
		c.releaseLocked(pc)
		moved = true
	}
	pc.bound = bound
	for _, sc := range bound {
		sc.members++
	}
	var errs []error
	for w := range pc.parked {
		cancel, err := w.start(bound[w.typeURL()].store)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		w.cancel = cancel
	}
	pc.parked = map[*parkedWatch]struct{}{}
	return moved, errors.Join(errs...)
}

// releaseLocked drops a class from its configurations. An unused configuration stays until
// Prune, at the end of a push, so that a class binding later in the same push still finds it.
func (c *classCache) releaseLocked(pc *proxyClass) {
	for _, sc := range pc.bound {
		sc.members--
	}
}

// Advance records that every configuration translates from snap as it did from the snapshot
// its store was filled from, so classes that appear are bound without translating.
func (c *classCache) Advance(snap *model.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, sc := range c.configs {
		sc.snap = snap
	}
}

// AdvanceConfig records that the existing configuration id translates from snap as from the
// snapshot its store was filled from. It reports false if there is no such configuration.
func (c *classCache) AdvanceConfig(id configID, snap *model.Snapshot) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc, ok := c.configs[id]
	if ok {
		sc.snap = snap
	}
	return ok
}

// Prune drops configurations that no class has been bound to since the previous Prune: left
// by their last class, or translated for a class whose proxy left before it was bound. One
// push's grace, because a class that moves has its proxies reconnect, and the class is forgotten
// when their streams end, which may be before this push's Prune: a configuration the class
// still shares after the move (its clusters, when only a policy moved it) must be there when
// they come back, or they would be sent all of it again under a new store's version.
func (c *classCache) Prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, sc := range c.configs {
		switch {
		case sc.members > 0:
			sc.idle = false
		case sc.idle:
			delete(c.configs, id)
		default:
			sc.idle = true
		}
	}
}

// KeyOf returns the configuration key class is bound to (translate.ConfigKey, which holds
// every input), "" if none yet.
func (c *classCache) KeyOf(class string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pc, ok := c.classes[class]; ok && pc.bound != nil {
		return pc.bound[fullKeyType].id.key
	}
	return ""
}

// ConfigCount is the number of distinct configurations served (full keys), and of the stores
// that serve them, shared between configurations where a type's key is.
func (c *classCache) ConfigCount() (configs, stores int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, sc := range c.configs {
		if sc.members <= 0 {
			continue // kept for a push in case its class comes back (see Prune)
		}
		stores++
		if id.typeURL == fullKeyType {
			configs++
		}
	}
	return configs, stores
}

// Forget drops a class whose last proxy disconnected.
func (c *classCache) Forget(class string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pc, ok := c.classes[class]; ok && pc.bound != nil {
		c.releaseLocked(pc)
	}
	delete(c.classes, class)
}

// ResendEndpoints sends the named assignments again. Envoy re-warms a modified EDS cluster: it
// waits for that cluster's endpoints again but asks with a version it already has, which the
// store would not answer, and Envoy would sit out its 15 s initial fetch timeout. istiod pushes
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
	var bound map[string]*sharedConfig
	if ok {
		bound = pc.bound
	}
	c.mu.Unlock()
	if bound == nil {
		return nil, false, nil
	}
	byType = map[string]map[string]types.Resource{}
	for t, sc := range bound {
		if byType[t], err = asResources(sc.store.Resources()); err != nil {
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
	if ok && pc.bound != nil {
		store = pc.bound[resourcev3.SecretType].store
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
