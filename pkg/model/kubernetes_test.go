package model

import (
	"strings"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
)

func TestKubernetesPortProtocol(t *testing.T) {
	ptr := func(s string) *string { return &s }
	for _, c := range []struct {
		port corev1.ServicePort
		want Protocol
	}{
		{corev1.ServicePort{Name: "http"}, HTTP},
		{corev1.ServicePort{Name: "http-web"}, HTTP},
		{corev1.ServicePort{Name: "HTTP2-api"}, HTTP2},
		{corev1.ServicePort{Name: "grpc-web"}, HTTP},
		{corev1.ServicePort{Name: "grpc-x"}, GRPC},
		{corev1.ServicePort{Name: "tcp-db"}, TCP},
		{corev1.ServicePort{Name: "https"}, HTTPS},
		{corev1.ServicePort{Name: "grpc-web-x"}, HTTP},
		{corev1.ServicePort{Name: "web"}, Unsupported}, // sniffed
		{corev1.ServicePort{Name: "8080", Port: 8080}, Unsupported},
		{corev1.ServicePort{Name: ""}, Unsupported},
		{corev1.ServicePort{Name: "", Port: 3306}, TCP}, // a well-known server-first port
		{corev1.ServicePort{Name: "db", Port: 27017}, TCP},
		{corev1.ServicePort{Name: "http-db", Port: 3306}, HTTP}, // the name still counts
		{corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP}, UDP},
		{corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolUDP}, UDP}, // L4 first, as istiod
		{corev1.ServicePort{Name: "tcp-x", AppProtocol: ptr("http")}, HTTP},   // appProtocol wins
		{corev1.ServicePort{Name: "x", AppProtocol: ptr("kubernetes.io/h2c")}, HTTP2},
		{corev1.ServicePort{Name: "kubernetes.io/h2c"}, Unsupported}, // not a port-name protocol
		// appProtocol, when set, is all istiod reads: an unknown one is sniffed whatever the name.
		{corev1.ServicePort{Name: "http-x", AppProtocol: ptr("unknown")}, Unsupported},
	} {
		if got := KubernetesPortProtocol(c.port); got != c.want {
			t.Errorf("%+v: %s, want %s", c.port, got, c.want)
		}
	}
}

func TestPodIsTheProxysWorkload(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app-1", Namespace: "shop", Labels: map[string]string{"app": "cart"}},
		Status: corev1.PodStatus{PodIP: "10.244.0.3"}}
	we := &networkingv1.WorkloadEntry{ObjectMeta: metav1.ObjectMeta{Name: "app-1", Namespace: "shop"}}
	we.Spec.Address, we.Spec.ServiceAccount = "10.0.0.9", "vm"
	snap := Build(config.NewSet(pod, we))
	w := snap.Workload("shop", "app-1")
	if w == nil || w.Kind != "Pod" || w.Address != "10.244.0.3" || w.ServiceAccount != "default" || w.Source() != "Pod/shop/app-1" {
		t.Fatalf("workload %+v: want the Pod, with Kubernetes' default service account", w)
	}
	proxy, _ := ParseNodeID("sidecar~10.244.0.3~app-1.shop~shop.svc.cluster.local")
	proxy.Labels = map[string]string{"app": "admin"} // what the node metadata claimed
	if got := snap.ResolveProxy(proxy).Labels["app"]; got != "cart" {
		t.Errorf("resolved labels app=%q, want the Pod's", got)
	}
	if proxy.Labels["app"] != "admin" {
		t.Error("ResolveProxy modified its argument")
	}
	other, _ := ParseNodeID("sidecar~10.0.0.1~vm-1.shop~shop.svc.cluster.local")
	if snap.ResolveProxy(other) != other {
		t.Error("a proxy without a Pod resolves to itself")
	}
}

func TestReferenceWarnings(t *testing.T) {
	objs, err := config.Parse("refs.yaml", []byte(`
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  http:
  - route:
    - destination: {host: cart, subset: v1}
    - destination: {host: cart, subset: v3}
    - destination: {host: carts}
    - destination: {host: httpbin.org}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range Build(config.NewSet(objs...)).Warnings() {
		got = append(got, w.String())
	}
	want := []string{
		"IST0101 VirtualService shop/cart: spec.http[0].route[1].destination: referenced host+subset in DestinationRule not found: cart.shop.svc.cluster.local+v3",
		"IST0101 VirtualService shop/cart: spec.http[0].route[2].destination: referenced host not found: carts.shop.svc.cluster.local",
		"IST0101 VirtualService shop/cart: spec.http[0].route[3].destination: referenced host not found: httpbin.org",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
