package model

import (
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
)

// changeMesh is built afresh on every call, as a folder reload decodes a changed file again:
// equal content, new pointers.
type changeMesh struct {
	resolution networking.ServiceEntry_Resolution
	address    string // of the ServiceEntry's endpoint
	weeAddress string // of the WorkloadEntry
	weeAccount string // the WorkloadEntry's service account
	weight     uint32 // of the VirtualService's route
	podLabel   string
	tcp        bool   // the VirtualService routes TCP too
	podProbes  string // the Pod's ISTIO_KUBE_APP_PROBERS
}

func (m changeMesh) snapshot() *Snapshot {
	return Build(&config.Set{
		ServiceEntries: []*networkingv1.ServiceEntry{{
			ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"},
			Spec: networking.ServiceEntry{
				Hosts:      []string{"reviews.default.svc.cluster.local"},
				Ports:      []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
				Resolution: m.resolution,
				Endpoints:  []*networking.WorkloadEntry{{Address: m.address, Labels: map[string]string{"version": "v1"}}},
			},
		}},
		WorkloadEntries: []*networkingv1.WorkloadEntry{{
			ObjectMeta: metav1.ObjectMeta{Name: "vm-1", Namespace: "default"},
			Spec:       networking.WorkloadEntry{Address: m.weeAddress, Labels: map[string]string{"app": "vm"}, ServiceAccount: m.weeAccount},
		}},
		VirtualServices: []*networkingv1.VirtualService{{
			ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"},
			Spec: networking.VirtualService{
				Hosts: []string{"reviews"},
				Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
					{Destination: &networking.Destination{Host: "reviews"}, Weight: int32(m.weight)},
					{Destination: &networking.Destination{Host: "reviews", Subset: "v2"}, Weight: int32(100 - m.weight)},
				}}},
				Tcp: m.tcpRoutes(),
			},
		}},
		Pods: []*corev1.Pod{{
			ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: "default", Labels: map[string]string{"app": m.podLabel}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "istio-proxy", Env: []corev1.EnvVar{
				{Name: "ISTIO_KUBE_APP_PROBERS", Value: m.podProbes},
			}}}},
			Status: corev1.PodStatus{PodIP: "10.1.0.1"},
		}},
	})
}

func TestEndpointsOnly(t *testing.T) {
	base := changeMesh{resolution: networking.ServiceEntry_STATIC, address: "10.0.0.1", weeAddress: "10.0.1.1", weeAccount: "vm", weight: 90, podLabel: "client",
		podProbes: `{"/app-health/app/readyz":{"tcpSocket":{"port":80}}}`}
	for _, c := range []struct {
		name string
		edit func(*changeMesh)
		want bool
	}{
		{"nothing", func(*changeMesh) {}, true},
		{"an EDS endpoint's address", func(m *changeMesh) { m.address = "10.0.0.2" }, true},
		{"a WorkloadEntry's address", func(m *changeMesh) { m.weeAddress = "10.0.1.2" }, true},
		{"a WorkloadEntry's service account", func(m *changeMesh) { m.weeAccount = "vm2" }, true},
		// Without one its proxy can never hold a certificate, and gets no default mTLS.
		{"a WorkloadEntry's service account removed", func(m *changeMesh) { m.weeAccount = "" }, false},
		{"a VirtualService's weights", func(m *changeMesh) { m.weight = 80 }, false},
		{"a Pod's labels", func(m *changeMesh) { m.podLabel = "other" }, false},
		{"a Pod's application probes", func(m *changeMesh) { m.podProbes = `{"/app-health/app/readyz":{"tcpSocket":{"port":81}}}` }, false},
		{"a DNS endpoint's address", func(m *changeMesh) { m.resolution = networking.ServiceEntry_DNS }, false},
	} {
		next := base
		c.edit(&next)
		prev := base
		if c.name == "a DNS endpoint's address" {
			prev.resolution = networking.ServiceEntry_DNS
			next.address = "10.0.0.2"
		}
		if got := EndpointsOnly(prev.snapshot(), next.snapshot()); got != c.want {
			t.Errorf("%s changed: EndpointsOnly = %v, want %v", c.name, got, c.want)
		}
	}
	if EndpointsOnly(nil, base.snapshot()) {
		t.Error("the first snapshot counts as endpoints-only")
	}
}

