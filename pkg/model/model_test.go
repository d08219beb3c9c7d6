package model

import (
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
)

func TestParseNodeID(t *testing.T) {
	good := []struct {
		id                   string
		typ                  NodeType
		ip, name, ns, domain string
	}{
		{"sidecar~10.0.0.1~reviews-v1-abc.default~default.svc.cluster.local", SidecarProxy, "10.0.0.1", "reviews-v1-abc", "default", "default.svc.cluster.local"},
		{"router~127.0.0.2~gw.with.dots.istio-system~istio-system.svc.cluster.local", Router, "127.0.0.2", "gw.with.dots", "istio-system", "istio-system.svc.cluster.local"},
		{"sidecar~::1~app.ns~ns.svc.cluster.local", SidecarProxy, "::1", "app", "ns", "ns.svc.cluster.local"},
	}
	for _, c := range good {
		p, err := ParseNodeID(c.id)
		if err != nil {
			t.Errorf("%s: %v", c.id, err)
			continue
		}
		if p.Type != c.typ || p.IP.String() != c.ip || p.Name != c.name || p.Namespace != c.ns || p.DNSDomain != c.domain {
			t.Errorf("%s: parsed %+v", c.id, p)
		}
		if p.InterceptionMode != InterceptionRedirect {
			t.Errorf("%s: interception defaults to %s, want REDIRECT as in Istio", c.id, p.InterceptionMode)
		}
	}
	bad := map[string]string{
		"":                                  "node ID is empty",
		"sidecar~10.0.0.1~a.b":              "got 3",
		"gateway~10.0.0.1~a.b~b.svc":        `type "gateway"`,
		"sidecar~ten~a.b~b.svc":             `IP "ten"`,
		"sidecar~10.0.0.1~nodot~b.svc":      "want POD.NAMESPACE",
		"sidecar~10.0.0.1~trailing.~b.svc":  "want POD.NAMESPACE",
		"sidecar~10.0.0.1~.leading~b.svc":   "want POD.NAMESPACE",
		"sidecar~10.0.0.1~a.b~":             "DNS domain is empty",
		"sidecar~10.0.0.1~a.b~c~extra.part": "got 5",
	}
	for id, want := range bad {
		if _, err := ParseNodeID(id); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", id, err, want)
		}
	}
}

func TestClassSeparatesWhatTranslationReads(t *testing.T) {
	a, _ := ParseNodeID("sidecar~10.0.0.1~a-1.default~default.svc.cluster.local")
	// A sidecar's pod name is read (it picks the Pod or WorkloadEntry whose labels and ports
	// translation reads), and so is its address (a captured sidecar that names no workload
	// serves the endpoints at its IP).
	b, _ := ParseNodeID("sidecar~10.0.0.2~a-1.default~default.svc.cluster.local")
	if a.Class() == b.Class() {
		t.Errorf("the sidecar's address must be part of the class")
	}
	b, _ = ParseNodeID("sidecar~10.0.0.1~a-1.default~default.svc.cluster.local")
	if a.Class() != b.Class() {
		t.Errorf("two proxies with one node ID should share a class: %s vs %s", a.Class(), b.Class())
	}
	if other, _ := ParseNodeID("sidecar~10.0.0.1~b-7.default~default.svc.cluster.local"); a.Class() == other.Class() {
		t.Errorf("the pod name must be part of the class")
	}
	b.SetInterceptionMode("none")
	if a.Class() == b.Class() {
		t.Errorf("interception mode must be part of the class")
	}
	b.SetInterceptionMode("redirect")
	b.Labels = map[string]string{"istio": "ingressgateway"}
	if a.Class() == b.Class() {
		t.Errorf("labels must be part of the class")
	}
	c, _ := ParseNodeID("router~10.0.0.1~a-1.default~default.svc.cluster.local")
	if a.Class() == c.Class() {
		t.Errorf("node type must be part of the class")
	}
}

