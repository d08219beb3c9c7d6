package xds

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// updateLinear makes the cache hold exactly want, touching only resources whose content
// changed: an unchanged resource keeps its version, so no stream re-sends it.
func updateLinear(lc *cachev3.LinearCache, want map[string]types.Resource) error {
	have := lc.GetResources()
	changed := map[string]types.Resource{}
	for name, res := range want {
		if old, ok := have[name]; !ok || !proto.Equal(old, res) {
			changed[name] = res
		}
	}
	var removed []string
	for name := range have {
		if _, ok := want[name]; !ok {
			removed = append(removed, name)
		}
	}
	if len(changed) == 0 && len(removed) == 0 {
		return nil
	}
	return lc.UpdateResources(changed, removed)
}
