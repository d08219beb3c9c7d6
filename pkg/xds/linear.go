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

// resend gives the named resources a new version without changing them, so every stream that
// watches them receives them again.
func resend(lc *cachev3.LinearCache, names []string) error {
	if len(names) == 0 {
		return nil
	}
	have := lc.GetResources()
	again := make(map[string]types.Resource, len(names))
	for _, n := range names {
		if res, ok := have[n]; ok {
			again[n] = res
		}
	}
	if len(again) == 0 {
		return nil
	}
	return lc.UpdateResources(again, nil)
}
