package model

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/test/framework"
)

// warningsOf loads YAML documents as the folder loader would (strict decoding and validation)
// and returns the snapshot's warnings as strings (Warning.String).
func warningsOf(t *testing.T, docs ...string) []string {
	t.Helper()
	objs, err := config.Parse("case.yaml", []byte(strings.Join(docs, "\n---\n")))
	if err != nil {
		t.Fatalf("parsing the case: %v", err)
	}
	var out []string
	for _, w := range Build(config.NewSet(objs...)).Warnings() {
		if w.Field == "" || w.Kind == "" || w.Namespace == "" || w.Name == "" || w.Message == "" {
			t.Errorf("warning without object or field: %+v", w)
		}
		out = append(out, w.String())
	}
	return out
}

// wantWarnings checks that got holds a warning starting with each prefix in want, and nothing
// else.
func wantWarnings(t *testing.T, got []string, want ...string) {
	t.Helper()
	rest := slices.Clone(got)
	for _, w := range want {
		i := slices.IndexFunc(rest, func(g string) bool { return strings.HasPrefix(g, w) })
		if i < 0 {
			t.Errorf("no warning %q in:\n%s", w, strings.Join(got, "\n"))
			continue
		}
		rest = slices.Delete(rest, i, i+1)
	}
	for _, r := range rest {
		t.Errorf("unexpected warning: %s", r)
	}
}

// gatewayDoc is a Gateway in namespace bookinfo selecting istio=ingressgateway, with servers
// (a YAML flow list).
func gatewayDoc(servers string) string {
	return `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers: ` + servers
}

// gatewayEntry is a WorkloadEntry for a gateway proxy in istio-system, with a service account
// when sa is set.
func gatewayEntry(name, address, sa string) string {
	return `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ` + name + `, namespace: istio-system}
spec: {address: "` + address + `", serviceAccount: "` + sa + `", labels: {istio: ingressgateway}}`
}

// tlsSecret is a kubernetes.io/tls Secret, with ca.crt when withCA.
func tlsSecret(t *testing.T, name, ns string, withCA bool) string {
	pki := framework.NewPKI(t, "bookinfo.example.com", "client")
	b64 := base64.StdEncoding.EncodeToString
	doc := `apiVersion: v1
kind: Secret
metadata: {name: ` + name + `, namespace: ` + ns + `}
type: kubernetes.io/tls
data:
  tls.crt: ` + b64(pki.ServerCertPEM) + `
  tls.key: ` + b64(pki.ServerKeyPEM)
	if withCA {
		doc += "\n  ca.crt: " + b64(pki.CAPEM)
	}
	return doc
}

const httpsServer = `{port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*"], tls: {mode: SIMPLE, credentialName: cred}}`

// A credentialName is looked up in the namespaces of the gateway workloads the Gateway
// selects (istio-system here), not the Gateway's: missing there is IST0101 on the field.
func TestWarningCredentialNotFound(t *testing.T) {
	got := warningsOf(t, gatewayDoc("["+httpsServer+"]"), gatewayEntry("ingressgateway-1", "10.0.0.9", "gw"),
		tlsSecret(t, "cred", "bookinfo", false))
	wantWarnings(t, got, `IST0101 Gateway bookinfo/gw: spec.servers[0].tls.credentialName: referenced credential not found: "cred": no Secret cred in namespace istio-system, where the gateway workload WorkloadEntry ingressgateway-1 runs`)

	// With the Secret where the proxy runs, nothing to report.
	wantWarnings(t, warningsOf(t, gatewayDoc("["+httpsServer+"]"), gatewayEntry("ingressgateway-1", "10.0.0.9", "gw"),
		tlsSecret(t, "cred", "istio-system", false)))
}

// Without a workload to say where the gateway proxies run (folder mode, labels from node
// metadata), only a Secret that exists nowhere is reported.
func TestWarningCredentialNowhere(t *testing.T) {
	wantWarnings(t, warningsOf(t, gatewayDoc("["+httpsServer+"]")),
		`IST0101 Gateway bookinfo/gw: spec.servers[0].tls.credentialName: referenced credential not found: "cred": no Secret cred exists in any namespace`)
	wantWarnings(t, warningsOf(t, gatewayDoc("["+httpsServer+"]"), tlsSecret(t, "cred", "elsewhere", false)))
}

