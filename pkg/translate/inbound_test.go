package translate_test

import (
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// A captured sidecar that names no Pod serves, by its IP, the endpoints an EndpointSlice lists
// there, and its configuration key says so; one that names a Pod serves that Pod's, whatever
// its IP. Only the first one's key follows endpoint addresses.
func TestInboundPortsByAddress(t *testing.T) {
	snap := loadYAML(t, replicaMesh)
	vm := podProxy(t, "vm-1", "10.244.0.5") // no Pod vm-1; reviews-v1-a's address
	if key := translate.ConfigKey(snap, vm); !strings.Contains(key, "/ports=8080h") {
		t.Errorf("key %q lacks the port of the endpoint at the proxy's IP", key)
	}
	if !translate.InboundPortsFollowAddresses(snap, vm) {
		t.Error("a captured sidecar without a workload: its inbound ports follow addresses")
	}
	if !hasCluster(translate.ForProxy(snap, vm), "inbound|8080||") {
		t.Error("no inbound|8080|| for the endpoint at the proxy's IP")
	}

	nowhere := podProxy(t, "vm-2", "10.9.9.9")
	if key := translate.ConfigKey(snap, nowhere); strings.Contains(key, "8080") {
		t.Errorf("key %q: want no inbound ports for an IP no endpoint has", key)
	}

	named := podProxy(t, "reviews-v1-a", "10.9.9.9") // the Pod is at 10.244.0.5
	if key := translate.ConfigKey(snap, named); !strings.Contains(key, "/ports=8080h") {
		t.Errorf("key %q: the named Pod's port must win over the IP", key)
	}
	if translate.InboundPortsFollowAddresses(snap, named) {
		t.Error("a sidecar that names its Pod does not follow endpoint addresses")
	}

	vm.InterceptionMode = model.InterceptionNone
	if translate.InboundPortsFollowAddresses(snap, vm) {
		t.Error("without capture there is no virtualInbound, so nothing follows addresses")
	}
}

func hasCluster(r *translate.Resources, name string) bool {
	for _, c := range r.Clusters {
		if c.Name == name {
			return true
		}
	}
	return false
}
