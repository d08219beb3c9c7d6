package translate

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/skiffmesh/skiff/pkg/model"
)

// gatewayListeners builds a gateway proxy's listeners from the Gateways that select it.
func gatewayListeners(snap *model.Snapshot, proxy *model.Proxy) []*listenerv3.Listener {
	return nil
}

// gatewayRoutes builds a gateway proxy's route configurations, `http.PORT`.
func gatewayRoutes(snap *model.Snapshot, proxy *model.Proxy) []*routev3.RouteConfiguration {
	return nil
}
