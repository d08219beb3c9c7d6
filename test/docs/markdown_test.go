package docs

import (
	"reflect"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

const sample = "# Title\n" +
	"\n" +
	"## One\n" +
	"\n" +
	"<!-- doc-test: background pilot; ready http://127.0.0.1:15014/ready -->\n" +
	"```sh\n" +
	"make run\n" +
	"```\n" +
	"\n" +
	"```yaml\n" +
	"<!-- doc-test: not a directive inside another block -->\n" +
	"```\n" +
	"\n" +
	"## Two\n" +
	"\n" +
	"<!-- doc-test: expect \"a; b\"; expect \"say \\\"hi\\\"\" -->\n" +
	"<!-- doc-test: stop pilot echo; ready http://127.0.0.1:80/ \"up\" -->\n" +
	"\n" +
	"```bash\n" +
	"echo 'a; b'\n" +
	"echo 'say \"hi\"'\n" +
	"```\n" +
	"\n" +
	"<!-- doc-test: skip: macOS only -->\n" +
	"```sh\n" +
	"sudo ifconfig lo0 alias 127.0.8.1\n" +
	"```\n"

func TestParse(t *testing.T) {
	blocks, err := Parse("sample.md", sample)
	if err != nil {
		t.Fatal(err)
	}
	want := []Block{
		{File: "sample.md", Line: 6, Section: "One", Script: "make run\n", Background: "pilot",
			Ready: []Readiness{{URL: "http://127.0.0.1:15014/ready"}}},
		{File: "sample.md", Line: 19, Section: "Two", Script: "echo 'a; b'\necho 'say \"hi\"'\n",
			Expect: []string{"a; b", `say "hi"`}, Stop: []string{"pilot", "echo"},
			Ready: []Readiness{{URL: "http://127.0.0.1:80/", Contains: "up"}}},
		{File: "sample.md", Line: 25, Section: "Two", Script: "sudo ifconfig lo0 alias 127.0.8.1\n", Skip: "macOS only"},
	}
	if len(blocks) != len(want) {
		t.Fatalf("got %d blocks, want %d: %+v", len(blocks), len(want), blocks)
	}
	for i := range want {
		if !reflect.DeepEqual(*blocks[i], want[i]) {
			t.Errorf("block %d:\n got %+v\nwant %+v", i, *blocks[i], want[i])
		}
	}
	two, err := InSections(blocks, "Two")
	if err != nil || len(two) != 2 {
		t.Errorf("InSections(Two) = %d blocks, %v; want 2", len(two), err)
	}
	if _, err := InSections(blocks, "Three"); err == nil {
		t.Error("InSections of a heading without blocks did not fail")
	}
}

// Directives that would leave a block untested, or test it other than meant, are errors.
func TestParseRejects(t *testing.T) {
	for _, doc := range []string{
		"<!-- doc-test: expect \"x\" -->\nSome text.\n```sh\necho x\n```\n",
		"<!-- doc-test: expect \"x\" -->\n```yaml\na: b\n```\n",
		"<!-- doc-test: expect x -->\n```sh\necho x\n```\n",
		"<!-- doc-test: wait 5s -->\n```sh\necho x\n```\n",
		"<!-- doc-test: background -->\n```sh\necho x\n```\n",
		"<!-- doc-test: ready localhost:80 -->\n```sh\necho x\n```\n",
		"<!-- doc-test: expect \"x\"\n```sh\necho x\n```\n",
		"```sh\necho x\n",
		"text\n<!-- doc-test: expect \"x\" -->\n",
	} {
		if _, err := Parse("bad.md", doc); err == nil {
			t.Errorf("no error for:\n%s", doc)
		}
	}
}

// The documents the docs test runs parse, so a directive broken in an edit fails here, on any
// machine, and not only where the docs can run (as root, on Linux, with the ports free).
func TestDocumentsParse(t *testing.T) {
	root := framework.RepoRoot(t)
	readme, err := ParseFile(root, "README.md")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InSections(readme, "A five-minute tour", "The tutorial's mesh: gateway, canary, retries, circuit breaker"); err != nil {
		t.Error(err)
	}
	noCluster, err := ParseFile(root, "docs/no-cluster.md")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile(root, "docs/xds-by-hand.md"); err != nil {
		t.Fatal(err)
	}
	// Every block that starts a server or a proxy must say so, or the test would wait for it to
	// end; every block after a file write must wait for pilot's push.
	for _, b := range append(readme, noCluster...) {
		if strings.Contains(b.Script, ".bin/envoy --") && b.Background == "" && !strings.Contains(b.Script, "&\n") && b.Skip == "" {
			t.Errorf("%s starts Envoy in the foreground without a background directive", b.Where())
		}
		if writesConfig(b.Script) && !strings.Contains(b.Script, "/debug/wait") && !strings.Contains(b.Script, "skiffctl wait") {
			t.Errorf("%s writes pilot's folder and does not wait for the push (skiffctl wait, or curl localhost:15014/debug/wait)", b.Where())
		}
	}
}

// writesConfig reports whether a script writes a YAML file with a here-document, the docs' way
// of changing pilot's folder.
func writesConfig(script string) bool {
	for _, line := range strings.Split(script, "\n") {
		if strings.HasPrefix(line, "cat >") && strings.Contains(line, ".yaml") && strings.Contains(line, "<<") {
			return true
		}
	}
	return false
}
