// Package kubemesh tests pilot's Kubernetes mode end to end: a real kube-apiserver and etcd
// (test/kube), pilot running as the ServiceAccount that deploy/pilot's RBAC binds, and real
// Envoys whose node IDs name Pods created in the API server. The Pods do not run (there is no
// kubelet): the tests create them, set their status (IP, phase) as a kubelet would, and create
// the EndpointSlices the endpoint controller would, pointing at test upstreams on 127.0.10.x.
//
// The tests share one API server and run one after the other: the resilience test stops the
// API server, and every pilot publishes the root certificate ConfigMaps in every namespace.
package kubemesh

import (
	"fmt"
	"os"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
	"github.com/skiffmesh/skiff/test/kube"
)

var cluster *kube.Cluster

// TestMain starts the cluster once, and asserts over the whole package what each test also
// checks for its own Envoys: no Envoy rejected any configuration pilot sent it.
func TestMain(m *testing.M) {
	c, err := kube.New()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube: %v\n", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	checked, rejecting := framework.SuiteRejections()
	fmt.Printf("zero-NACK check: %d Envoys checked, %d rejected an xDS update\n", checked, rejecting)
	if rejecting > 0 && code == 0 {
		code = 1
	}
	if code != 0 || os.Getenv("SKIFF_TEST_LOGS") != "" {
		fmt.Fprint(os.Stderr, c.Logs())
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "kube: %v\n", err)
		code = 1
	}
	os.Exit(code)
}
