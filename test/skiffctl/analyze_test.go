package skiffctl

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestAnalyzeFolder: analyze -f loads a folder as pilot does and reports what pilot would:
// a field its validation rejects (IST0106, naming the file, document, object and field), a
// destination that does not exist (IST0101) and a field pilot does not serve (SKF0001, a
// warning), with istioctl analyze's exit codes: 79 for issues at or above
// --failure-threshold, 65 for a file that is not configuration at all, 0 when clean.
func TestAnalyzeFolder(t *testing.T) {
	clean := t.TempDir()
	framework.WriteFile(t, clean, "route.yaml", reviewsRoute("v1"))
	framework.WriteFile(t, clean, "reviews.yaml", reviews(&framework.Upstream{IP: "127.0.77.11", Port: 1}, &framework.Upstream{IP: "127.0.77.12", Port: 2}))
	if r := skiffctl(t, "analyze", "-f", clean); r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "No validation issues found") {
		t.Fatalf("analyze of a clean folder: want exit 0 and no messages: %s", r)
	}

	broken := t.TempDir()
	framework.WriteFile(t, broken, "route.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings.shop.svc.cluster.local]
  http:
  - route:
    - destination: {host: nowhere.shop.svc.cluster.local}
`)
	// In a file of its own: pilot takes or rejects a file whole.
	framework.WriteFile(t, broken, "weights.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: weights, namespace: shop}
spec:
  hosts: [weights.shop.svc.cluster.local]
  http:
  - route:
    - destination: {host: weights.shop.svc.cluster.local}
      weight: -5
`)
	r := skiffctl(t, "analyze", "-f", broken)
	if r.code != 79 {
		t.Fatalf("analyze of a folder with an error: want exit 79: %s", r)
	}
	file := filepath.Join(broken, "weights.yaml")
	for _, want := range []string{
		"Error [IST0106] (VirtualService shop/weights " + file + " document 0) spec.http[0].route[0].weight: ",
		"Error [IST0101] (VirtualService shop/ratings) ",
		"nowhere.shop.svc.cluster.local",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("analyze output lacks %q:\n%s", want, r)
		}
	}
	var messages []struct {
		Level, Code, Kind, Namespace, Name, File, Field string
	}
	out := skiffctl(t, "analyze", "-f", broken, "-o", "json")
	if err := json.Unmarshal([]byte(out.stdout), &messages); err != nil || out.code != 79 {
		t.Fatalf("analyze -o json: %v: %s", err, out)
	}
	if len(messages) != 2 || messages[0].Code != "IST0106" || messages[0].File != file || messages[0].Field != "spec.http[0].route[0].weight" {
		t.Errorf("analyze -o json: %+v", messages)
	}

	// A warning alone passes the default threshold and fails --failure-threshold Warning.
	warned := t.TempDir()
	framework.WriteFile(t, warned, "policy.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: ext}
  rules: [{}]
`)
	if r := skiffctl(t, "analyze", "-f", warned); r.code != 0 || !strings.Contains(r.stdout, "Warning [SKF0001] (AuthorizationPolicy shop/custom) spec.action") {
		t.Errorf("analyze of a warning: want it printed and exit 0: %s", r)
	}
	if r := skiffctl(t, "analyze", "-f", warned, "--failure-threshold", "Warning"); r.code != 79 {
		t.Errorf("analyze --failure-threshold Warning of a warning: want exit 79: %s", r)
	}

	unparsable := t.TempDir()
	framework.WriteFile(t, unparsable, "junk.yaml", "a: [unclosed\n")
	if r := skiffctl(t, "analyze", "-f", unparsable); r.code != 65 || !strings.Contains(r.stdout, "junk.yaml") {
		t.Errorf("analyze of a file that does not parse: want exit 65 naming it: %s", r)
	}
}
