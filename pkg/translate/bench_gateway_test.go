package translate_test

import (
	"fmt"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
)

// gatewayMesh is httpMesh's n services, each with a VirtualService bound to one Gateway that
// serves every host (`*`) on port 80: one virtual host per service in http.80, the shape of an
// ingress gateway in front of a large mesh.
func gatewayMesh(n int) *model.Snapshot {
	set := &config.Set{}
	set.Gateways = append(set.Gateways, &networkingv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "ingress", Namespace: "bench"},
		Spec: networking.Gateway{
			Selector: map[string]string{"istio": "ingressgateway"},
			Servers: []*networking.Server{{
				Port:  &networking.Port{Number: 80, Name: "http", Protocol: "HTTP"},
				Hosts: []string{"*"},
			}},
		},
	})
	for i := range n {
		host := fmt.Sprintf("svc-%d.bench.svc.cluster.local", i)
		meta := metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: "bench"}
		set.ServiceEntries = append(set.ServiceEntries, &networkingv1.ServiceEntry{ObjectMeta: meta, Spec: networking.ServiceEntry{
			Hosts:      []string{host},
			Ports:      []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
			Resolution: networking.ServiceEntry_STATIC,
			Endpoints:  []*networking.WorkloadEntry{{Address: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)}},
		}})
		set.VirtualServices = append(set.VirtualServices, &networkingv1.VirtualService{ObjectMeta: meta, Spec: networking.VirtualService{
			Hosts:    []string{host},
			Gateways: []string{"ingress"},
			Http: []*networking.HTTPRoute{
				{
					Match: []*networking.HTTPMatchRequest{{Uri: &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: "/api"}}}},
					Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host}}},
				},
				{Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host}}}},
			},
		}})
	}
	return model.Build(set)
}

// BenchmarkGatewayGenerate measures one gateway proxy's generation per type, translating and
// marshalling every resource to Any, as BenchmarkGenerate does for a sidecar.
func BenchmarkGatewayGenerate(b *testing.B) {
	proxy, err := model.ParseNodeID("router~10.0.0.9~ingressgateway-1.istio-system~istio-system.svc.cluster.local")
	if err != nil {
		b.Fatal(err)
	}
	proxy.Labels = map[string]string{"istio": "ingressgateway"}
	for _, n := range []int{1000} {
		snap := gatewayMesh(n)
		if rcs := translate.Routes(snap, proxy); len(rcs) != 1 || len(rcs[0].VirtualHosts) != n {
			b.Fatalf("want one route configuration with %d virtual hosts", n)
		}
		benchmarkPerType(b, fmt.Sprintf("hosts=%d", n), snap, proxy)
	}
}
