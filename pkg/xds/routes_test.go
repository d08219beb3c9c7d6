package xds

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
	"github.com/skiffmesh/skiff/pkg/xds/fanout"
)

// routesMeshService is service i of a small mesh: a ServiceEntry with v1/v2 subsets, and the
// given VirtualService http rules (none: no VirtualService).
func routesMeshService(i int, http string) string {
	host := fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local", i, i%2)
	out := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-%[1]d, namespace: ns-%[2]d}
spec:
  hosts: [%[3]s]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.64.0.%[1]d, labels: {version: v1}}, {address: 10.96.0.%[1]d, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-%[1]d, namespace: ns-%[2]d}
spec:
  host: %[3]s
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`, i, i%2, host)
	if http != "" {
		out += fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc-%[1]d, namespace: ns-%[2]d}
spec:
  hosts: [%[3]s]
  http:
%[4]s`, i, i%2, host, strings.ReplaceAll(http, "HOST", host))
	}
	return out
}

const (
	splitRule  = "  - route: [{destination: {host: HOST, subset: v1}, weight: %d}, {destination: {host: HOST, subset: v2}, weight: %d}]\n"
	directRule = "  - match: [{uri: {prefix: /gone}}]\n    directResponse: {status: 410, body: {string: \"%s\"}}\n  - route: [{destination: {host: HOST}}]\n"
)

// A VirtualService change re-translates only the virtual hosts whose VirtualService changed,
// and the route configuration encoded around the others' kept bytes is exactly the one a full
// translation gives: VirtualServices changed, added and removed, one with a direct response
// whose body makes the configuration set a limit, and the others untouched.
func TestRouteConfigurationReuseMatchesFullTranslation(t *testing.T) {
	dir := t.TempDir()
	write := func(i int, http string) {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("svc-%d.yaml", i)), []byte(routesMeshService(i, http)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	loader := config.NewLoader(dir)
	load := func() *model.Snapshot {
		set, errs := loader.Load()
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		return model.Build(set)
	}
	for i := range 6 {
		write(i, fmt.Sprintf(splitRule, 90, 10))
	}
	write(4, "")
	proxy, err := model.ParseNodeID("sidecar~10.1.0.1~client.ns-0~ns-0.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	before := load()
	_, memo, err := sidecarRoutes(before, before.ResolveProxy(proxy), nil, false)
	if err != nil {
		t.Fatal(err)
	}

	write(1, fmt.Sprintf(splitRule, 80, 20))           // changed
	write(2, "")                                       // removed
	write(4, fmt.Sprintf(directRule, "gone for good")) // added, with a body: the configuration then sets a limit
	after := load()
	if !model.HTTPRoutesOnly(before, after) {
		t.Fatal("the change is not VirtualServices alone")
	}
	resolved := after.ResolveProxy(proxy)
	got, next, err := sidecarRoutes(after, resolved, memo, true)
	if err != nil {
		t.Fatal(err)
	}
	full, _, err := sidecarRoutes(after, resolved, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	want := translate.Routes(after, resolved)
	if len(got) != len(want) || len(full) != len(want) {
		t.Fatalf("%d route configurations reusing, %d without, want %d", len(got), len(full), len(want))
	}
	for _, rc := range want {
		// Resources' hashes are of their bytes.
		w, err := fanout.Encode(resourcev3.RouteType, rc.Name, rc)
		if err != nil {
			t.Fatal(err)
		}
		if got[rc.Name].Hash() != w.Hash() {
			t.Errorf("%s reusing virtual hosts: not the full translation's bytes", rc.Name)
		}
		if full[rc.Name].Hash() != w.Hash() {
			t.Errorf("%s without reuse: not the full translation's bytes", rc.Name)
		}
		if rc.Name == "8080" && rc.GetMaxDirectResponseBodySizeBytes() == nil {
			t.Error("the direct response's body set no limit")
		}
	}
	// Untouched virtual hosts were kept; the changed, removed and added ones were translated.
	kept := map[string]bool{}
	for i, h := range memo.configs["8080"] {
		if n := next.configs["8080"][i]; n.vs == h.vs && n.vs != nil {
			kept[n.name] = true
		}
	}
	for _, name := range []string{"svc-0.ns-0.svc.cluster.local:8080", "svc-3.ns-1.svc.cluster.local:8080", "svc-5.ns-1.svc.cluster.local:8080"} {
		if !kept[name] {
			t.Errorf("%s was translated again; its VirtualService did not change", name)
		}
	}
	if len(kept) != 3 {
		t.Errorf("kept %v, want the three untouched", kept)
	}
}
