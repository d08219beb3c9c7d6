package skiffctl

import (
	"slices"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestProxyConfigPilotAndEnvoyAgree: for a synced Envoy, each of proxy-config's tables reads
// the same from pilot as from the Envoy (leaving out what only Envoy's bootstrap holds: the
// xds-grpc cluster and its endpoint), filters select the same rows on both sides, and --diff
// prints nothing and exits 0. Secrets list the certificates without key material.
func TestProxyConfigPilotAndEnvoyAgree(t *testing.T) {
	s := startShop(t, false, policies)
	s.mustCtl(t, "wait", "--timeout", "2m")
	admin := s.envoy.AdminAddress

	for _, args := range [][]string{
		{"clusters"},
		{"clusters", "--fqdn", "reviews.shop.svc.cluster.local", "--subset", "v2"},
		{"clusters", "--direction", "inbound"},
		{"listeners"},
		{"listeners", "--port", "9080"},
		{"routes"},
		{"routes", "--name", "9080"},
		{"extensions"},
	} {
		cmd := append(args[:1:1], apiPod)
		cmd = append(cmd, args[1:]...)
		fromPilot := rows(s.mustCtl(t, append([]string{"proxy-config"}, cmd...)...))
		fromEnvoy := rows(s.mustCtl(t, append([]string{"proxy-config"}, append(cmd, "--envoy", admin)...)...))
		// Envoy also lists what its bootstrap holds (xds-grpc), inline route configurations
		// (the Sidecar ingress listener's), and asks only for the extension configurations
		// its listeners name (no TCP chain here: no network RBAC filters).
		fromEnvoy = slices.DeleteFunc(fromEnvoy, func(r string) bool {
			return strings.Contains(r, "xds-grpc") || strings.HasPrefix(r, "inbound|8080||")
		})
		if args[0] == "extensions" {
			fromPilot = slices.DeleteFunc(fromPilot, func(r string) bool { return strings.Contains(r, ".tcp.") })
		}
		slices.Sort(fromPilot[1:])
		slices.Sort(fromEnvoy[1:])
		if !slices.Equal(fromPilot, fromEnvoy) {
			t.Errorf("proxy-config %s: pilot's table\n%s\nEnvoy's table\n%s", strings.Join(cmd, " "),
				strings.Join(fromPilot, "\n"), strings.Join(fromEnvoy, "\n"))
		}
		if len(fromPilot) < 2 {
			t.Errorf("proxy-config %s: no rows:\n%s", strings.Join(cmd, " "), strings.Join(fromPilot, "\n"))
		}
	}
	clusters := s.mustCtl(t, "proxy-config", "clusters", apiPod, "--fqdn", "reviews.shop.svc.cluster.local", "--subset", "v2")
	if got := rows(clusters); len(got) != 2 || got[1] != "reviews.shop.svc.cluster.local 9080 v2 outbound EDS -" {
		t.Errorf("proxy-config clusters --fqdn --subset v2: want the v2 cluster alone:\n%s", clusters)
	}

	// Endpoints: pilot does not health-check (UNKNOWN), Envoy reports those HEALTHY; the
	// endpoints and their clusters are the same.
	endpoints := func(args ...string) []string {
		var out []string
		for _, r := range rows(s.mustCtl(t, append([]string{"proxy-config", "endpoints", apiPod}, args...)...)) {
			// Envoy dumps the load assignments of its static clusters too (xds-grpc, inbound).
			if f := strings.Fields(r); !strings.Contains(r, "xds-grpc") && !strings.Contains(r, "inbound|") {
				out = append(out, f[0]+" "+f[len(f)-1])
			}
		}
		return out
	}
	if p, e := endpoints(), endpoints("--envoy", admin); !slices.Equal(p, e) || len(p) != 5 {
		t.Errorf("proxy-config endpoints: pilot's %v, Envoy's %v; want the same 5", p, e)
	}
	if p := endpoints("--cluster", "outbound|9080|v1|reviews.shop.svc.cluster.local"); len(p) != 2 || !strings.HasPrefix(p[1], s.v1.IP) {
		t.Errorf("proxy-config endpoints --cluster v1: %v", p)
	}

	secrets := s.mustCtl(t, "proxy-config", "secrets", apiPod, "--envoy", admin)
	for _, want := range []string{"default Cert Chain ACTIVE true", "ROOTCA CA ACTIVE true"} {
		if !strings.Contains(strings.Join(strings.Fields(secrets), " "), want) {
			t.Errorf("proxy-config secrets --envoy lacks %q:\n%s", want, secrets)
		}
	}
	for _, out := range []string{secrets, s.mustCtl(t, "proxy-config", "secrets", apiPod, "--envoy", admin, "-o", "json"),
		s.mustCtl(t, "proxy-config", "all", apiPod, "-o", "yaml")} {
		if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, "private_key: {inline_bytes") {
			t.Fatalf("proxy-config printed key material:\n%s", out)
		}
	}

	if r := s.ctl(t, "proxy-config", "all", apiPod, "--envoy", admin, "--diff"); r.code != 0 || r.stdout != "" {
		t.Errorf("proxy-config all --diff of a synced Envoy: want no output and exit 0: %s", r)
	}
	bootstrap := s.mustCtl(t, "proxy-config", "bootstrap", apiPod, "--envoy", admin)
	if !strings.Contains(bootstrap, apiNode) {
		t.Errorf("proxy-config bootstrap lacks the node ID:\n%s", bootstrap)
	}
}

// TestProxyConfigDiffShowsDifference: an Envoy that holds other configuration than a pilot
// serves (it follows a second pilot, whose reviews route goes to v2) is told apart by --diff:
// the route configuration differs in the subset, and the exit code is 1.
func TestProxyConfigDiffShowsDifference(t *testing.T) {
	s := startShop(t, false)
	s.mustCtl(t, "wait", "--timeout", "2m")
	other := t.TempDir()
	framework.WriteFile(t, other, "reviews.yaml", reviews(s.v1, s.v2))
	framework.WriteFile(t, other, "route.yaml", reviewsRoute("v2"))
	framework.WriteFile(t, other, "workloads.yaml", workloads)
	p2 := framework.StartPilot(t, framework.PilotOptions{ConfigDir: other})

	r := skiffctl(t, "--pilot", p2.MonitoringAddress, "proxy-config", "routes", apiNode, "--envoy", s.envoy.AdminAddress, "--diff")
	if r.code != 1 {
		t.Fatalf("proxy-config routes --diff against another pilot's configuration: want exit 1: %s", r)
	}
	for _, want := range []string{"--- pilot routes/9080", "+++ envoy routes/9080"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--diff lacks %q:\n%s", want, r.stdout)
		}
	}
	changed := func(sign, cluster string) bool {
		return slices.ContainsFunc(strings.Split(r.stdout, "\n"), func(l string) bool {
			return strings.HasPrefix(l, sign) && strings.Contains(l, "cluster: "+cluster)
		})
	}
	if !changed("-", "outbound|9080|v2|reviews.shop.svc.cluster.local") || !changed("+", "outbound|9080|v1|reviews.shop.svc.cluster.local") {
		t.Errorf("--diff: want pilot's v2 route removed and the Envoy's v1 route added:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "1 resources differ") {
		t.Errorf("--diff: want the count of differing resources on stderr: %s", r)
	}
}

// rows is a table's lines, header included, with runs of spaces made one (column widths
// follow the longest cell, which may be one only a side has).
func rows(table string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(table), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}
