package model

import (
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
)

// servingSet is a namespace shop with a VM listed inline in a ServiceEntry (10.0.0.5), the same
// address in an EndpointSlice without a Pod, a WorkloadEntry at 10.0.0.7, a DNS-resolved entry
// and, in another namespace, a service with an endpoint at 10.0.0.5 too.
func servingSet() *config.Set {
	entry := func(name, ns string, resolution networking.ServiceEntry_Resolution, addresses ...string) *networkingv1.ServiceEntry {
		se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		se.Spec.Hosts = []string{name + "." + ns + ".svc.cluster.local"}
		se.Spec.Ports = []*networking.ServicePort{{Number: 9080, Name: "http", Protocol: "HTTP"}}
		se.Spec.Resolution = resolution
		for _, a := range addresses {
			se.Spec.Endpoints = append(se.Spec.Endpoints, &networking.WorkloadEntry{Address: a})
		}
		return se
	}
	reviews := entry("reviews", "shop", networking.ServiceEntry_STATIC, "10.0.0.5")
	reviews.Spec.WorkloadSelector = &networking.WorkloadSelector{Labels: map[string]string{"app": "reviews"}}
	we := &networkingv1.WorkloadEntry{ObjectMeta: metav1.ObjectMeta{Name: "reviews-v1", Namespace: "shop"}}
	we.Spec.Address, we.Spec.Labels = "10.0.0.7", map[string]string{"app": "reviews"}

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "shop"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.9", Ports: []corev1.ServicePort{{Name: "tcp-db", Port: 3306}}}}
	port, name := int32(3306), "tcp-db"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "legacy-x", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "legacy"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.5"}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}
	return config.NewSet(reviews, we, svc, slice,
		entry("external", "shop", networking.ServiceEntry_DNS, "external.example.com"),
		entry("elsewhere", "other", networking.ServiceEntry_STATIC, "10.0.0.5"))
}

// TestServedEndpoints: a proxy that names a workload serves that workload's endpoints, at
// whatever IP; one that names none serves, as in istiod, the endpoints at its IP among its own
// namespace's services (ServiceEntry endpoints and EndpointSlice addresses alike).
func TestServedEndpoints(t *testing.T) {
	snap := Build(servingSet())
	for _, tc := range []struct {
		node      string
		byAddress bool
		want      []string // Service.Hostname of each endpoint, in order
	}{
		{"sidecar~10.0.0.5~vm-1.shop~shop.svc.cluster.local", true,
			[]string{"legacy.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}},
		{"sidecar~::ffff:10.0.0.5~vm-1.shop~shop.svc.cluster.local", true,
			[]string{"legacy.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}},
		// The named workload wins over the IP, which is another workload's.
		{"sidecar~10.0.0.5~reviews-v1.shop~shop.svc.cluster.local", false, []string{"reviews.shop.svc.cluster.local"}},
		// Only the proxy's namespace: istiod's service targets are filtered the same way.
		{"sidecar~10.0.0.5~vm-1.other~other.svc.cluster.local", true, []string{"elsewhere.other.svc.cluster.local"}},
		{"sidecar~10.0.0.5~vm-1.third~third.svc.cluster.local", true, nil},
		{"sidecar~10.0.0.99~vm-2.shop~shop.svc.cluster.local", true, nil},
	} {
		proxy, err := ParseNodeID(tc.node)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, se := range snap.ServedEndpoints(proxy) {
			got = append(got, se.Service.Hostname)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s serves %v, want %v", tc.node, got, tc.want)
		}
		if b := snap.ServesByAddress(proxy); b != tc.byAddress {
			t.Errorf("%s: ServesByAddress = %v, want %v", tc.node, b, tc.byAddress)
		}
	}
}

// TestWorkloadEntryLabelsResolveProxy: as a Pod's in Kubernetes, the labels of the
// WorkloadEntry a proxy's node ID names replace what the node metadata claims; a proxy that
// names none keeps its metadata labels.
func TestWorkloadEntryLabelsResolveProxy(t *testing.T) {
	bare := &networkingv1.WorkloadEntry{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: "shop"}}
	bare.Spec.Address = "10.0.0.8"
	set := servingSet()
	set.WorkloadEntries = append(set.WorkloadEntries, bare)
	snap := Build(set)
	claimed := map[string]string{"app": "admin"}

	named, _ := ParseNodeID("sidecar~10.0.0.7~reviews-v1.shop~shop.svc.cluster.local")
	named.Labels = claimed
	if got := snap.ResolveProxy(named).Labels; len(got) != 1 || got["app"] != "reviews" {
		t.Errorf("resolved labels %v, want the WorkloadEntry's app=reviews", got)
	}
	if named.Labels["app"] != "admin" {
		t.Error("ResolveProxy modified its argument")
	}
	unlabelled, _ := ParseNodeID("sidecar~10.0.0.8~bare.shop~shop.svc.cluster.local")
	unlabelled.Labels = claimed
	if got := snap.ResolveProxy(unlabelled).Labels; len(got) != 0 {
		t.Errorf("a WorkloadEntry without labels resolved to %v, want none: the entry, not the proxy, says", got)
	}
	vm, _ := ParseNodeID("sidecar~10.0.0.5~vm-1.shop~shop.svc.cluster.local")
	vm.Labels = claimed
	if snap.ResolveProxy(vm) != vm {
		t.Error("a proxy that names no workload resolves to itself, with its metadata labels")
	}
}
