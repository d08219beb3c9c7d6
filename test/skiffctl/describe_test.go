package skiffctl

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDescribeListsWhatApplies: describe pod names, for a connected sidecar, its Sidecar, the
// PeerAuthentications composed for it and the resulting inbound mode (STRICT: the workload's
// policy overrides the namespace's PERMISSIVE), its AuthorizationPolicies in the order Envoy
// checks them (not the one selecting another workload), and per service it calls the
// VirtualService and DestinationRule with the TLS it originates; the Envoy's own listener
// agrees that inbound is mTLS only. describe proxy of a gateway that is not connected names
// the Gateway that selects it and the VirtualService bound to it.
func TestDescribeListsWhatApplies(t *testing.T) {
	s := startShop(t, false, policies)
	s.mustCtl(t, "wait", "--timeout", "2m")

	out := s.mustCtl(t, "describe", "pod", apiPod)
	for _, want := range []string{
		"Proxy:     " + apiNode + " (sidecar)",
		"Workload:  WorkloadEntry/shop/api-1 (service account api)",
		"Sidecar:   Sidecar/shop/default",
		"Inbound mTLS: STRICT",
		"  PeerAuthentication/shop/shop-wide",
		"  PeerAuthentication/shop/api-strict",
		"  DENY AuthorizationPolicy/shop/api-deny-admin",
		"  ALLOW AuthorizationPolicy/shop/api-allow-get",
		"reviews.shop.svc.cluster.local   shop/reviews      shop/reviews       DISABLE",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe pod %s lacks %q:\n%s", apiPod, want, out)
		}
	}
	if strings.Contains(out, "other-workload") || strings.Contains(out, "shop-front") {
		t.Errorf("describe pod %s lists objects that do not apply to it:\n%s", apiPod, out)
	}

	var d struct {
		Inbound struct {
			MTLS string `json:"mtls"`
		} `json:"inbound"`
		AuthorizationPolicies []struct {
			Name   string `json:"name"`
			Action string `json:"action"`
		} `json:"authorization_policies"`
	}
	if err := json.Unmarshal([]byte(s.mustCtl(t, "describe", "proxy", apiNode, "-o", "json")), &d); err != nil {
		t.Fatalf("describe proxy -o json: %v", err)
	}
	if d.Inbound.MTLS != "STRICT" || len(d.AuthorizationPolicies) != 2 || d.AuthorizationPolicies[0].Action != "DENY" {
		t.Errorf("describe proxy -o json: %+v", d)
	}
	// What Envoy holds agrees: STRICT serves one filter chain, mTLS only (no raw_buffer chain).
	listeners := s.mustCtl(t, "proxy-config", "listeners", apiPod, "--envoy", s.envoy.AdminAddress, "-o", "yaml")
	if !strings.Contains(listeners, "DownstreamTlsContext") || !strings.Contains(listeners, "require_client_certificate: true") {
		t.Errorf("Envoy's listeners do not require client certificates, though describe says STRICT:\n%.3000s", listeners)
	}

	gateway := s.mustCtl(t, "describe", "proxy", "router~127.0.77.9~ingress-1.istio-system~istio-system.svc.cluster.local")
	for _, want := range []string{"Gateway:   Gateway/istio-system/shop-gateway", "Gateway VirtualService: VirtualService/shop/shop-front"} {
		if !strings.Contains(gateway, want) {
			t.Errorf("describe proxy (gateway) lacks %q:\n%s", want, gateway)
		}
	}
	if r := s.ctl(t, "describe", "pod", "nobody.shop"); r.code == 0 || !strings.Contains(r.stderr, "no Pod or WorkloadEntry nobody in namespace shop") {
		t.Errorf("describe pod nobody.shop: want an error naming what is missing: %s", r)
	}
}
