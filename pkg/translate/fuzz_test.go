package translate_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/meshcorpus"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/translate"
	"github.com/skiffmesh/skiff/pkg/wire"
)

// FuzzTranslate runs arbitrary configuration through pilot's whole path: the folder loader's
// decoding and validation (each YAML document as a file of its own, see meshcorpus.Accepted),
// model.Build with its analysis, and the translation of every resource type for a handful of
// proxies the input suggests (captured and uncaptured sidecars, a gateway router, the
// workloads and Sidecars it declares). Whatever validates must translate without a panic into
// resources that pass Validate(), that pilot can encode, and that Envoy would not reject for
// reasons visible without it (envoyRejections); proxies with equal configuration keys must get
// identical bytes, since pilot shares one translation between them.
//
// Seeds are the examples, the docs' meshes and the golden inputs (meshcorpus.Seeds); the
// cases it found live in testdata/fuzz/FuzzTranslate. test/e2e's TestFuzzCorpusEnvoyACKs sends
// the same inputs to a real Envoy. `make test` runs it briefly, `make fuzz` for longer.
func FuzzTranslate(f *testing.F) {
	root, err := filepath.Abs("../..")
	if err != nil {
		f.Fatal(err)
	}
	seeds, err := meshcorpus.Seeds(root)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		f.Add(s.Data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPipeline(t, data, meshcorpus.Objects(meshcorpus.Accepted(data)))
	})
}

// TestCorpusTranslates runs FuzzTranslate's checks on the seed corpus and the saved cases
// with names of their own in the output (go test runs the fuzz target's seeds too, but the
// failure then names only an index).
func TestCorpusTranslates(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	seeds, err := meshcorpus.Seeds(root)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := meshcorpus.Regressions(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range append(seeds, saved...) {
		t.Run(in.Name, func(t *testing.T) {
			objs := meshcorpus.Objects(meshcorpus.Accepted(in.Data))
			if len(objs) == 0 {
				t.Fatalf("no document of %s is accepted", in.Name)
			}
			checkPipeline(t, in.Data, objs)
		})
	}
}

// checkPipeline builds a snapshot of objs, the accepted objects of data, and checks the
// translation of every fuzz proxy.
func checkPipeline(t *testing.T, data []byte, objs []config.Object) {
	t.Helper()
	set := config.NewSet(objs...)
	snap := model.Build(set)
	_ = snap.Warnings()
	empty := model.Build(nil)
	_, _ = model.EndpointsOnly(empty, snap), model.EndpointsOnly(snap, empty)
	_, _ = model.HTTPRoutesOnly(empty, snap), model.HTTPRoutesOnly(snap, empty)

	endpoints := translate.Endpoints(snap)
	checkNamed(t, "endpoints", endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName)

	// Proxies with equal keys must get equal bytes: pilot translates one of them for all.
	byKey := map[string]encodedResources{}
	for _, proxy := range fuzzProxies(data, set) {
		keys := translate.ConfigKeys(snap, proxy)
		got := translateProxy(t, snap, proxy)
		for _, share := range []struct{ key, kinds string }{
			{"full " + keys.Full, "listeners extensions"},
			{"traffic " + keys.Traffic, "clusters routes secrets"},
		} {
			if prev, ok := byKey[share.key]; ok {
				if diff := prev.differs(got, share.kinds); diff != "" {
					t.Errorf("proxies %s and %s have the key %q but their %s", prev.proxy, proxy.NodeID, share.key, diff)
				}
			} else {
				byKey[share.key] = got
			}
		}
	}
}

// encodedResources is a proxy's translation as pilot encodes it, by type and name.
type encodedResources struct {
	proxy  string
	byKind map[string]map[string][]byte
}

// differs describes the first difference between e and o in the kinds listed (space
// separated), or is empty.
func (e encodedResources) differs(o encodedResources, kinds string) string {
	for _, kind := range strings.Fields(kinds) {
		a, b := e.byKind[kind], o.byKind[kind]
		for name, x := range a {
			if y, ok := b[name]; !ok {
				return fmt.Sprintf("%s differ: %s only in the first", kind, name)
			} else if !bytes.Equal(x, y) {
				return fmt.Sprintf("%s differ: %s", kind, name)
			}
		}
		for name := range b {
			if _, ok := a[name]; !ok {
				return fmt.Sprintf("%s differ: %s only in the second", kind, name)
			}
		}
	}
	return ""
}

// translateProxy translates every type for proxy as pilot's push does, checks each resource,
// and returns their encodings.
func translateProxy(t *testing.T, snap *model.Snapshot, proxy *model.Proxy) encodedResources {
	t.Helper()
	resolved := snap.ResolveProxy(proxy)
	listeners := translate.Listeners(snap, resolved)
	routes := translate.Routes(snap, resolved)
	clusters := translate.Clusters(snap, resolved)
	secrets := translate.Secrets(snap, resolved)
	extensions := translate.ExtensionConfigs(snap, resolved)
	out := encodedResources{proxy: proxy.NodeID, byKind: map[string]map[string][]byte{}}
	add := func(kind string, msgs []proto.Message) {
		out.byKind[kind] = map[string][]byte{}
		for _, m := range msgs {
			if v, ok := m.(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					t.Errorf("proxy %s: %s: %s fails Validate(): %v", proxy.NodeID, kind, nameOf(m), err)
				}
			}
			b, err := wire.Marshal(m)
			if err != nil {
				t.Errorf("proxy %s: %s: %s: encoding: %v", proxy.NodeID, kind, nameOf(m), err)
			}
			if _, dup := out.byKind[kind][nameOf(m)]; dup {
				t.Errorf("proxy %s: two %s named %q (pilot keeps one by name)", proxy.NodeID, kind, nameOf(m))
			}
			out.byKind[kind][nameOf(m)] = b
		}
	}
	add("listeners", messages(listeners))
	add("routes", messages(routes))
	add("clusters", messages(clusters))
	add("secrets", messages(secrets))
	add("extensions", messages(extensions))
	for _, problem := range envoyRejections(listeners, routes, clusters, extensions) {
		t.Errorf("proxy %s: Envoy would reject: %s", proxy.NodeID, problem)
	}
	return out
}