func TestHostMatchingAndResolution(t *testing.T) {
	cases := []struct {
		pattern, host string
		want          bool
	}{
		{"reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local", true},
		{"*", "anything.example.com", true},
		{"*.example.com", "api.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "*.api.example.com", true},
		{"api.example.com", "*.example.com", false},
	}
	for _, c := range cases {
		if got := HostMatches(c.pattern, c.host); got != c.want {
			t.Errorf("HostMatches(%q, %q) = %v", c.pattern, c.host, got)
		}
	}
	if got := ResolveHost("reviews", "shop"); got != "reviews.shop.svc.cluster.local" {
		t.Errorf("short name: %s", got)
	}
	for _, h := range []string{"*", "reviews.shop", "api.example.com"} {
		if got := ResolveHost(h, "shop"); got != h {
			t.Errorf("ResolveHost(%q) = %q, want unchanged", h, got)
		}
	}
}

func TestVisibility(t *testing.T) {
	if !ParseVisibility("a", nil).VisibleTo("b") {
		t.Error("no exportTo means everyone")
	}
	v := ParseVisibility("a", []string{".", "c"})
	if !v.VisibleTo("a") || !v.VisibleTo("c") || v.VisibleTo("b") {
		t.Errorf("exportTo [., c] from a: %v", v)
	}
	if ParseVisibility("a", []string{"~"}).VisibleTo("a") {
		t.Error("exportTo ~ means nobody")
	}
}

// FuzzParseNodeID: node IDs come straight off the network; no input may panic, and any ID that
// parses must round-trip its parts.
func FuzzParseNodeID(f *testing.F) {
	f.Add("sidecar~10.0.0.1~app.default~default.svc.cluster.local")
	f.Add("router~::1~gw.istio-system~istio-system.svc.cluster.local")
	f.Add("~~~")
	f.Add("sidecar~1.2.3.4~.~")
	f.Fuzz(func(t *testing.T, id string) {
		p, err := ParseNodeID(id)
		if err != nil {
			return
		}
		if p.Name == "" || p.Namespace == "" || p.DNSDomain == "" || !p.IP.IsValid() {
			t.Errorf("%q parsed into an incomplete proxy %+v", id, p)
		}
		if got := p.Name + "." + p.Namespace; got != p.ID {
			t.Errorf("%q: name and namespace %q do not rebuild ID %q", id, got, p.ID)
		}
	})
}

func TestDestinationRulesOfOneHostMerge(t *testing.T) {
	dr := func(name, ns, host string, subsets ...string) *networkingv1.DestinationRule {
		d := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		d.Spec.Host = host
		for _, s := range subsets {
			d.Spec.Subsets = append(d.Spec.Subsets, &networking.Subset{Name: s, Labels: map[string]string{"version": s}})
		}
		return d
	}
	policy := dr("a-policy", "default", "reviews")
	policy.Spec.TrafficPolicy = &networking.TrafficPolicy{OutlierDetection: &networking.OutlierDetection{}}
	snap := Build(&config.Set{DestinationRules: []*networkingv1.DestinationRule{
		policy,
		dr("b-subsets", "default", "reviews.default.svc.cluster.local", "v1", "v2"),
		dr("c-more", "default", "reviews", "v2", "v3"),
		dr("other-ns", "shop", "reviews.default.svc.cluster.local", "x"),
	}})
	got := snap.DestinationRuleFor("reviews.default.svc.cluster.local", "default")
	if got.Name != "a-policy" || got.Spec.TrafficPolicy.GetOutlierDetection() == nil {
		t.Fatalf("merged rule %s keeps the first rule's name and policy: %+v", got.Name, got.Spec.TrafficPolicy)
	}
	var names []string
	for _, s := range got.Spec.Subsets {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "v1,v2,v3" {
		t.Errorf("merged subsets %v, want v1,v2,v3", names)
	}
	if len(policy.Spec.Subsets) != 0 {
		t.Errorf("merging modified the input rule")
	}
}

func TestConflictingMeshVirtualServicesAreReported(t *testing.T) {
	vs := func(name, ns string, exportTo ...string) *networkingv1.VirtualService {
		v := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		v.Spec.Hosts = []string{"temple-api-service.default.svc.cluster.local"}
		v.Spec.ExportTo = exportTo
		return v
	}
	// Two VirtualServices each exported only to its own namespace never meet.
	private := func(name, ns string) *networkingv1.VirtualService {
		v := vs(name, ns, ".")
		v.Spec.Hosts = []string{"ratings.default.svc.cluster.local"}
		return v
	}
	gateway := vs("gw-only", "default")
	gateway.Spec.Gateways = []string{"temple-gateway"}
	snap := Build(&config.Set{VirtualServices: []*networkingv1.VirtualService{
		vs("temple-api-canary", "default"), vs("temple-api-retry", "default"),
		gateway, private("private-a", "a"), private("private-b", "b"),
	}, Gateways: []*networkingv1.Gateway{{ObjectMeta: metav1.ObjectMeta{Name: "temple-gateway", Namespace: "default"}}}})
	got := snap.Warnings()
	if len(got) != 1 || got[0].Name != "temple-api-retry" || got[0].Code != "IST0109" ||
		!strings.Contains(got[0].Message, "default/temple-api-canary") {
		t.Errorf("warnings %v, want one IST0109 for temple-api-retry naming temple-api-canary", got)
	}
}
