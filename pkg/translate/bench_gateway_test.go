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

// gatewaysMesh is istiod's gateways benchmark (pilot/pkg/xds/testdata/benchmarks/gateways.yaml)
// with n = Services: n Gateways in namespace gateway, each with one plaintext HTTP server on
// port 80 for its own three hosts, and a VirtualService for those three hosts bound to it with a
// single prefix route to a ServiceEntry of its own. istiod's Gateways also have an ISTIO_MUTUAL
// server on 443, which Skiff does not serve (no mesh identity on gateways), so it is left out:
// every server merges into http.80, whose virtual hosts are what this measures.
func gatewaysMesh(n int) *model.Snapshot {
	set := &config.Set{}
	for i := range n {
		hosts := []string{
			fmt.Sprintf("random-a-%d.host.example", i),
			fmt.Sprintf("random-b-%d.host.example", i),
			fmt.Sprintf("random-c-%d.host.example", i),
		}
		dest := fmt.Sprintf("random-%d.host.example", i)
		set.Gateways = append(set.Gateways, &networkingv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("gateway-%d", i), Namespace: "gateway"},
			Spec: networking.Gateway{
				Selector: map[string]string{"istio": "ingressgateway"},
				Servers: []*networking.Server{{
					Port:  &networking.Port{Number: 80, Name: "http", Protocol: "HTTP"},
					Hosts: hosts,
				}},
			},
		})
		set.VirtualServices = append(set.VirtualServices, &networkingv1.VirtualService{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("vs-%d", i), Namespace: "gateway"},
			Spec: networking.VirtualService{
				Hosts:    hosts,
				Gateways: []string{fmt.Sprintf("gateway/gateway-%d", i)},
				Http: []*networking.HTTPRoute{{
					Match: []*networking.HTTPMatchRequest{{Uri: &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: fmt.Sprintf("/route-%d", i)}}}},
					Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: dest}}},
				}},
			},
		})
		set.ServiceEntries = append(set.ServiceEntries, &networkingv1.ServiceEntry{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("service-%d", i), Namespace: "gateway"},
			Spec: networking.ServiceEntry{
				Hosts:      []string{dest},
				Ports:      []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
				Resolution: networking.ServiceEntry_STATIC,
				Endpoints:  []*networking.WorkloadEntry{{Address: "1.2.3.4"}},
			},
		})
	}
	return model.Build(set)
}

// BenchmarkGatewayServers measures a gateway proxy serving istiod's gateways benchmark
// (gatewaysMesh): 1,000 Gateways of one HTTP server each, every server its own three hosts and
// a VirtualService for them, so http.80 has 1,000 virtual hosts of three hosts each. The
// figures compare with istiod's BenchmarkRouteGeneration and friends on the same template.
func BenchmarkGatewayServers(b *testing.B) {
	proxy, err := model.ParseNodeID("router~10.0.0.9~ingressgateway-1.istio-system~istio-system.svc.cluster.local")
	if err != nil {
		b.Fatal(err)
	}
	proxy.Labels = map[string]string{"istio": "ingressgateway"}
	for _, n := range []int{1000} {
		snap := gatewaysMesh(n)
		rcs := translate.Routes(snap, proxy)
		if len(rcs) != 1 || len(rcs[0].VirtualHosts) != n {
			b.Fatalf("want one route configuration with a virtual host per VirtualService (%d)", n)
		}
		for _, vh := range rcs[0].VirtualHosts {
			if len(vh.Domains) != 6 { // HOST and HOST:80 for each of the three hosts
				b.Fatalf("virtual host %s: want 6 domains, got %v", vh.Name, vh.Domains)
			}
		}
		benchmarkPerType(b, fmt.Sprintf("gateways=%d", n), snap, proxy)
	}
}
