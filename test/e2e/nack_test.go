package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// missingCA is a trust bundle path that exists on no machine: pilot's validation lets a
// DestinationRule name it (the file is the proxy's business), and Envoy rejects the cluster
// that reads it ("Error adding/updating cluster(s) NAME: Invalid path: /etc/certs/...").
const missingCA = "/etc/certs/skiff-e2e-missing-ca.pem"

// caFromFile is a DestinationRule that has the host's cluster check its server against the
// trust bundle at path.
func caFromFile(host, path string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: %[1]s-tls
  namespace: default
spec:
  host: %[1]s
  trafficPolicy:
    tls:
      mode: SIMPLE
      caCertificates: %[2]s
`, host, path)
}

// synczRejected is the rejected resources of one type of one proxy in /debug/syncz.
func synczRejected(t *testing.T, p *framework.Pilot, node, typ string) (rejected []struct {
	Name        string `json:"name"`
	Error       string `json:"error"`
	HeldVersion string `json:"held_version"`
}, acked string) {
	t.Helper()
	var proxies []struct {
		Proxy string `json:"proxy"`
		Types map[string]struct {
			Acked    string `json:"acked"`
			Rejected []struct {
				Name        string `json:"name"`
				Error       string `json:"error"`
				HeldVersion string `json:"held_version"`
			} `json:"rejected"`
		} `json:"types"`
	}
	if err := json.Unmarshal(p.Syncz(t), &proxies); err != nil {
		t.Fatalf("/debug/syncz: %v", err)
	}
	for _, st := range proxies {
		if st.Proxy == node {
			return st.Types[typ].Rejected, st.Types[typ].Acked
		}
	}
	return nil, ""
}

// envoyClusters reads Envoy's dynamic active clusters from its /config_dump: by name, whether
// each has a transport socket.
func envoyClusters(t *testing.T, envoy *framework.Envoy) map[string]bool {
	t.Helper()
	var dump struct {
		Configs []struct {
			Type     string `json:"@type"`
			Clusters []struct {
				Cluster struct {
					Name            string          `json:"name"`
					TransportSocket json.RawMessage `json:"transport_socket"`
				} `json:"cluster"`
			} `json:"dynamic_active_clusters"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(envoy.ConfigDump(t), &dump); err != nil {
		t.Fatalf("Envoy /config_dump: %v", err)
	}
	out := map[string]bool{}
	for _, c := range dump.Configs {
		for _, dc := range c.Clusters {
			out[dc.Cluster.Name] = dc.Cluster.TransportSocket != nil
		}
	}
	return out
}

