package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/model"
)

// applyTrafficPolicy applies a DestinationRule's traffic policy to the cluster of one service
// port, or of one subset of it (subset may be nil; dr may be nil).
func applyTrafficPolicy(c *clusterv3.Cluster, dr *networkingv1.DestinationRule, port model.Port, subset *networking.Subset) {
}
