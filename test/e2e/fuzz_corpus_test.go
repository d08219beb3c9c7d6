package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/meshcorpus"
	"github.com/skiffmesh/skiff/test/framework"
)

// corpusSample is how many inputs TestFuzzCorpusEnvoyACKs serves by default: every saved fuzz
// case and seeds spread over the rest of the corpus. SKIFF_CORPUS_SAMPLE=all (or a number)
// changes it.
const corpusSample = 30

// corpusProxy is one of the Envoys the corpus is served to. Each runs in a network namespace
// of its own, where nonlocal binds are allowed, so that whatever addresses and ports an input
// makes it listen on (a gateway's 80 and 443, a Sidecar's bind addresses) are its alone.
type corpusProxy struct {
	role, nodeID, interception string
	namespace, name, address   string // the workload the node ID names
}

var corpusProxies = []corpusProxy{
	{"captured sidecar", "sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local", "redirect", "default", "reviews-v1", "10.0.0.1"},
	{"uncaptured sidecar", "sidecar~127.0.0.20~app-1.default~default.svc.cluster.local", "none", "default", "app-1", "127.0.0.20"},
	{"gateway", "router~10.0.0.9~ingressgateway-1.istio-system~istio-system.svc.cluster.local", "", "istio-system", "ingressgateway-1", "10.0.0.9"},
}

// TestFuzzCorpusEnvoyACKs serves a sample of the translation fuzz target's corpus (the
// examples, the docs' meshes, the golden inputs, and every case the fuzzer found: see
// pkg/meshcorpus) to real Envoys, one input after another through pilot's folder: a captured
// sidecar, an uncaptured one and a gateway must ACK every configuration. Each input is served
// as pilot's loader takes it (its documents that validate, a file each; the certificate files
// it names on the proxy's filesystem made by the test, see proxyFiles), plus a WorkloadEntry
// for each proxy that gives it the labels the input means for it (its `# proxy:` line, or for
// the gateway its first Gateway's selector) and a service account, so mTLS is configured too.
// Going from one input to the next also checks that Envoy takes every update between two
// unrelated meshes.
func TestFuzzCorpusEnvoyACKs(t *testing.T) {
	root := framework.RepoRoot(t)
	inputs := corpusInputs(t, root)

	p := framework.StartPilot(t, framework.PilotOptions{})
	envoys := make([]*framework.Envoy, len(corpusProxies))
	for i, proxy := range corpusProxies {
		envoys[i] = startCorpusEnvoy(t, p, proxy)
	}
	rejected := make([]uint64, len(envoys))
	files := newProxyFiles(t)

	prefix := ""
	for n, in := range inputs {
		docs := meshcorpus.Accepted(files.rewrite(in.Data))
		if len(docs) == 0 {
			t.Errorf("%s: pilot accepts no document of it", in.Name)
			continue
		}
		old := prefix
		prefix = fmt.Sprintf("in%03d-", n)
		for i, d := range docs {
			p.WriteConfig(t, fmt.Sprintf("%sdoc%03d.yaml", prefix, i), string(d.Data))
		}
		for i, w := range corpusWorkloads(in.Data, meshcorpus.Objects(docs)) {
			p.WriteConfig(t, fmt.Sprintf("zz-%sworkload%d.yaml", prefix, i), w)
		}
		removeWithPrefix(t, p, old)

		answer, body := waitForCorpusPush(t, p)
		if !answer.Synced {
			t.Errorf("%s: proxies not in sync: %s", in.Name, body)
		}
		for _, r := range answer.Rejected {
			t.Errorf("%s: %s rejected %s: %s", in.Name, r.Proxy, r.Type, r.Error)
		}
		for i, e := range envoys {
			// What Envoy serves is what pilot means it to: no listener left from an earlier input.
			want := listenerNames(t, p.ConfigDump(t, e.NodeID))
			framework.Eventually(t, func() error {
				if got := listenerNames(t, e.ConfigDump(t)); !slices.Equal(got, want) {
					return fmt.Errorf("%s: the %s Envoy has listeners %v, pilot serves it %v", in.Name, corpusProxies[i].role, got, want)
				}
				return nil
			})
			now := rejections(t, e)
			if now > rejected[i] {
				t.Errorf("%s: the %s Envoy rejected %d updates (see its log)", in.Name, corpusProxies[i].role, now-rejected[i])
			}
			rejected[i] = now
		}
	}
	t.Logf("%d inputs served to %d Envoys", len(inputs), len(envoys))
}

