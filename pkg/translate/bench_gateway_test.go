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
// with n = Services: n Gateways in namespace gateway, each with a plaintext HTTP server on port
// 80 and an ISTIO_MUTUAL HTTPS server on 443 for its own three hosts, and a VirtualService for
// those three hosts bound to it with a single prefix route to a ServiceEntry of its own. The
// HTTP servers merge into http.80; each ISTIO_MUTUAL server is a filter chain of 0.0.0.0_443
// (matched by its three SNI names) with a route configuration of its own,
// https.443.https.gateway-N.gateway, as in istiod. The gateway proxy's WorkloadEntry
// (gatewayBenchNode) gives it the identity ISTIO_MUTUAL needs.
func gatewaysMesh(n int) *model.Snapshot {
	set := &config.Set{}
	set.WorkloadEntries = append(set.WorkloadEntries, &networkingv1.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "ingressgateway-1", Namespace: "istio-system"},
		Spec: networking.WorkloadEntry{Address: "10.0.0.9", ServiceAccount: "istio-ingressgateway",
			Labels: map[string]string{"istio": "ingressgateway"}},
	})
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
				Servers: []*networking.Server{
					{
						Port:  &networking.Port{Number: 80, Name: "http", Protocol: "HTTP"},
						Hosts: hosts,
					},
					{
						Port:  &networking.Port{Number: 443, Name: "https", Protocol: "HTTPS"},
						Hosts: hosts,
						Tls:   &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_ISTIO_MUTUAL},
					},
				},
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

// gatewayBenchNode is the gateway proxy of gatewaysMesh, named by its WorkloadEntry.
const gatewayBenchNode = "router~10.0.0.9~ingressgateway-1.istio-system~istio-system.svc.cluster.local"

// BenchmarkGatewayServers measures a gateway proxy serving istiod's gateways benchmark
// (gatewaysMesh): 1,000 Gateways of an HTTP and an ISTIO_MUTUAL server each, every server
// its own three hosts and a VirtualService for them, so http.80 has 1,000 virtual hosts of
// three hosts each, 0.0.0.0_443 has 1,000 mTLS filter chains and there are 1,000 https route
// configurations of one virtual host. The figures compare with istiod's
// BenchmarkRouteGeneration and friends on the same template.
func BenchmarkGatewayServers(b *testing.B) {
	proxy, err := model.ParseNodeID(gatewayBenchNode)
	if err != nil {
		b.Fatal(err)
	}
	proxy.Labels = map[string]string{"istio": "ingressgateway"}
	for _, n := range []int{1000} {
		snap := gatewaysMesh(n)
		checkGatewaysMesh(b, snap, proxy, n)
		benchmarkPerType(b, fmt.Sprintf("gateways=%d", n), snap, proxy)
	}
}

// checkGatewaysMesh makes sure the benchmark measures what it says: every server of the n
// Gateways is served.
func checkGatewaysMesh(tb testing.TB, snap *model.Snapshot, proxy *model.Proxy, n int) {
	tb.Helper()
	rcs := translate.Routes(snap, proxy)
	if len(rcs) != n+1 {
		tb.Fatalf("%d route configurations, want http.80 and one per ISTIO_MUTUAL server (%d)", len(rcs), n+1)
	}
	for _, rc := range rcs {
		want, domains := 1, 6 // an https route configuration: HOST and HOST:443 for three hosts
		if rc.Name == "http.80" {
			want = n // a virtual host per VirtualService, HOST and HOST:80 for three hosts
		}
		if len(rc.VirtualHosts) != want {
			tb.Fatalf("%s: %d virtual hosts, want %d", rc.Name, len(rc.VirtualHosts), want)
		}
		for _, vh := range rc.VirtualHosts {
			if len(vh.Domains) != domains {
				tb.Fatalf("%s: virtual host %s: want %d domains, got %v", rc.Name, vh.Name, domains, vh.Domains)
			}
		}
	}
	chains := map[string]int{}
	for _, l := range translate.Listeners(snap, proxy) {
		chains[l.Name] = len(l.FilterChains)
	}
	if len(chains) != 2 || chains["0.0.0.0_80"] != 1 || chains["0.0.0.0_443"] != n {
		tb.Fatalf("listeners and their filter chains %v, want 0.0.0.0_80 with one and 0.0.0.0_443 with one per ISTIO_MUTUAL server (%d)", chains, n)
	}
}

// The benchmark's mesh is served in full; run as a test so that a change that leaves servers
// out fails without anyone running the benchmarks.
func TestGatewaysMeshServed(t *testing.T) {
	proxy, err := model.ParseNodeID(gatewayBenchNode)
	if err != nil {
		t.Fatal(err)
	}
	proxy.Labels = map[string]string{"istio": "ingressgateway"}
	snap := gatewaysMesh(20)
	checkGatewaysMesh(t, snap, proxy, 20)
	if w := snap.Warnings(); len(w) > 0 {
		t.Errorf("the benchmark mesh has analysis warnings: %v", w)
	}
}
