package translate_test

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/skiffmesh/skiff/pkg/translate"
)

// A gateway's route configurations share the routes of a VirtualService whose routes do not
// depend on the port, and translate the others per port (the golden case
// gateway-port-routes shows what each port gets).
func TestGatewayRouteListsSharedAcrossPorts(t *testing.T) {
	const file = "testdata/gateway-port-routes.yaml"
	snap := loadCase(t, file)
	proxy := caseProxy(t, file)
	// The first route of each VirtualService's virtual host, by route configuration.
	first := map[string]map[string]*routev3.Route{}
	for _, rc := range translate.Routes(snap, proxy) {
		for _, vh := range rc.VirtualHosts {
			if len(vh.Routes) == 0 {
				continue
			}
			vs := vh.Domains[0]
			if first[vs] == nil {
				first[vs] = map[string]*routev3.Route{}
			}
			first[vs][rc.Name] = vh.Routes[0]
		}
	}
	configs := []string{"http.80", "http.8080", "https.443.https.web.shop"}
	for _, tc := range []struct {
		host   string
		shared bool
	}{
		{"plain.example.com", true},
		{"two-ports.example.com", false},
		{"redirect.example.com", false},
	} {
		routes := first[tc.host]
		if len(routes) != len(configs) {
			t.Fatalf("%s is routed in %d route configurations, want %d: %v", tc.host, len(routes), len(configs), routes)
		}
		for _, name := range configs[1:] {
			if same := routes[name] == routes[configs[0]]; same != tc.shared {
				t.Errorf("%s: the route in %s is the one in %s: %v, want %v", tc.host, name, configs[0], same, tc.shared)
			}
		}
	}
}
