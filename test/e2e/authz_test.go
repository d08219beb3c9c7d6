package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// AuthorizationPolicy on real traffic: a proxy without capture whose Sidecar ingress listener
// forwards to an application, with RBAC filters in front of the router (HTTP ports) or of
// tcp_proxy (TCP ports). Callers are plaintext: no client certificate, so no peer identity.

// authzProxy is one proxy at ip in namespace ns with labels app=APP, serving a Sidecar ingress
// listener (HTTP, and TCP when tcp is set) that forwards to its own application upstream.
type authzProxy struct {
	pilot   *framework.Pilot
	envoy   *framework.Envoy
	app     *framework.Upstream
	ip      string
	port    int // the HTTP ingress port
	tcpPort int // the TCP ingress port, or 0
}

// startAuthzProxy writes the Sidecar and the policies, then starts the proxy, so the listener
// carries its RBAC filters from the first LDS answer.
func startAuthzProxy(t *testing.T, ip, appIP, ns, app string, tcp bool, policies string, envoyArgs ...string) *authzProxy {
	t.Helper()
	a := &authzProxy{app: framework.StartUpstream(t, appIP, app), ip: ip, port: framework.FreePort(t, ip)}
	ingress := fmt.Sprintf(`  - port:
      number: %d
      protocol: HTTP
      name: http
    defaultEndpoint: %s
`, a.port, a.app.Address())
	if tcp {
		a.tcpPort = framework.FreePort(t, ip)
		ingress += fmt.Sprintf(`  - port:
      number: %d
      protocol: TCP
      name: tcp
    defaultEndpoint: %s
`, a.tcpPort, a.app.Address())
	}
	p := framework.StartPilot(t, framework.PilotOptions{})
	a.pilot = p
	p.WriteConfig(t, "sidecar.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: %s
  namespace: %s
spec:
  workloadSelector:
    labels:
      app: %s
  ingress:
%s`, app, ns, app, ingress))
	p.WriteConfig(t, "authz.yaml", policies)
	a.envoy = framework.StartEnvoy(t, p, framework.EnvoyOptions{
		NodeID:        fmt.Sprintf("sidecar~%s~%s-1.%s~%s.svc.cluster.local", ip, app, ns, ns),
		BootstrapArgs: []string{"--labels", "app=" + app},
		EnvoyArgs:     envoyArgs,
	})
	return a
}

// send makes one request to the HTTP ingress port.
func (a *authzProxy) send(method, path string) (*framework.Response, error) {
	return framework.Send(method, fmt.Sprintf("http://%s:%d%s", a.ip, a.port, path), "", nil)
}

// expect checks the status of one request; a 200 must come from the application.
func (a *authzProxy) expect(t *testing.T, method, path string, want int) {
	t.Helper()
	resp, err := a.send(method, path)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return
	}
	if resp.Status != want || (want == http.StatusOK && resp.Body != a.app.Name) {
		t.Errorf("%s %s: %d %q; want %d", method, path, resp.Status, resp.Body, want)
	}
}

// waitServing waits until the ingress listener answers a request that policy lets through.
func (a *authzProxy) waitServing(t *testing.T, method, path string) {
	t.Helper()
	framework.Eventually(t, func() error {
		resp, err := a.send(method, path)
		if err != nil {
			return err
		}
		if resp.Status != http.StatusOK {
			return fmt.Errorf("%s %s: %d %q", method, path, resp.Status, resp.Body)
		}
		return nil
	})
}

// TestAuthzAllowMethods: an ALLOW policy without `from` allows GET and POST from anyone; what
// it does not allow (DELETE) is denied with 403 before it reaches the application.
func TestAuthzAllowMethods(t *testing.T) {
	a := startAuthzProxy(t, "127.0.5.1", "127.0.5.2", "default", "api", false, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: read-write
  namespace: default
spec:
  selector:
    matchLabels:
      app: api
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET", "POST"]
`)
	a.waitServing(t, http.MethodGet, "/")
	a.expect(t, http.MethodPost, "/items", http.StatusOK)
	before := a.app.Requests()
	a.expect(t, http.MethodDelete, "/items/1", http.StatusForbidden)
	a.expect(t, http.MethodPut, "/items/1", http.StatusForbidden)
	if got := a.app.Requests(); got != before {
		t.Errorf("the application received %d denied requests", got-before)
	}
	a.envoy.WaitStat(t, fmt.Sprintf("http.inbound_inbound|%d||.rbac.denied", a.port), atLeast(2))
}