// corpusInputs is the sample of the corpus the test serves.
func corpusInputs(t *testing.T, root string) []meshcorpus.Input {
	t.Helper()
	seeds, err := meshcorpus.Seeds(root)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := meshcorpus.Regressions(root)
	if err != nil {
		t.Fatal(err)
	}
	want := corpusSample
	switch v := os.Getenv("SKIFF_CORPUS_SAMPLE"); v {
	case "":
	case "all":
		want = len(seeds) + len(saved)
	default:
		if want, err = strconv.Atoi(v); err != nil || want < 1 {
			t.Fatalf("SKIFF_CORPUS_SAMPLE=%q: want all or a positive number", v)
		}
	}
	// The saved cases always; seeds evenly spread over the rest, the same every run.
	out := saved
	if room := want - len(out); room >= len(seeds) {
		out = append(out, seeds...)
	} else {
		for i := range room {
			out = append(out, seeds[i*len(seeds)/room])
		}
	}
	return out
}

// corpusWorkloads are the WorkloadEntries, as YAML, that name the test's proxies for an input:
// each with the labels the input's `# proxy:` line gives it (or, for the gateway, the first
// Gateway's selector), and a service account. A WorkloadEntry of the input with the same name
// wins (its file comes first).
func corpusWorkloads(data []byte, objs []config.Object) []string {
	headerNode, _, headerLabels, _ := meshcorpus.ProxyHeader(data)
	var gatewaySelector map[string]string
	for _, o := range objs {
		if gw, ok := o.(*networkingv1.Gateway); ok {
			gatewaySelector = gw.Spec.GetSelector()
			break
		}
	}
	var out []string
	for _, proxy := range corpusProxies {
		labels := map[string]string{}
		switch {
		case proxy.nodeID == headerNode:
			labels = headerLabels
		case strings.HasPrefix(proxy.nodeID, "router~"):
			labels = gatewaySelector
		}
		spec, _ := json.Marshal(map[string]any{"address": proxy.address, "serviceAccount": "corpus", "labels": labels})
		out = append(out, fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s, namespace: %s}\nspec: %s\n",
			proxy.name, proxy.namespace, spec))
	}
	return out
}

// removeWithPrefix removes the config files of the previous input.
func removeWithPrefix(t *testing.T, p *framework.Pilot, prefix string) {
	t.Helper()
	if prefix == "" {
		return
	}
	for _, pattern := range []string{prefix + "*", "zz-" + prefix + "*"} {
		files, err := filepath.Glob(filepath.Join(p.ConfigDir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			p.RemoveConfig(t, filepath.Base(f))
		}
	}
}

// waitForCorpusPush polls /debug/wait (each call shorter than the harness's request timeout)
// until pilot says every proxy has answered the configuration (failing the test if that does
// not happen within Patience), and returns its answer.
func waitForCorpusPush(t *testing.T, p *framework.Pilot) (waitAnswer, string) {
	t.Helper()
	var (
		answer waitAnswer
		body   []byte
	)
	framework.Eventually(t, func() error {
		var status int
		status, body = p.Get(t, "/debug/wait?timeout=3s")
		answer = waitAnswer{}
		if err := json.Unmarshal(body, &answer); err != nil {
			return fmt.Errorf("/debug/wait: status %d, %w: %s", status, err, body)
		}
		if status != http.StatusOK || !answer.Synced {
			answer.Synced = false
			return fmt.Errorf("/debug/wait: status %d: %s", status, body)
		}
		return nil
	})
	return answer, string(body)
}

// rejections sums an Envoy's update_rejected counters.
func rejections(t *testing.T, e *framework.Envoy) uint64 {
	t.Helper()
	var n uint64
	for name, v := range e.Stats(t) {
		if strings.HasSuffix(name, "update_rejected") {
			n += v
		}
	}
	return n
}

// corpusXDSAddress is where, inside a proxy's namespace, a forwarder reaches pilot: a port no
// corpus input listens on.
const corpusXDSAddress = "127.0.0.1:39010"

// startCorpusEnvoy starts proxy's Envoy in a network namespace of its own.
func startCorpusEnvoy(t *testing.T, p *framework.Pilot, proxy corpusProxy) *framework.Envoy {
	t.Helper()
	ns := framework.NewNetNS(t, "skf-corpus")
	// Inputs bind their Sidecars' and Gateways' addresses, which the namespace does not have.
	if err := ns.Do(func() error {
		for _, path := range []string{"/proc/sys/net/ipv4/ip_nonlocal_bind", "/proc/sys/net/ipv6/ip_nonlocal_bind"} {
			if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("allowing nonlocal binds in %s: %v", ns.Name, err)
	}
	framework.Forward(t, ns.Listen(t, corpusXDSAddress), func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", p.XDSAddress)
	})
	return framework.StartEnvoyInNetNS(t, p, ns, framework.NetNSEnvoyOptions{
		NodeID:       proxy.nodeID,
		XDSAddress:   corpusXDSAddress,
		Interception: proxy.interception,
	})
}
