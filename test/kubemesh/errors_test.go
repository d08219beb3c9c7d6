package kubemesh

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// An Istio object the CRD schema rejects never reaches pilot; one that passes the schema but
// is wrong shows as a clear error in pilot's log, metric and /debug/config_errors, and a bad
// edit of a good object keeps the good version in service.
func TestKubernetesConfigErrors(t *testing.T) {
	ns := newNamespace(t, "errors")
	pilot := startPilot(t)
	pods := newPodNetwork(t, pilot)
	deployService(t, pods, ns, "ratings", "10.253.1.", "v1")
	client := createPod(t, ns, "client-1", "10.253.1.1", "client", map[string]string{"app": "client"})
	envoy := pods.startEnvoy(t, pilot, nodeID(client))
	host := "ratings." + ns + ".svc.cluster.local"
	url := "http://127.0.0.1:9080/"

	// The schema: a list where an object is expected. The API server refuses it.
	out, err := cluster.KubectlWithInput(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken-schema, namespace: %s}
spec:
  hosts: [ratings]
  http: "not a list"
`, ns), "apply", "-f", "-")
	if err == nil || !strings.Contains(out+err.Error(), "spec.http") {
		t.Fatalf("the API server accepted a VirtualService with spec.http a string (err %v)\n%s", err, out)
	}

	// A good VirtualService, then the same object edited into a regex that does not compile:
	// the CRD schema cannot tell, pilot's validation can.
	good := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: %s}
spec:
  hosts: [ratings]
  http:
  - match:
    - uri: {%s}
    route:
    - destination: {host: ratings}
      headers: {response: {set: {x-rule: %s}}}
`, ns, "%s", "%s")
	apply(t, fmt.Sprintf(good, `prefix: /`, "good"))
	waitRule(t, pods, url, host, "good")
	apply(t, fmt.Sprintf(good, `regex: "(("`, "bad"))
	framework.Eventually(t, func() error {
		if n := pilot.Metric(t, "skiff_config_errors", nil); n != 1 {
			return fmt.Errorf("skiff_config_errors = %v, want 1", n)
		}
		return nil
	})
	wantField := "spec.http[0].match[0].uri.regex"
	view := configErrors(t, pilot)
	if len(view.Errors) != 1 || view.Errors[0].Kind != "VirtualService" || view.Errors[0].Namespace != ns ||
		view.Errors[0].Name != "ratings" || view.Errors[0].Field != wantField {
		t.Errorf("/debug/config_errors errors = %+v, want VirtualService %s/ratings field %s", view.Errors, ns, wantField)
	}
	if log := pilot.Log(); !strings.Contains(log, "VirtualService "+ns+"/ratings: "+wantField) {
		t.Errorf("pilot's log does not name the object and field of the error")
	}
	// The last good version stays in service.
	waitRule(t, pods, url, host, "good")

	// Passes the schema and pilot's validation, but names a host and a subset that do not
	// exist: the istioctl analyze warnings, IST0101.
	apply(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: typo, namespace: %[1]s}
spec:
  hosts: [typo.example.com]
  http:
  - route:
    - destination: {host: ratngs}
    - destination: {host: ratings, subset: v9}
`, ns))
	framework.Eventually(t, func() error {
		var codes []string
		for _, w := range configErrors(t, pilot).Warnings {
			if w.Namespace == ns && w.Name == "typo" {
				codes = append(codes, w.Code+" "+w.Message)
			}
		}
		got := strings.Join(codes, "\n")
		if !strings.Contains(got, "referenced host not found: ratngs."+ns+".svc.cluster.local") ||
			!strings.Contains(got, "referenced host+subset in DestinationRule not found: "+host+"+v9") {
			return fmt.Errorf("warnings for VirtualService %s/typo: %q", ns, got)
		}
		return nil
	})
	if n := pilot.Metric(t, "skiff_config_warnings", nil); n < 2 {
		t.Errorf("skiff_config_warnings = %v, want at least 2", n)
	}
	if !strings.Contains(pilot.Log(), "IST0101") {
		t.Errorf("pilot's log does not report IST0101")
	}
	envoy.AssertNoRejections(t)
}

// waitRule waits until responses carry the x-rule header value want.
func waitRule(t *testing.T, pods *podNetwork, url, host, want string) {
	t.Helper()
	framework.Eventually(t, func() error {
		resp, err := pods.get(url, host)
		if err != nil {
			return err
		}
		if got := resp.Header.Get("x-rule"); got != want {
			return fmt.Errorf("x-rule %q, want %q", got, want)
		}
		return nil
	})
}

type configErrorsView struct {
	Errors []struct {
		Kind, Namespace, Name, Field, Message string
	}
	Warnings []struct {
		Code, Kind, Namespace, Name, Field, Message string
	}
}

func configErrors(t *testing.T, pilot *framework.Pilot) configErrorsView {
	t.Helper()
	status, body := pilot.Get(t, "/debug/config_errors")
	if status != 200 {
		t.Fatalf("/debug/config_errors: %d", status)
	}
	var v configErrorsView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("/debug/config_errors: %v\n%s", err, body)
	}
	return v
}
