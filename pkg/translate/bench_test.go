package translate_test

import (
	"fmt"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
	"github.com/skiffmesh/skiff/pkg/wire"
)

// httpMesh is n HTTP ServiceEntries on port 80, each with two endpoints and a VirtualService
// that matches a prefix and splits traffic by weight: the shape of istiod's own benchmark mesh.
func httpMesh(n int) *model.Snapshot { return model.Build(httpMeshSet(n)) }

func httpMeshSet(n int) *config.Set {
	set := &config.Set{}
	for i := range n {
		host := fmt.Sprintf("svc-%d.bench.svc.cluster.local", i)
		meta := metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: "bench"}
		set.ServiceEntries = append(set.ServiceEntries, &networkingv1.ServiceEntry{ObjectMeta: meta, Spec: networking.ServiceEntry{
			Hosts:      []string{host},
			Addresses:  []string{fmt.Sprintf("240.240.%d.%d", i/250, i%250+1)},
			Ports:      []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
			Resolution: networking.ServiceEntry_STATIC,
			Endpoints: []*networking.WorkloadEntry{
				{Address: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), Labels: map[string]string{"version": "v1"}},
				{Address: fmt.Sprintf("10.2.%d.%d", i/250, i%250+1), Labels: map[string]string{"version": "v2"}},
			},
		}})
		set.VirtualServices = append(set.VirtualServices, &networkingv1.VirtualService{ObjectMeta: meta, Spec: networking.VirtualService{
			Hosts: []string{host},
			Http: []*networking.HTTPRoute{
				{
					Match: []*networking.HTTPMatchRequest{{Uri: &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: "/api"}}}},
					Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host}}},
				},
				{Route: []*networking.HTTPRouteDestination{
					{Destination: &networking.Destination{Host: host}, Weight: 90},
					{Destination: &networking.Destination{Host: host}, Weight: 10},
				}},
			},
		}})
	}
	return set
}

// BenchmarkGenerate measures one sidecar's generation per type, translating every resource and
// encoding it as pilot does (wire.Marshal): what a push costs pilot for one proxy class. The type split matches
// istiod's benchmark so the numbers compare.
func BenchmarkGenerate(b *testing.B) {
	proxy, err := model.ParseNodeID("sidecar~10.0.0.1~app-1.bench~bench.svc.cluster.local")
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{100, 1000} {
		benchmarkPerType(b, fmt.Sprintf("services=%d", n), httpMesh(n), proxy)
	}
}

