package xds

import (
	"runtime"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
	"github.com/skiffmesh/skiff/pkg/xds/fanout"
)

// encodedConfig is one type of a configuration translated and encoded for its store, or why
// it could not be encoded.
type encodedConfig struct {
	resources map[string]*fanout.Resource // by name
	err       error
	routes    *routeMemo // a sidecar's route configurations: what the next translation may reuse
}

// translateAll translates and encodes each configuration, for one proxy that has its key, on
// all cores: translation is pure and the snapshot immutable, so configurations are
// independent. The pool is bounded by GOMAXPROCS, so a push of many keys does not pile up
// goroutines that each hold a translation's garbage. A sidecar's route configurations reuse
// the virtual hosts of memos whose snapshot differs from snap in VirtualServices alone (see
// routes.go); memos is only read.
func translateAll(snap *model.Snapshot, byID map[configID]*model.Proxy, memos map[configID]*routeMemo) map[configID]encodedConfig {
	reusable := map[*model.Snapshot]bool{}
	for id := range byID {
		if m := memos[id]; m != nil {
			if _, done := reusable[m.snap]; !done {
				reusable[m.snap] = model.HTTPRoutesOnly(m.snap, snap)
			}
		}
	}
	out := make(map[configID]encodedConfig, len(byID))
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, runtime.GOMAXPROCS(0))
	for id, proxy := range byID {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			var enc encodedConfig
			proxy := snap.ResolveProxy(proxy)
			if id.typeURL == resourcev3.RouteType && proxy.Type != model.Router {
				memo := memos[id]
				enc.resources, enc.routes, enc.err = sidecarRoutes(snap, proxy, memo, memo != nil && reusable[memo.snap])
			} else {
				enc.resources, enc.err = fanout.EncodeAll(id.typeURL, typeResources(snap, proxy, id.typeURL))
			}
			mu.Lock()
			out[id] = enc
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// typeResources translates one type of a resolved proxy's configuration, by name. Secrets
// (gateway credentials) hold private keys: they go to the proxy and nowhere else.
func typeResources(snap *model.Snapshot, proxy *model.Proxy, typeURL string) map[string]types.Resource {
	switch typeURL {
	case resourcev3.ClusterType:
		return byName(translate.Clusters(snap, proxy))
	case resourcev3.ListenerType:
		return byName(translate.Listeners(snap, proxy))
	case resourcev3.RouteType:
		return byName(translate.Routes(snap, proxy))
	case resourcev3.SecretType:
		return byName(translate.Secrets(snap, proxy))
	case resourcev3.ExtensionConfigType:
		return byName(translate.ExtensionConfigs(snap, proxy))
	}
	return map[string]types.Resource{}
}

// byName indexes resources by their names.
func byName[R interface {
	types.Resource
	GetName() string
}](list []R) map[string]types.Resource {
	out := make(map[string]types.Resource, len(list))
	for _, r := range list {
		out[r.GetName()] = r
	}
	return out
}

// classResources translates every type of a proxy's configuration.
func classResources(snap *model.Snapshot, proxy *model.Proxy) map[string]map[string]types.Resource {
	proxy = snap.ResolveProxy(proxy)
	out := make(map[string]map[string]types.Resource, len(classTypes))
	for _, t := range classTypes {
		out[t] = typeResources(snap, proxy, t)
	}
	return out
}
