package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffmesh/skiff/pkg/model"
)

// interceptionModeKey is the node metadata field Istio proxies use to say whether their traffic
// is captured.
const interceptionModeKey = "INTERCEPTION_MODE"

// labelsKey is the node metadata field with the workload's labels, as Istio proxies send it.
const labelsKey = "LABELS"

// proxyFromNode parses the node of a request. A missing or malformed node ID is the client's
// mistake, so it is an InvalidArgument status that explains the expected form. Node metadata
// LABELS are read only when trustLabels: in Kubernetes the Pod says what the labels are
// (Snapshot.ResolveProxy), and a proxy must not pick its own policies.
func proxyFromNode(node *corev3.Node, trustLabels bool) (*model.Proxy, error) {
	proxy, err := model.ParseNodeID(node.GetId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	fields := node.GetMetadata().GetFields()
	proxy.SetInterceptionMode(fields[interceptionModeKey].GetStringValue())
	if !trustLabels {
		return proxy, nil
	}
	for k, v := range fields[labelsKey].GetStructValue().GetFields() {
		if proxy.Labels == nil {
			proxy.Labels = map[string]string{}
		}
		proxy.Labels[k] = v.GetStringValue()
	}
	return proxy, nil
}