func asMessages[M proto.Message](list []M) []proto.Message {
	out := make([]proto.Message, len(list))
	for i, m := range list {
		out[i] = m
	}
	return out
}

func nameOf(m proto.Message) string {
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return fmt.Sprintf("%T", m)
}

// checkNamed checks that every resource of a list validates and has a name of its own.
func checkNamed[R interface {
	proto.Message
	ValidateAll() error
}](t *testing.T, kind string, list []R, name func(R) string) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range list {
		if err := r.ValidateAll(); err != nil {
			t.Errorf("%s: %s fails Validate(): %v", kind, name(r), err)
		}
		if seen[name(r)] {
			t.Errorf("two %s named %q", kind, name(r))
		}
		seen[name(r)] = true
	}
}

// fuzzProxies are the proxies an input is translated for: the one its `# proxy:` line names
// (as golden inputs have), a captured and an uncaptured sidecar in default, each with a twin that only a name or an address sets apart (so that their keys
// are usually equal), a router selected by the input's first Gateway, and sidecars named by its
// first WorkloadEntries and Pod or selected by its first Sidecar, in both interception modes.
func fuzzProxies(data []byte, set *config.Set) []*model.Proxy {
	var out []*model.Proxy
	add := func(nodeID, mode string, labels map[string]string) {
		p, err := model.ParseNodeID(nodeID)
		if err != nil {
			return // a name from the input that cannot be a node ID
		}
		p.SetInterceptionMode(mode)
		p.Labels = labels
		out = append(out, p)
	}
	sidecar := func(ip, name, ns string) string {
		return fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", ip, name, ns, ns)
	}
	if node, mode, labels, ok := meshcorpus.ProxyHeader(data); ok {
		add(node, mode, labels)
	}
	add(sidecar("10.0.0.1", "app-1", "default"), "REDIRECT", nil)
	add(sidecar("10.0.0.9", "app-2", "default"), "REDIRECT", nil)
	add(sidecar("127.0.0.1", "app-1", "default"), "NONE", nil)
	add(sidecar("127.0.0.1", "app-3", "default"), "NONE", map[string]string{"unselected": "x"})

	gwNS, gwLabels := "istio-system", map[string]string{"istio": "ingressgateway"}
	if len(set.Gateways) > 0 {
		gwNS, gwLabels = set.Gateways[0].Namespace, set.Gateways[0].Spec.GetSelector()
	}
	for _, name := range []string{"gateway-1", "gateway-2"} {
		add(fmt.Sprintf("router~10.0.0.2~%s.%s~%s.svc.cluster.local", name, gwNS, gwNS), "NONE", gwLabels)
	}

	workloads := 0
	for _, we := range set.WorkloadEntries {
		if workloads == 2 {
			break
		}
		workloads++
		ip := addressOr(we.Spec.GetAddress(), "10.0.0.3")
		for _, mode := range []string{"REDIRECT", "NONE"} {
			add(sidecar(ip, we.Name, we.Namespace), mode, nil)
		}
		add(fmt.Sprintf("router~%s~%s.%s~%s.svc.cluster.local", ip, we.Name, we.Namespace, we.Namespace), "NONE", nil)
	}
	if len(set.Pods) > 0 {
		pod := set.Pods[0]
		ip := addressOr(pod.Status.PodIP, "10.0.0.4")
		for _, mode := range []string{"REDIRECT", "NONE"} {
			add(sidecar(ip, pod.Name, pod.Namespace), mode, nil)
		}
	}
	if len(set.Sidecars) > 0 {
		sc := set.Sidecars[0]
		labels := sc.Spec.GetWorkloadSelector().GetLabels()
		for _, mode := range []string{"REDIRECT", "NONE"} {
			add(sidecar("127.0.0.2", "scoped-1", sc.Namespace), mode, labels)
		}
	}
	return out
}

// addressOr is address when it is an IP, else fallback (WorkloadEntry addresses may be
// hostnames or unix sockets, which a node ID cannot hold).
func addressOr(address, fallback string) string {
	if ip, err := netip.ParseAddr(address); err == nil {
		return ip.String()
	}
	return fallback
}
