package translate_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
)

// vsHeavyMesh is httpMesh's services with heavier VirtualServices: per service, a rule per API
// version matching a uri prefix and a header and rewriting the prefix, a canary rule on a header
// with a regex, and a weighted split between DestinationRule subsets with timeout, retries and
// header operations. It measures the cost of match and action translation rather than of the
// service count.
func vsHeavyMesh(n int) *model.Snapshot {
	base := httpMesh(n)
	set := &config.Set{ServiceEntries: base.Config.ServiceEntries}
	prefix := func(p string) *networking.StringMatch {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: p}}
	}
	exact := func(v string) *networking.StringMatch {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: v}}
	}
	for i, se := range base.Config.ServiceEntries {
		host := se.Spec.Hosts[0]
		dest := func(subset string, weight int32) *networking.HTTPRouteDestination {
			return &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: host, Subset: subset}, Weight: weight}
		}
		var rules []*networking.HTTPRoute
		for _, version := range []string{"v1", "v2", "v3"} {
			rules = append(rules, &networking.HTTPRoute{
				Name: "api-" + version,
				Match: []*networking.HTTPMatchRequest{
					{Uri: prefix("/api/" + version + "/"), Headers: map[string]*networking.StringMatch{"x-tenant": prefix("t-")}},
					{Uri: prefix("/" + version + "/"), Headers: map[string]*networking.StringMatch{"x-api-version": exact(version)}},
				},
				Rewrite: &networking.HTTPRewrite{Uri: "/"},
				Route:   []*networking.HTTPRouteDestination{dest("", 0)},
			})
		}
		rules = append(rules,
			&networking.HTTPRoute{
				Name: "canary",
				Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{
					"cookie": {MatchType: &networking.StringMatch_Regex{Regex: "^(.*?;)?(user=jason)(;.*)?$"}},
				}}},
				Route: []*networking.HTTPRouteDestination{dest("v2", 0)},
			},
			&networking.HTTPRoute{
				Name:    "default",
				Timeout: durationpb.New(5 * time.Second),
				Retries: &networking.HTTPRetry{Attempts: 3, RetryOn: "5xx,503", PerTryTimeout: durationpb.New(time.Second)},
				Headers: &networking.Headers{Request: &networking.Headers_HeaderOperations{Set: map[string]string{"x-mesh": "skiff"}}},
				Route:   []*networking.HTTPRouteDestination{dest("v1", 90), dest("v2", 10)},
			},
		)
		meta := se.ObjectMeta
		meta.Name = fmt.Sprintf("svc-%d", i)
		set.DestinationRules = append(set.DestinationRules, &networkingv1.DestinationRule{ObjectMeta: meta, Spec: networking.DestinationRule{
			Host: host,
			Subsets: []*networking.Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2"}},
			},
		}})
		set.VirtualServices = append(set.VirtualServices, &networkingv1.VirtualService{ObjectMeta: meta, Spec: networking.VirtualService{
			Hosts: []string{host},
			Http:  rules,
		}})
	}
	return model.Build(set)
}

// BenchmarkGenerateVirtualService is BenchmarkGenerate on the VirtualService-heavy mesh: what a
// push costs pilot for one sidecar class when every service has several matches and rewrites.
func BenchmarkGenerateVirtualService(b *testing.B) {
	proxy, err := model.ParseNodeID("sidecar~10.0.0.1~app-1.bench~bench.svc.cluster.local")
	if err != nil {
		b.Fatal(err)
	}
	snap := vsHeavyMesh(100)
	benchmarkPerType(b, "services=100", snap, proxy)
}