// TestAuthzDenyBeatsAllow: a DENY policy on a path wins over an ALLOW policy that allows
// everything, also for a path that only reaches /admin once normalised.
func TestAuthzDenyBeatsAllow(t *testing.T) {
	a := startAuthzProxy(t, "127.0.5.3", "127.0.5.4", "default", "api", false, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-all
  namespace: default
spec:
  rules:
  - {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: default
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin", "/admin/*"]
`)
	a.waitServing(t, http.MethodGet, "/")
	a.expect(t, http.MethodGet, "/public/page", http.StatusOK)
	a.expect(t, http.MethodDelete, "/public/page", http.StatusOK)
	a.expect(t, http.MethodGet, "/admin", http.StatusForbidden)
	a.expect(t, http.MethodPost, "/admin/users", http.StatusForbidden)
	a.expect(t, http.MethodGet, "/public/../admin/users", http.StatusForbidden)
	a.expect(t, http.MethodGet, "/administrator", http.StatusOK)
}

// TestAuthzSeedPolicy: the seed's policy, verbatim, is accepted by Envoy and shows up in its
// /config_dump as istiod would write it (in the RBAC filter's discovered configuration); it allows GET and POST only from workloads of
// temple-stack, identified by their certificate, so a plaintext GET is denied.
func TestAuthzSeedPolicy(t *testing.T) {
	a := startAuthzProxy(t, "127.0.5.5", "127.0.5.6", "temple-stack", "temple-api", false, seedAuthorizationPolicy)
	listener := fmt.Sprintf("%s_%d", a.ip, a.port)
	var filters []string
	framework.Eventually(t, func() error {
		var err error
		filters, err = httpFilterNames(a.envoy.ConfigDump(t), listener)
		return err
	})
	// The RBAC filters come first and fetch their rules over ECDS; the dump holds the rules
	// in its ecds_filter_http section.
	rbac := []string{"inbound.rbac.http.audit", "inbound.rbac.http.deny", "inbound.rbac.http.allow"}
	if len(filters) < 4 || !slices.Equal(filters[:3], rbac) || filters[len(filters)-1] != "envoy.filters.http.router" {
		t.Errorf("listener %s HTTP filters %v: want %v first and the router last", listener, filters, rbac)
	}
	dump := string(a.envoy.ConfigDump(t))
	for _, want := range []string{`"ns[temple-stack]-policy[temple-api-authz]-rule[0]"`, `".*/ns/temple-stack/.*"`, `"exact": "POST"`} {
		if !strings.Contains(dump, want) {
			t.Errorf("Envoy's /config_dump lacks %s", want)
		}
	}

	// A plaintext caller has no identity, so no namespace: even GET is denied.
	framework.Eventually(t, func() error {
		resp, err := a.send(http.MethodGet, "/")
		if err != nil {
			return err
		}
		if resp.Status != http.StatusForbidden || resp.Body != "RBAC: access denied" {
			return fmt.Errorf("plaintext GET: %d %q; want 403 RBAC: access denied", resp.Status, resp.Body)
		}
		return nil
	})
	if n := a.app.Requests(); n != 0 {
		t.Errorf("the application received %d requests; want none", n)
	}
}

// TestAuthzTCPPort: on a TCP port the network RBAC filter cannot see HTTP fields. A DENY rule
// on DELETE therefore denies only DELETE on the HTTP port, but every connection on the TCP
// port, where istiod drops the HTTP part so the rule denies more rather than nothing.
func TestAuthzTCPPort(t *testing.T) {
	a := startAuthzProxy(t, "127.0.5.7", "127.0.5.8", "default", "api", true, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-delete
  namespace: default
spec:
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["DELETE"]
`)
	a.waitServing(t, http.MethodGet, "/")
	a.expect(t, http.MethodDelete, "/", http.StatusForbidden)

	before := a.app.Requests()
	resp, err := framework.Send(http.MethodGet, fmt.Sprintf("http://%s:%d/", a.ip, a.tcpPort), "", nil)
	if err == nil {
		t.Errorf("GET through the TCP port answered %d %q; want the connection closed", resp.Status, resp.Body)
	}
	a.envoy.WaitStat(t, "tcp.rbac.denied", atLeast(1))
	if got := a.app.Requests(); got != before {
		t.Errorf("the application received %d requests through the TCP port", got-before)
	}
}

// httpFilterNames finds the named listener in an Envoy config dump and returns the HTTP
// filter names of its connection manager, in order.
func httpFilterNames(dump []byte, listener string) ([]string, error) {
	var cd struct {
		Configs []struct {
			DynamicListeners []struct {
				Name        string `json:"name"`
				ActiveState struct {
					Listener struct {
						FilterChains []struct {
							Filters []struct {
								Name        string `json:"name"`
								TypedConfig struct {
									HTTPFilters []struct {
										Name string `json:"name"`
									} `json:"http_filters"`
								} `json:"typed_config"`
							} `json:"filters"`
						} `json:"filter_chains"`
					} `json:"listener"`
				} `json:"active_state"`
			} `json:"dynamic_listeners"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(dump, &cd); err != nil {
		return nil, fmt.Errorf("decoding the config dump: %w", err)
	}
	for _, c := range cd.Configs {
		for _, l := range c.DynamicListeners {
			if l.Name != listener {
				continue
			}
			for _, fc := range l.ActiveState.Listener.FilterChains {
				for _, f := range fc.Filters {
					if f.Name != "envoy.filters.network.http_connection_manager" {
						continue
					}
					var names []string
					for _, h := range f.TypedConfig.HTTPFilters {
						names = append(names, h.Name)
					}
					return names, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("no active listener %s with a connection manager in the config dump", listener)
}

// seedAuthorizationPolicy is the tutorial's AuthorizationPolicy, verbatim.
const seedAuthorizationPolicy = `apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: temple-api-authz
  namespace: temple-stack
spec:
  selector:
    matchLabels:
      app: temple-api
  rules:
  - from:
    - source:
        namespaces: ["temple-stack"]
    to:
    - operation:
        methods: ["GET", "POST"]
`