// TestRejectedClusterIsHeldWhileTheRestMovesOn: one change adds a service and gives another a
// trust bundle file that does not exist. Envoy rejects that one cluster; pilot names exactly it
// in /debug/syncz and skiff_xds_rejected_resources, the new service's cluster of the same change
// reaches Envoy, and Envoy keeps the rejected cluster as it last accepted it (plaintext). Fixing
// the input clears the rejection. Over both protocols.
func TestRejectedClusterIsHeldWhileTheRestMovesOn(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			api := framework.StartUpstream(t, "127.0.41.1", "api")
			web := framework.StartUpstream(t, "127.0.41.2", "web")
			apiPort, webPort := framework.FreePort(t, "127.0.0.1"), framework.FreePort(t, "127.0.0.1")
			apiCluster, webCluster := drClusterName(apiPort, "", "api"), drClusterName(webPort, "", "web")

			p := framework.StartPilot(t, framework.PilotOptions{})
			p.WriteConfig(t, "api.yaml", serviceEntry("api", apiPort, endpoint{upstream: api}))
			node := sidecarNode("nack-" + map[bool]string{false: "sotw", true: "delta"}[delta])
			envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: node, Delta: delta,
				ExpectRejections: []string{"Invalid path: " + missingCA}})
			envoy.WaitStat(t, "cluster."+apiCluster+".membership_total", drEquals(1))
			_, before := synczRejected(t, p, node, "cds")

			// One change: a new service, and a trust bundle Envoy cannot read for the other.
			p.WriteConfig(t, "change.yaml", serviceEntry("web", webPort, endpoint{upstream: web})+"---\n"+caFromFile("api", missingCA))
			envoy.WaitStat(t, "cluster_manager.cds.update_rejected", func(v uint64) bool { return v >= 1 })
			framework.Eventually(t, func() error {
				rejected, acked := synczRejected(t, p, node, "cds")
				if len(rejected) != 1 || rejected[0].Name != apiCluster || !strings.Contains(rejected[0].Error, "Invalid path: "+missingCA) {
					return fmt.Errorf("syncz cds rejected = %+v, want exactly %s with Envoy's reason", rejected, apiCluster)
				}
				if rejected[0].HeldVersion == "" {
					return fmt.Errorf("syncz names no held version: %+v", rejected[0])
				}
				if acked == before || acked == "" {
					return fmt.Errorf("the proxy has not ACKed a version since the change (acked %q)", acked)
				}
				return nil
			})
			if n := p.Metric(t, "skiff_xds_rejected_resources", map[string]string{"type": "cds"}); n != 1 {
				t.Errorf("skiff_xds_rejected_resources{type=cds} = %v, want 1", n)
			}
			framework.Eventually(t, func() error {
				clusters := envoyClusters(t, envoy)
				if tls, ok := clusters[apiCluster]; !ok || tls {
					return fmt.Errorf("Envoy's %s is not the plaintext version it accepted (present %v, with TLS %v)", apiCluster, ok, tls)
				}
				if _, ok := clusters[webCluster]; !ok {
					return fmt.Errorf("the new cluster %s of the same change is not in Envoy: %v", webCluster, clusters)
				}
				return nil
			})
			// Traffic flows through both: the held cluster as it was, the new one.
			eventuallyAnswers(t, apiPort, "api", "api")
			eventuallyAnswers(t, webPort, "web", "web")

			// Fixing the input clears the rejection.
			p.WriteConfig(t, "change.yaml", serviceEntry("web", webPort, endpoint{upstream: web}))
			framework.Eventually(t, func() error {
				if rejected, _ := synczRejected(t, p, node, "cds"); len(rejected) != 0 {
					return fmt.Errorf("syncz still shows %+v", rejected)
				}
				return nil
			})
			if n := p.Metric(t, "skiff_xds_rejected_resources", map[string]string{"type": "cds"}); n != 0 {
				t.Errorf("skiff_xds_rejected_resources{type=cds} = %v after the fix, want 0", n)
			}
		})
	}
}

// bigRegex is a URI regex that Go's regexp (and so pilot's validation) accepts, and whose RE2
// program is larger than the 100 Envoy allows by default (a Unicode class compiles to many
// instructions): Envoy rejects the route configuration with "regex '...' RE2 program size of
// 1406 > max program size of 100 ...", which names no resource.
const bigRegex = `^/(\pL{200})$`

// routeTo is a VirtualService for host whose one HTTP route matches uri (a YAML mapping, e.g.
// `prefix: /v2`) and sends it to the host.
func routeTo(host, uri string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %[1]s
  namespace: default
spec:
  hosts:
  - %[1]s
  http:
  - match:
    - uri:
        %[2]s
    route:
    - destination:
        host: %[1]s
  - route:
    - destination:
        host: %[1]s
`, host, uri)
}

// envoyRoutes reads Envoy's dynamic route configurations from its /config_dump, as JSON text
// by name.
func envoyRoutes(t *testing.T, envoy *framework.Envoy) map[string]string {
	t.Helper()
	var dump struct {
		Configs []struct {
			Routes []struct {
				RouteConfig json.RawMessage `json:"route_config"`
			} `json:"dynamic_route_configs"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(envoy.ConfigDump(t), &dump); err != nil {
		t.Fatalf("Envoy /config_dump: %v", err)
	}
	out := map[string]string{}
	for _, c := range dump.Configs {
		for _, r := range c.Routes {
			var named struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal(r.RouteConfig, &named); err != nil {
				t.Fatal(err)
			}
			out[named.Name] = string(r.RouteConfig)
		}
	}
	return out
}

