package xds

import (
	"fmt"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
	"github.com/skiffmesh/skiff/pkg/wire"
	"github.com/skiffmesh/skiff/pkg/xds/fanout"
)

// A sidecar's route configuration for a port holds a virtual host per service: a thousand
// services are a thousand virtual hosts and most of a megabyte, translated and encoded again
// for every VirtualService change, of which each alters one. Pilot keeps, per configuration,
// each virtual host's bytes with the VirtualService it was translated from (routeMemo). When
// the snapshot differs from the memo's in VirtualServices alone (model.HTTPRoutesOnly), a
// virtual host depends on nothing that changed unless its VirtualService did (its service,
// domains, DestinationRules and the mesh configuration are as they were; the plan finds the
// VirtualService that applies now): its bytes are reused, and the configuration is encoded
// around them (wire.RouteConfiguration), the same bytes as translating it all again.

// routeMemo is what pilot keeps of one configuration's route configurations between pushes.
type routeMemo struct {
	snap    *model.Snapshot
	configs map[string][]memoHost // by route configuration name, in order
}

// memoHost is one virtual host of a route configuration as last sent.
type memoHost struct {
	name  string
	vs    *networkingv1.VirtualService // the one it was translated from; nil for none
	bytes []byte                       // its encoding: a window of the configuration's
	limit uint32                       // translate.DirectResponseBodyLimit
}

// sidecarRoutes translates and encodes a sidecar's route configurations, reusing memo's
// virtual hosts where reuse says memo's snapshot differs from snap in VirtualServices alone,
// and returns them with the memo of this translation.
func sidecarRoutes(snap *model.Snapshot, proxy *model.Proxy, memo *routeMemo, reuse bool) (map[string]*fanout.Resource, *routeMemo, error) {
	plans, own := translate.PlanOutboundRoutes(snap, proxy)
	out := make(map[string]*fanout.Resource, len(plans)+len(own))
	next := &routeMemo{snap: snap, configs: make(map[string][]memoHost, len(plans))}
	for _, p := range plans {
		name := p.Config.GetName()
		var before []memoHost
		if reuse && memo != nil {
			before = memo.configs[name]
		}
		hosts := make([]memoHost, 0, len(p.Hosts))
		encoded := make([][]byte, 0, len(p.Hosts)+1)
		var limit uint32
		for i, h := range p.Hosts {
			// Services and their domains are as before, so the list is too; the name check
			// keeps a wrong guess from ever reusing another host's bytes.
			m, ok := memoHost{}, false
			if i < len(before) && before[i].name == h.Name && before[i].vs == h.VirtualService {
				m, ok = before[i], true
			}
			if !ok {
				vh := h.Build(snap, proxy)
				b, err := wire.Marshal(vh)
				if err != nil {
					return nil, nil, fmt.Errorf("encoding virtual host %q of route configuration %q: %w", h.Name, name, err)
				}
				m = memoHost{name: h.Name, vs: h.VirtualService, bytes: b, limit: translate.DirectResponseBodyLimit(vh)}
			}
			hosts = append(hosts, m)
			encoded = append(encoded, m.bytes)
			limit = max(limit, m.limit)
		}
		catchAll, err := wire.Marshal(p.CatchAll)
		if err != nil {
			return nil, nil, fmt.Errorf("encoding the catch-all virtual host of route configuration %q: %w", name, err)
		}
		encoded = append(encoded, catchAll)
		if limit = max(limit, translate.DirectResponseBodyLimit(p.CatchAll)); limit > 0 {
			p.Config.MaxDirectResponseBodySizeBytes = wrapperspb.UInt32(limit)
		}
		b, err := wire.RouteConfiguration(p.Config, encoded)
		if err != nil {
			return nil, nil, fmt.Errorf("encoding route configuration %q: %w", name, err)
		}
		for i := range hosts {
			hosts[i].bytes = encoded[i] // now a window of b: the memo holds no second copy
		}
		next.configs[name] = hosts
		out[name] = fanout.Encoded(resourcev3.RouteType, name, b)
	}
	for _, rc := range own {
		r, err := fanout.Encode(resourcev3.RouteType, rc.GetName(), rc)
		if err != nil {
			return nil, nil, err
		}
		out[rc.GetName()] = r
	}
	return out, next, nil
}