// BenchmarkGenerateAuthorization is istiod's authorizationpolicy benchmark shape
// (pilot/pkg/xds/testdata/benchmarks/authorizationpolicy.yaml) on top of httpMesh(100): the
// proxy is a captured sidecar whose WorkloadEntry an HTTP ServiceEntry selects on port 80, and
// 100 namespace-wide DENY policies (POST from the proxy's own namespace) apply to it, so
// virtualInbound carries the RBAC filters. As in istiod's, listeners are what it is about;
// Skiff's listeners only name the RBAC rules, which are extension configurations, so the two
// are measured together (what istiod's listeners hold), and each alone. istiod's policies are
// all alike; distinct-rules gives each its own source namespace, so that no two rules compile
// to the same RBAC policy.
func BenchmarkGenerateAuthorization(b *testing.B) {
	for _, distinct := range []bool{false, true} {
		prefix := "services=100"
		if distinct {
			prefix = "services=100,distinct-rules"
		}
		snap, proxy := authorizationMesh(b, distinct)
		for _, typ := range []struct {
			name                  string
			listeners, extensions bool
		}{{"listeners+extensions", true, true}, {"listeners", true, false}, {"extensions", false, true}} {
			b.Run(prefix+"/"+typ.name, func(b *testing.B) {
				for b.Loop() {
					var out []proto.Message
					if typ.listeners {
						out = append(out, messages(translate.Listeners(snap, proxy))...)
					}
					if typ.extensions {
						out = append(out, messages(translate.ExtensionConfigs(snap, proxy))...)
					}
					for _, m := range out {
						if _, err := wire.Marshal(m); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

func authorizationMesh(b *testing.B, distinct bool) (*model.Snapshot, *model.Proxy) {
	set := httpMeshSet(100)
	meta := metav1.ObjectMeta{Name: "app", Namespace: "bench"}
	set.ServiceEntries = append(set.ServiceEntries, &networkingv1.ServiceEntry{ObjectMeta: meta, Spec: networking.ServiceEntry{
		Hosts:            []string{"app.bench.svc.cluster.local"},
		Ports:            []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
		Resolution:       networking.ServiceEntry_STATIC,
		WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "app"}},
	}})
	set.WorkloadEntries = append(set.WorkloadEntries, &networkingv1.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "app-1", Namespace: "bench"},
		Spec:       networking.WorkloadEntry{Address: "10.0.0.1", Labels: map[string]string{"app": "app"}},
	})
	for i := range 100 {
		from := "bench"
		if distinct {
			from = fmt.Sprintf("client-%d", i)
		}
		set.AuthorizationPolicies = append(set.AuthorizationPolicies, &securityv1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("authn-%d", i), Namespace: "bench"},
			Spec: security.AuthorizationPolicy{
				Action: security.AuthorizationPolicy_DENY,
				Rules: []*security.Rule{{
					From: []*security.Rule_From{{Source: &security.Source{Namespaces: []string{from}}}},
					To:   []*security.Rule_To{{Operation: &security.Operation{Methods: []string{"POST"}}}},
				}},
			},
		})
	}
	snap := model.Build(set)
	proxy, err := model.ParseNodeID("sidecar~10.0.0.1~app-1.bench~bench.svc.cluster.local")
	if err != nil {
		b.Fatal(err)
	}
	proxy = snap.ResolveProxy(proxy)
	if configs := translate.AuthorizationExtensionConfigs(snap, proxy); len(configs) != 6 || len(configs[1].GetTypedConfig().GetValue()) < 1000 {
		b.Fatalf("%d RBAC configurations, want the DENY one holding the policies", len(configs))
	}
	return snap, proxy
}

// benchmarkPerType runs one sub-benchmark per resource type of the proxy (secrets for gateway
// proxies too), each translating and encoding every resource, as a push does.
func benchmarkPerType(b *testing.B, prefix string, snap *model.Snapshot, proxy *model.Proxy) {
	types := []struct {
		name     string
		generate func() []proto.Message
	}{
		{"listeners", func() []proto.Message { return messages(translate.Listeners(snap, proxy)) }},
		{"routes", func() []proto.Message { return messages(translate.Routes(snap, proxy)) }},
		{"clusters", func() []proto.Message { return messages(translate.Clusters(snap, proxy)) }},
		{"endpoints", func() []proto.Message { return messages(translate.Endpoints(snap)) }},
	}
	if proxy.Type == model.SidecarProxy {
		types = append(types, struct {
			name     string
			generate func() []proto.Message
		}{"extensions", func() []proto.Message { return messages(translate.ExtensionConfigs(snap, proxy)) }})
	}
	if proxy.Type == model.Router {
		types = append(types, struct {
			name     string
			generate func() []proto.Message
		}{"secrets", func() []proto.Message { return messages(translate.Secrets(snap, proxy)) }})
	}
	for _, typ := range types {
		b.Run(prefix+"/"+typ.name, func(b *testing.B) {
			var encoded int
			cpu := processCPU(b)
			for b.Loop() {
				encoded = 0
				for _, m := range typ.generate() {
					raw, err := wire.Marshal(m)
					if err != nil {
						b.Fatal(err)
					}
					encoded += len(raw)
				}
			}
			// On a shared machine, wall time counts what other processes take; the CPU time
			// of this process (translation, encoding and its garbage collection) does not.
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
			// What one push of the type sends a proxy.
			b.ReportMetric(float64(encoded), "wire-B")
		})
	}
}

// processCPU is the user and system CPU time this process has used, in nanoseconds.
func processCPU(tb testing.TB) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func messages[M proto.Message](in []M) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}