// TestRejectedRouteIsFoundByBisection: one change modifies two route configurations, and Envoy
// rejects one of them with a reason that names none. Pilot finds it by sending half the
// change at a time, names it in /debug/syncz, and Envoy ends with the good one's new version
// and the bad one's last accepted version. Fixing the input clears the rejection. Over both
// protocols.
func TestRejectedRouteIsFoundByBisection(t *testing.T) {
	for i, delta := range []bool{false, true} {
		protocol := map[bool]string{false: "sotw", true: "delta"}[delta]
		t.Run(protocol, func(t *testing.T) {
			api := framework.StartUpstream(t, fmt.Sprintf("127.0.41.%d", 4+2*i), "api")
			web := framework.StartUpstream(t, fmt.Sprintf("127.0.41.%d", 5+2*i), "web")
			apiPort, webPort := framework.FreePort(t, "127.0.0.1"), framework.FreePort(t, "127.0.0.1")
			// The protocol log in pilot's log (printed if the test fails) shows the bisection.
			p := framework.StartPilot(t, framework.PilotOptions{Args: []string{"--xds-log", "*", "--log-level", "debug"}})
			p.WriteConfig(t, "services.yaml", serviceEntry("api", apiPort, endpoint{upstream: api})+"---\n"+serviceEntry("web", webPort, endpoint{upstream: web}))
			node := sidecarNode("nack-rds-" + protocol)
			envoy := framework.StartEnvoy(t, p, framework.EnvoyOptions{NodeID: node, Delta: delta, ExpectRejections: []string{"program size"}})
			eventuallyAnswers(t, apiPort, "api", "api")
			eventuallyAnswers(t, webPort, "web", "web")
			apiRoute, webRoute := fmt.Sprint(apiPort), fmt.Sprint(webPort)

			p.WriteConfig(t, "routes.yaml", routeTo("api", "prefix: /bisected-v2")+"---\n"+routeTo("web", "regex: '"+bigRegex+"'"))
			framework.Eventually(t, func() error {
				rejected, _ := synczRejected(t, p, node, "rds")
				if len(rejected) != 1 || rejected[0].Name != webRoute || !strings.Contains(rejected[0].Error, "program size") {
					return fmt.Errorf("syncz rds rejected = %+v, want exactly route configuration %s with Envoy's reason", rejected, webRoute)
				}
				t.Logf("syncz: %s rejected: %s", rejected[0].Name, rejected[0].Error)
				return nil
			})
			framework.Eventually(t, func() error {
				routes := envoyRoutes(t, envoy)
				if !strings.Contains(routes[apiRoute], "/bisected-v2") {
					return fmt.Errorf("Envoy's route configuration %s lacks the good half of the change: %s", apiRoute, routes[apiRoute])
				}
				if strings.Contains(routes[webRoute], "pL{200}") {
					return fmt.Errorf("Envoy's route configuration %s has the rejected regex", webRoute)
				}
				return nil
			})
			if n := p.Metric(t, "skiff_xds_rejected_resources", map[string]string{"type": "rds"}); n != 1 {
				t.Errorf("skiff_xds_rejected_resources{type=rds} = %v, want 1", n)
			}
			// Two NACKs at least: the change, and the half of it that holds the bad route
			// configuration (then one per retry of the held one, from 5 s on).
			if n := p.Metric(t, "pilot_total_xds_rejects", map[string]string{"type": "rds"}); n < 2 {
				t.Errorf("pilot_total_xds_rejects{type=rds} = %v, want 2 or more (the change, then the half with the fault)", n)
			}
			eventuallyAnswers(t, webPort, "web", "web")

			p.WriteConfig(t, "routes.yaml", routeTo("api", "prefix: /bisected-v2")+"---\n"+routeTo("web", "prefix: /fixed"))
			framework.Eventually(t, func() error {
				if rejected, _ := synczRejected(t, p, node, "rds"); len(rejected) != 0 {
					return fmt.Errorf("syncz still shows %+v", rejected)
				}
				if routes := envoyRoutes(t, envoy); !strings.Contains(routes[webRoute], "/fixed") {
					return fmt.Errorf("Envoy's route configuration %s lacks the fix", webRoute)
				}
				return nil
			})
		})
	}
}
