package xds

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// updateLinear makes the cache hold exactly want, touching only resources whose content
// changed: an unchanged resource keeps its version, so no stream re-sends it. It returns the
// names of the resources that existed before and were modified.
func updateLinear(lc *cachev3.LinearCache, want map[string]types.Resource) (modified []string, err error) {
	have := lc.GetResources()
	changed := map[string]types.Resource{}
	for name, res := range want {
		old, existed := have[name]
		if !existed || !proto.Equal(old, res) {
			changed[name] = res
			if existed {
				modified = append(modified, name)
			}
		}
	}
	var removed []string
	for name := range have {
		if _, ok := want[name]; !ok {
			removed = append(removed, name)
		}
	}
	if len(changed) == 0 && len(removed) == 0 {
		return nil, nil
	}
	return modified, lc.UpdateResources(changed, removed)
}
