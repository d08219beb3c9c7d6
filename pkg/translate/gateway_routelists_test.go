package translate_test

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"

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

// A gateway route configuration that answers with a direct response body over Envoy's 4 KiB
// default raises max_direct_response_body_size_bytes to it, as a sidecar's does: Envoy rejects
// the whole configuration otherwise.
func TestGatewayDirectResponseBodyLimit(t *testing.T) {
	const file = "testdata/gateway-port-routes.yaml"
	snap := loadCase(t, file)
	proxy := caseProxy(t, file)
	body := strings.Repeat("moved. ", 1<<20/7+1) // over istiod's 1 MiB as well
	for _, vs := range snap.Config.VirtualServices {
		if vs.Name == "gone" {
			vs.Spec.Http[0].DirectResponse.Body.Specifier = &networking.HTTPBody_String_{String_: body}
		}
	}
	for _, rc := range translate.Routes(snap, proxy) {
		if got := rc.GetMaxDirectResponseBodySizeBytes().GetValue(); int(got) < len(body) {
			t.Errorf("%s: max_direct_response_body_size_bytes %d, want at least the body's %d bytes", rc.Name, got, len(body))
		}
	}
}