func (m changeMesh) tcpRoutes() []*networking.TCPRoute {
	if !m.tcp {
		return nil
	}
	return []*networking.TCPRoute{{Route: []*networking.RouteDestination{{Destination: &networking.Destination{Host: "reviews"}}}}}
}

func TestHTTPRoutesOnly(t *testing.T) {
	base := changeMesh{resolution: networking.ServiceEntry_STATIC, address: "10.0.0.1", weeAddress: "10.0.1.1", weeAccount: "vm", weight: 90, podLabel: "client"}
	for _, c := range []struct {
		name       string
		prev, next func(*changeMesh)
		want       bool
	}{
		{"nothing", func(*changeMesh) {}, func(*changeMesh) {}, true},
		{"an HTTP route's weights", func(*changeMesh) {}, func(m *changeMesh) { m.weight = 80 }, true},
		{"weights of a VirtualService with TCP routes", func(m *changeMesh) { m.tcp = true }, func(m *changeMesh) { m.tcp, m.weight = true, 80 }, false},
		{"TCP routes added", func(*changeMesh) {}, func(m *changeMesh) { m.tcp = true }, false},
		{"an endpoint's address", func(*changeMesh) {}, func(m *changeMesh) { m.address = "10.0.0.2" }, false},
		{"a Pod's labels", func(*changeMesh) {}, func(m *changeMesh) { m.podLabel = "other" }, false},
	} {
		prev, next := base, base
		c.prev(&prev)
		c.next(&next)
		if got := HTTPRoutesOnly(prev.snapshot(), next.snapshot()); got != c.want {
			t.Errorf("%s: HTTPRoutesOnly = %v, want %v", c.name, got, c.want)
		}
	}
	if HTTPRoutesOnly(nil, base.snapshot()) {
		t.Error("the first snapshot counts as routes-only")
	}
}

// withPolicy is the mesh and an AuthorizationPolicy of namespace default allowing method.
func (m changeMesh) withPolicy(method string) *Snapshot {
	snap := m.snapshot()
	set := *snap.Config
	set.AuthorizationPolicies = []*securityv1.AuthorizationPolicy{{
		ObjectMeta: metav1.ObjectMeta{Name: "methods", Namespace: "default"},
		Spec: security.AuthorizationPolicy{
			Rules: []*security.Rule{{To: []*security.Rule_To{{Operation: &security.Operation{Methods: []string{method}}}}}},
		},
	}}
	return Build(&set)
}

func TestAuthorizationPoliciesOnly(t *testing.T) {
	base := changeMesh{resolution: networking.ServiceEntry_STATIC, address: "10.0.0.1", weeAddress: "10.0.1.1", weeAccount: "vm", weight: 90, podLabel: "client"}
	other := base
	other.weight = 80
	for _, c := range []struct {
		name       string
		prev, next *Snapshot
		want       bool
	}{
		{"nothing", base.withPolicy("GET"), base.withPolicy("GET"), true},
		{"a policy's rule", base.withPolicy("GET"), base.withPolicy("POST"), true},
		{"a policy added", base.snapshot(), base.withPolicy("GET"), true},
		{"a policy removed", base.withPolicy("GET"), base.snapshot(), true},
		{"a policy and a route", base.withPolicy("GET"), other.withPolicy("POST"), false},
	} {
		if got := AuthorizationPoliciesOnly(c.prev, c.next); got != c.want {
			t.Errorf("%s: AuthorizationPoliciesOnly = %v, want %v", c.name, got, c.want)
		}
	}
	if AuthorizationPoliciesOnly(nil, base.snapshot()) {
		t.Error("the first snapshot counts as policies-only")
	}
}
