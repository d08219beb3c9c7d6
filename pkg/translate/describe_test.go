package translate

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
)

const describeMesh = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1, namespace: shop}
spec: {address: 10.0.0.2, serviceAccount: reviews, labels: {app: reviews, security.istio.io/tlsMode: istio}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: api-1, namespace: shop}
spec: {address: 10.0.0.1, serviceAccount: api, labels: {app: api}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-strict, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls: {9080: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: front, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: shop}
spec:
  hosts: [reviews.example.com]
  gateways: [istio-system/front]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  subsets: [{name: v1, labels: {app: reviews}}]
`

// TestDescribe: what applies to a captured sidecar, as translation selects it: the
// PeerAuthentications composed (mesh-wide, then the workload's STRICT with a port-level
// DISABLE), its AuthorizationPolicy, the workload ports it serves with their modes; and for a
// client, auto-mTLS to a service whose endpoint declares a sidecar.
func TestDescribe(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(describeMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	set, errs := config.NewLoader(dir).Load()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	snap := model.Build(set)

	reviews, err := model.ParseNodeID("sidecar~10.0.0.2~reviews-1.shop~shop.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	d := Describe(snap, reviews)
	if d.Workload != "WorkloadEntry/shop/reviews-1" || d.ServiceAccount != "reviews" || d.Inbound.MTLS != "STRICT" {
		t.Errorf("reviews: workload %q (%q), inbound %q; want WorkloadEntry/shop/reviews-1 (reviews), STRICT", d.Workload, d.ServiceAccount, d.Inbound.MTLS)
	}
	if want := []ObjectRef{{"PeerAuthentication", "istio-system", "default"}, {"PeerAuthentication", "shop", "reviews-strict"}}; !slices.Equal(d.PeerAuthentications, want) {
		t.Errorf("reviews: PeerAuthentications %v, want %v", d.PeerAuthentications, want)
	}
	if len(d.Inbound.Ports) != 1 || d.Inbound.Ports[0].Port != 9080 || d.Inbound.Ports[0].MTLS != "DISABLE" {
		t.Errorf("reviews: inbound ports %+v, want 9080 DISABLE (portLevelMtls)", d.Inbound.Ports)
	}
	if want := []ObjectRef{{"VirtualService", "shop", "front"}, {"Gateway", "istio-system", "front"}}; !slices.Equal(d.ExposedBy, want) {
		t.Errorf("reviews: exposed by %v, want %v", d.ExposedBy, want)
	}
	if len(d.AuthorizationPolicies) != 1 || d.AuthorizationPolicies[0].Name != "allow" || d.AuthorizationPolicies[0].Action != "ALLOW" {
		t.Errorf("reviews: AuthorizationPolicies %+v", d.AuthorizationPolicies)
	}

	api, err := model.ParseNodeID("sidecar~10.0.0.1~api-1.shop~shop.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	d = Describe(snap, api)
	if len(d.Outbound) != 1 || d.Outbound[0].Host != "reviews.shop.svc.cluster.local" || d.Outbound[0].MTLS != "ISTIO_MUTUAL (auto)" ||
		d.Outbound[0].DestinationRule == nil || d.Outbound[0].VirtualService != nil {
		t.Errorf("api: outbound %+v, want reviews with DestinationRule shop/reviews, auto mTLS", d.Outbound)
	}
	if d.Inbound.MTLS != "PERMISSIVE" || len(d.AuthorizationPolicies) != 0 {
		t.Errorf("api: inbound %s, policies %v; want PERMISSIVE (mesh-wide) and none", d.Inbound.MTLS, d.AuthorizationPolicies)
	}
}
