package translate_test

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/render"
	"github.com/skiffmesh/skiff/pkg/translate"
	"github.com/skiffmesh/skiff/pkg/wire"
)

var update = flag.Bool("update", false, "rewrite testdata/out from the current translation and delete orphaned outputs")

// defaultProxy is the proxy a case is translated for unless its first line says
// `# proxy: NODE_ID [none|redirect] [labels=k=v,k2=v2]`.
const defaultProxy = "sidecar~10.0.0.1~app-1.default~default.svc.cluster.local"

// TestGolden translates every testdata/*.yaml for one proxy and compares each resource type
// with testdata/out/CASE.TYPE.yaml (TYPE: listeners, routes, clusters, endpoints, and
// extensions for sidecars, secrets for gateways). Every generated resource must pass its proto
// Validate().
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs in testdata/: %v", err)
	}
	produced := map[string]bool{}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			proxy := caseProxy(t, in)
			snap := loadCase(t, in)
			res := translate.ForProxy(snap, proxy)
			outputs := map[string][]proto.Message{}
			for _, l := range res.Listeners {
				outputs["listeners"] = append(outputs["listeners"], l)
			}
			for _, r := range res.Routes {
				outputs["routes"] = append(outputs["routes"], r)
			}
			for _, c := range res.Clusters {
				outputs["clusters"] = append(outputs["clusters"], c)
			}
			for _, e := range translate.Endpoints(snap) {
				outputs["endpoints"] = append(outputs["endpoints"], e)
			}
			kinds := []string{"listeners", "routes", "clusters", "endpoints"}
			if proxy.Type == model.SidecarProxy {
				// The RBAC rules its inbound filters fetch over ECDS (TypedExtensionConfig).
				kinds = append(kinds, "extensions")
				for _, c := range res.ExtensionConfigs {
					outputs["extensions"] = append(outputs["extensions"], c)
				}
			}
			if proxy.Type == model.Router {
				// Gateways also get SDS secrets; goldens hold them with private keys redacted.
				kinds = append(kinds, "secrets")
				for _, s := range translate.Secrets(snap, proxy) {
					if err := s.ValidateAll(); err != nil {
						t.Errorf("secrets: generated resource fails Validate(): %v", err)
					}
					outputs["secrets"] = append(outputs["secrets"], translate.RedactSecret(s))
				}
			}
			for _, kind := range kinds {
				for _, m := range outputs[kind] {
					if v, ok := m.(interface{ ValidateAll() error }); ok {
						if err := v.ValidateAll(); err != nil {
							t.Errorf("%s: generated resource fails Validate(): %v", kind, err)
						}
					}
					checkEncoding(t, kind, m)
				}
				file := filepath.Join("testdata", "out", name+"."+kind+".yaml")
				produced[file] = true
				compareGolden(t, file, renderYAML(t, outputs[kind]))
			}
		})
	}
	if *update {
		removeOrphans(t, produced)
	}
}

// checkEncoding checks pilot's encoding of a resource (wire.Marshal, which takes a faster
// encoder for route configurations when built with the vtprotobuf tag, as make test builds it):
// it must decode to the same message, and give the same bytes every time, or pilot would see
// changes where there are none.
func checkEncoding(t *testing.T, kind string, m proto.Message) {
	t.Helper()
	first, err := wire.Marshal(m)
	if err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	decoded := m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(first, decoded); err != nil || !proto.Equal(decoded, m) {
		t.Errorf("%s: pilot's encoding does not decode to the resource (%v)", kind, err)
	}
	for range 3 { // map order is random per iteration: repeat to catch an unsorted map
		if again, _ := wire.Marshal(m); !bytes.Equal(again, first) {
			t.Errorf("%s: pilot's encoding of one resource varies (%d and %d bytes)", kind, len(first), len(again))
			return
		}
	}
}

// caseProxy reads the `# proxy:` header of a case.
func caseProxy(t *testing.T, file string) *model.Proxy {
	t.Helper()
	id, mode, labels := defaultProxy, "redirect", map[string]string{}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "# proxy:"); ok {
			fields := strings.Fields(rest)
			id = fields[0]
			if len(fields) > 1 {
				mode = fields[1]
			}
			if len(fields) > 2 {
				spec, _ := strings.CutPrefix(fields[2], "labels=")
				for _, kv := range strings.Split(spec, ",") {
					k, v, _ := strings.Cut(kv, "=")
					labels[k] = v
				}
			}
		}
	}
	p, err := model.ParseNodeID(id)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	p.SetInterceptionMode(mode)
	if len(labels) > 0 {
		p.Labels = labels
	}
	return p
}

// loadCase loads one input file through the same loader pilot uses.
func loadCase(t *testing.T, file string) *model.Snapshot {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(file)), data, 0o644); err != nil {
		t.Fatal(err)
	}
	set, errs := config.NewLoader(dir).Load()
	for _, e := range errs {
		t.Errorf("%s: %v", file, e)
	}
	set.Mesh = caseMesh(t, file, data)
	return model.Build(set)
}

// caseMesh is the mesh configuration a case names in a leading comment line
// `# mesh: NAME` (testdata/mesh/NAME.yaml, applied over Skiff's defaults), else nil: the
// defaults.
func caseMesh(t *testing.T, file string, data []byte) *meshconfig.MeshConfig {
	t.Helper()
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		if name, ok := strings.CutPrefix(line, "# mesh:"); ok {
			mesh, err := config.ReadMeshConfig(filepath.Join("testdata", "mesh", strings.TrimSpace(name)+".yaml"), config.DefaultMeshConfig(true))
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			return mesh
		}
	}
	return nil
}

// renderYAML writes resources as a YAML list in Envoy's JSON field names.
func renderYAML(t *testing.T, msgs []proto.Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	if len(msgs) == 0 {
		return []byte("[]\n")
	}
	for _, m := range msgs {
		y, err := render.YAML(m)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString("- ")
		buf.WriteString(strings.ReplaceAll(strings.TrimRight(string(y), "\n"), "\n", "\n  "))
		buf.WriteString("\n")
	}
	return buf.Bytes()
}

func compareGolden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run `go test ./pkg/translate -update` to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs from the translation (run `go test ./pkg/translate -update` and review the diff):\n%s", file, lineDiff(string(want), string(got)))
	}
}

// removeOrphans deletes outputs whose input case is gone, or that a case no longer produces.
// Outputs of cases a -run filter skipped are left alone.
func removeOrphans(t *testing.T, produced map[string]bool) {
	t.Helper()
	existing, _ := filepath.Glob(filepath.Join("testdata", "out", "*.yaml"))
	ran := map[string]bool{}
	for f := range produced {
		ran[caseOf(f)] = true
	}
	for _, f := range existing {
		c := caseOf(f)
		_, err := os.Stat(filepath.Join("testdata", c+".yaml"))
		if produced[f] || (err == nil && !ran[c]) {
			continue
		}
		if err := os.Remove(f); err != nil {
			t.Error(err)
		}
	}
}

// caseOf is the case name of an output file: testdata/out/CASE.KIND.yaml.
func caseOf(out string) string {
	name := strings.TrimSuffix(filepath.Base(out), ".yaml")
	return name[:strings.LastIndexByte(name, '.')]
}

// lineDiff shows the first differing lines, enough to see what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			out.WriteString("line " + strconv.Itoa(i+1) + ":\n  want: " + a + "\n  got:  " + b + "\n")
			shown++
		}
	}
	return out.String()
}