// credentialNames entries, caCertCredentialName, and another namespace's Secret are each
// checked; a MUTUAL server whose Secret has no ca.crt is IST0161.
func TestWarningCredentialFields(t *testing.T) {
	got := warningsOf(t, gatewayDoc(`[
    {port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, credentialNames: [cred, missing]}},
    {port: {number: 8443, name: mutual, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: MUTUAL, credentialName: cred}},
    {port: {number: 9443, name: mutual-ca, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: OPTIONAL_MUTUAL, credentialName: cred, caCertCredentialName: no-ca}},
    {port: {number: 10443, name: other-ns, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, credentialName: bookinfo/cred}}]`),
		gatewayEntry("ingressgateway-1", "10.0.0.9", "gw"),
		tlsSecret(t, "cred", "istio-system", false), tlsSecret(t, "cred", "bookinfo", true))
	wantWarnings(t, got,
		`IST0101 Gateway bookinfo/gw: spec.servers[0].tls.credentialNames[1]: referenced credential not found: "missing"`,
		`IST0161 Gateway bookinfo/gw: spec.servers[1].tls.credentialName: Secret istio-system/cred has no ca.crt, which MUTUAL needs`,
		`IST0101 Gateway bookinfo/gw: spec.servers[2].tls.caCertCredentialName: referenced credential not found: "no-ca"`,
		`IST0101 Gateway bookinfo/gw: spec.servers[3].tls.credentialName: referenced credential not found: "bookinfo/cred": a gateway proxy reads Secrets of its own namespace only`)
}

// ISTIO_MUTUAL needs a gateway proxy that can hold a workload certificate: a selected Pod or
// WorkloadEntry with a service account and an IP address.
func TestWarningIstioMutualWithoutIdentity(t *testing.T) {
	server := `[{port: {number: 443, name: mesh, protocol: HTTPS}, hosts: ["*"], tls: {mode: ISTIO_MUTUAL}}]`
	wantWarnings(t, warningsOf(t, gatewayDoc(server)),
		"SKF0002 Gateway bookinfo/gw: spec.servers[0].tls.mode: ISTIO_MUTUAL serves the gateway proxy's own workload certificate")
	got := warningsOf(t, gatewayDoc(server), gatewayEntry("no-sa", "10.0.0.9", ""), gatewayEntry("dns", "gw.example.com", "gw"))
	wantWarnings(t, got, "SKF0002 Gateway bookinfo/gw: spec.servers[0].tls.mode: ")
	if len(got) == 1 && !strings.Contains(got[0], "WorkloadEntry istio-system/dns, WorkloadEntry istio-system/no-sa") {
		t.Errorf("the warning does not name the selected workloads: %s", got[0])
	}
	wantWarnings(t, warningsOf(t, gatewayDoc(server), gatewayEntry("ingressgateway-1", "10.0.0.9", "gw")))
}

// What Skiff does not implement on a Gateway is reported on the field.
func TestWarningGatewayNotServed(t *testing.T) {
	got := warningsOf(t, gatewayDoc(`[
    {port: {number: 15443, name: tls, protocol: TLS}, hosts: ["*.local"], tls: {mode: AUTO_PASSTHROUGH}},
    {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"], bind: "unix:///var/run/gw.sock"},
    {port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*"], tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca, ecdhCurves: [P-256], insecureSkipVerify: true}}]`))
	wantWarnings(t, got,
		"SKF0001 Gateway bookinfo/gw: spec.servers[0].tls.mode: AUTO_PASSTHROUGH",
		"SKF0001 Gateway bookinfo/gw: spec.servers[1].bind: unix domain socket binds are not supported",
		"SKF0001 Gateway bookinfo/gw: spec.servers[2].tls.ecdhCurves: ",
		"SKF0001 Gateway bookinfo/gw: spec.servers[2].tls.insecureSkipVerify: ")
}

const reviewsEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec: {hosts: [reviews.default.svc.cluster.local], ports: [{number: 80, name: http, protocol: HTTP}], resolution: STATIC, endpoints: [{address: 10.0.0.1}]}`

// VirtualService rules and fields pilot does not translate.
func TestWarningVirtualServiceNotServed(t *testing.T) {
	got := warningsOf(t, reviewsEntry, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - delegate: {name: reviews-team, namespace: team}
  - match: [{headers: {"@request.auth.claims.group": {exact: admin}}}, {withoutHeaders: {"@request.auth.claims.group": {exact: guest}}}]
    route: [{destination: {host: reviews}}]
  - fault: {delay: {exponentialDelay: 1s, percentage: {value: 10}}, abort: {grpcStatus: NOPE, percentage: {value: 10}}}
    route: [{destination: {host: reviews}}]
  - fault: {abort: {http2Error: REFUSED_STREAM, percentage: {value: 10}}}
    route: [{destination: {host: reviews}}]`)
	wantWarnings(t, got,
		"SKF0001 VirtualService default/reviews: spec.http[0].delegate: delegate VirtualServices are not supported",
		"SKF0001 VirtualService default/reviews: spec.http[1].match[0].headers[@request.auth.claims.group]: ",
		"SKF0001 VirtualService default/reviews: spec.http[1].match[1].withoutHeaders[@request.auth.claims.group]: ",
		"SKF0001 VirtualService default/reviews: spec.http[2].fault.delay.exponentialDelay: ",
		`SKF0001 VirtualService default/reviews: spec.http[2].fault.abort.grpcStatus: unknown gRPC status "NOPE"`,
		"SKF0001 VirtualService default/reviews: spec.http[3].fault.abort.http2Error: ")
}

// DestinationRule traffic policy fields pilot does not translate, at every level.
func TestWarningDestinationRuleNotServed(t *testing.T) {
	got := warningsOf(t, reviewsEntry, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tunnel: {protocol: CONNECT, targetHost: egress.example.com, targetPort: 8080}
    proxyProtocol: {version: V1}
    loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {enabled: true}}
    connectionPool: {http: {http2KeepAlive: {interval: 10s}}}
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {simple: RANDOM, localityLbSetting: {enabled: false}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {retryBudget: {percent: 20}}`)
	wantWarnings(t, got,
		"SKF0001 DestinationRule default/reviews: spec.trafficPolicy.tunnel: ",
		"SKF0001 DestinationRule default/reviews: spec.trafficPolicy.proxyProtocol: ",
		"SKF0001 DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.localityLbSetting: ",
		"SKF0001 DestinationRule default/reviews: spec.trafficPolicy.connectionPool.http.http2KeepAlive: ",
		"SKF0001 DestinationRule default/reviews: spec.subsets[0].trafficPolicy.retryBudget: ")
}

// AuthorizationPolicies and rules pilot cannot enforce as written; what happens depends on the
// action, and the message says which.
func TestWarningAuthorizationPolicyNotServed(t *testing.T) {
	got := warningsOf(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec: {action: CUSTOM, provider: {name: ext-authz}, rules: [{to: [{operation: {paths: [/admin]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waypoint, namespace: default}
spec: {targetRefs: [{kind: Service, group: "", name: reviews}], rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: default}
spec:
  rules:
  - from: [{source: {trustDomains: [other.local], requestPrincipals: ["*"]}}]
    when: [{key: "request.auth.claims[group]", values: [admin]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {notTrustDomains: [cluster.local], notRequestPrincipals: ["*"]}}]}]`)
	wantWarnings(t, got,
		"SKF0001 AuthorizationPolicy default/ext: spec.action: CUSTOM",
		"SKF0001 AuthorizationPolicy default/waypoint: spec.targetRefs: ",
		"SKF0001 AuthorizationPolicy default/allow: spec.rules[0].from[0].source.trustDomains: trustDomains is not supported by Skiff: the rule is left out",
		"SKF0001 AuthorizationPolicy default/allow: spec.rules[0].from[0].source.requestPrincipals: ",
		"SKF0001 AuthorizationPolicy default/allow: spec.rules[0].when[0]: request.auth.claims[group] needs RequestAuthentication",
		"SKF0001 AuthorizationPolicy default/deny: spec.rules[0].from[0].source.notTrustDomains: notTrustDomains is not supported by Skiff: the rule is enforced without it",
		"SKF0001 AuthorizationPolicy default/deny: spec.rules[0].from[0].source.notRequestPrincipals: ")
}

// Servers a gateway proxy cannot merge with those before them on its port are IST0145, for
// every set of labels a proxy both Gateways select may have: the selectors' own, and those of
// the workloads they select.
func TestWarningConflictingGateways(t *testing.T) {
	gw := func(name, selector, servers string) string {
		return `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ` + name + `, namespace: istio-system}
spec:
  selector: ` + selector + `
  servers: ` + servers
	}
	got := warningsOf(t,
		gw("a", "{istio: ingressgateway}", `[
    {port: {number: 443, name: tls, protocol: TLS}, hosts: [a.example.com], tls: {mode: PASSTHROUGH}},
    {port: {number: 80, name: tcp, protocol: TCP}, hosts: ["*"]}]`),
		gw("b", "{istio: ingressgateway}", `[
    {port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*/a.example.com", b.example.com], tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}},
    {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]},
    {port: {number: 8443, name: https-other, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}}]`),
		// Another selector: it meets a and b only on the workload that has both labels.
		gw("c", "{app: edge}", `[{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}}]`),
		gw("d", "{app: lonely}", `[{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]`),
		`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: edge-1, namespace: istio-system}
spec: {address: 10.0.0.9, serviceAccount: edge, labels: {istio: ingressgateway, app: edge}}`)
	wantWarnings(t, got,
		"IST0145 Gateway istio-system/b: spec.servers[0]: host a.example.com on port 443 is already claimed by istio-system/a spec.servers[0]",
		"IST0145 Gateway istio-system/b: spec.servers[1]: port 80 is taken by istio-system/a spec.servers[1], a plaintext TCP server, which cannot share it with a plaintext HTTP server",
		"IST0145 Gateway istio-system/c: spec.servers[0]: host a.example.com on port 443 is already claimed by istio-system/a spec.servers[0], and Envoy cannot tell two TLS servers of one host apart (for gateway proxies labelled app=edge,istio=ingressgateway)")
}

// A VirtualService bound to a Gateway that does not exist is IST0101 on the reference, in
// every form istiod resolves.
func TestWarningGatewayNotFound(t *testing.T) {
	got := warningsOf(t, reviewsEntry, gatewayDoc(`[{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]`), `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  gateways: [mesh, bookinfo/gw, gw.bookinfo.svc.cluster.local, gw, other/gw]
  http:
  - route: [{destination: {host: reviews}}]`)
	wantWarnings(t, got,
		"IST0101 VirtualService default/reviews: spec.gateways[3]: referenced gateway not found: default/gw",
		"IST0101 VirtualService default/reviews: spec.gateways[4]: referenced gateway not found: other/gw")
}

// Sidecar fields pilot does not translate.
func TestWarningSidecarNotServed(t *testing.T) {
	got := warningsOf(t, reviewsEntry, `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: app, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 9080, protocol: HTTPS, name: https}
    defaultEndpoint: 127.0.0.1:8080
    tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}
    connectionPool: {tcp: {maxConnections: 10}}
  inboundConnectionPool: {http: {http1MaxPendingRequests: 10}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: egress.example.com}}`)
	wantWarnings(t, got,
		"SKF0001 Sidecar default/app: spec.ingress[0].tls: ",
		"SKF0001 Sidecar default/app: spec.ingress[0].connectionPool: ",
		"SKF0001 Sidecar default/app: spec.inboundConnectionPool: ",
		"SKF0001 Sidecar default/app: spec.outboundTrafficPolicy.egressProxy: ")
}
