package config

import (
	"strings"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// object builds a one-document file for kind with the given metadata and spec (flow YAML).
func object(kind, meta, spec string) string {
	info := kinds[kind]
	if meta == "" {
		meta = "{name: x}"
	}
	return "apiVersion: " + info.group + "/" + info.versions[0] + "\nkind: " + kind + "\nmetadata: " + meta + "\nspec: " + spec + "\n"
}

const (
	sePorts = "ports: [{number: 80, name: http, protocol: HTTP}]"
	vsRoute = "route: [{destination: {host: a}}]"
	gwHTTP  = "port: {number: 80, name: http, protocol: HTTP}"
)

func TestValidateValid(t *testing.T) {
	docs := []string{
		object("ServiceEntry", "", "{hosts: [a.example.com, '*.wild.example.com'], "+sePorts+", resolution: NONE, addresses: [10.0.0.0/8]}"),
		object("ServiceEntry", "", "{hosts: [db.example.com], ports: [{number: 5432, name: tcp}], resolution: DNS, endpoints: [{address: db1.example.com}, {address: 10.1.1.1}]}"),
		object("ServiceEntry", "", "{hosts: [a.local], ports: [{number: 80, name: http, protocol: http, targetPort: 8080}], resolution: STATIC, endpoints: [{address: 'unix:///var/run/a.sock'}, {address: '2001:db8::1', ports: {http: 9090}}]}"),
		object("ServiceEntry", "", "{hosts: [a.local], "+sePorts+", resolution: STATIC, workloadSelector: {labels: {app: a}}}"),
		object("ServiceEntry", "", "{hosts: ['*.example.com'], "+sePorts+", resolution: DYNAMIC_DNS}"),
		object("WorkloadEntry", "", "{address: vm.example.com, ports: {http: 8080}, labels: {app.kubernetes.io/name: a}, serviceAccount: sa}"),
		object("VirtualService", "", "{hosts: ['*'], gateways: [istio-system/ingress], http: [{"+vsRoute+"}]}"),
		object("VirtualService", "", "{hosts: [a], http: [{match: [{uri: {regex: '/a/[0-9]+'}, headers: {x-present: {}}}], redirect: {uri: /b, redirectCode: 308}}, {directResponse: {status: 503}}, {delegate: {name: d, namespace: ns}}, {route: [{destination: {host: a}, weight: 0}, {destination: {host: b}, weight: 0}], timeout: 0s}]}"),
		object("VirtualService", "", "{hosts: [a], tcp: [{route: [{destination: {host: a, port: {number: 9000}}}]}], tls: [{match: [{sniHosts: [a.example.com]}], route: [{destination: {host: a}}]}]}"),
		object("DestinationRule", "", "{host: a, subsets: [{name: all}, {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}], trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: LEAST_REQUEST}}]}}"),
		object("Gateway", "", "{servers: [{"+gwHTTP+", hosts: ['*/*', './a.example.com'], tls: {httpsRedirect: true}}, {port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], tls: {mode: PASSTHROUGH}}, {port: {number: 8443, name: mesh, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/a/sa/b]}}]}"),
		object("Sidecar", "", "{workloadSelector: {labels: {app: a}}, ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: '127.0.0.1:8080'}], egress: [{port: {number: 3306, protocol: TCP}, hosts: [db/mysql.example.com]}, {hosts: ['~/*']}]}"),
		object("PeerAuthentication", "", "{selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}"),
		object("AuthorizationPolicy", "", "{action: CUSTOM, provider: {name: ext-authz}, rules: [{to: [{operation: {paths: [/admin]}}]}]}"),
		object("AuthorizationPolicy", "", "{action: DENY, rules: [{from: [{source: {notIpBlocks: [10.0.0.0/8]}}], when: [{key: 'request.auth.claims[groups]', values: [admin]}, {key: destination.port, notValues: ['22']}]}]}"),
		object("AuthorizationPolicy", "", "{}"),
	}
	for _, doc := range docs {
		if _, err := Parse("f.yaml", []byte(doc)); err != nil {
			t.Errorf("%s\n=> %v", doc, err)
		}
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		kind, meta, spec string
		field, want      string
	}{
		// metadata
		{"WorkloadEntry", "{namespace: a}", "{address: 10.0.0.1}", "metadata.name", "required"},
		{"WorkloadEntry", "{name: Reviews}", "{address: 10.0.0.1}", "metadata.name", "invalid name"},
		{"WorkloadEntry", "{name: a, namespace: a.b}", "{address: 10.0.0.1}", "metadata.namespace", "invalid namespace"},
		{"WorkloadEntry", "{name: a, labels: {'a b': c}}", "{address: 10.0.0.1}", "metadata.labels[a b]", "invalid label key"},

		// ServiceEntry
		{"ServiceEntry", "", "{" + sePorts + "}", "spec.hosts", "at least one host is required"},
		{"ServiceEntry", "", "{hosts: ['*'], " + sePorts + "}", "spec.hosts[0]", `"*" alone is not allowed`},
		{"ServiceEntry", "", "{hosts: [a_b.example.com], " + sePorts + "}", "spec.hosts[0]", "is not a DNS label"},
		{"ServiceEntry", "", "{hosts: [a.b*.com], " + sePorts + "}", "spec.hosts[0]", "a wildcard must be the whole first label"},
		{"ServiceEntry", "", "{hosts: [a]}", "spec.ports", "at least one port is required"},
		{"ServiceEntry", "", "{hosts: [a], ports: [{number: 0, name: http}]}", "spec.ports[0].number", "must be between 1 and 65535"},
		{"ServiceEntry", "", "{hosts: [a], ports: [{number: 65536, name: http}]}", "spec.ports[0].number", "must be between 1 and 65535"},
		{"ServiceEntry", "", "{hosts: [a], ports: [{number: 80, name: a}, {number: 80, name: b}]}", "spec.ports[1].number", "duplicate port number 80 (also spec.ports[0])"},
		{"ServiceEntry", "", "{hosts: [a], ports: [{number: 80, name: a}, {number: 81, name: a}]}", "spec.ports[1].name", `duplicate port name "a"`},
		{"ServiceEntry", "", "{hosts: [a], ports: [{number: 80}]}", "spec.ports[0].name", "required"},
		{"ServiceEntry", "", "{hosts: [a], ports: [{number: 80, name: a, protocol: HTTP3}]}", "spec.ports[0].protocol", `unknown protocol "HTTP3"`},
		{"ServiceEntry", "", "{hosts: [a], ports: [{number: 80, name: a, targetPort: 70000}]}", "spec.ports[0].targetPort", "must be between 1 and 65535"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: STATIC}", "spec.endpoints", "resolution STATIC requires endpoints or a workloadSelector"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: STATIC, endpoints: [{address: 10.0.0.1}], workloadSelector: {labels: {app: a}}}", "spec.workloadSelector", "cannot be set together with spec.endpoints"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: STATIC, endpoints: [{address: a.example.com}]}", "spec.endpoints[0].address", "is not an IP address"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: DNS, endpoints: [{address: 'not a host'}]}", "spec.endpoints[0].address", "neither an IP address, a hostname nor a unix:// socket"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: STATIC, endpoints: [{address: 'unix://run/a.sock'}]}", "spec.endpoints[0].address", "absolute path"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: STATIC, endpoints: [{address: 10.0.0.1, ports: {grpc: 9090}}]}", "spec.endpoints[0].ports[grpc]", `no port named "grpc" in spec.ports`},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: STATIC, endpoints: [{address: 10.0.0.1, ports: {http: 0}}]}", "spec.endpoints[0].ports[http]", "must be between 1 and 65535"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: NONE, endpoints: [{address: 10.0.0.1}]}", "spec.endpoints", "must not be set with resolution NONE"},
		{"ServiceEntry", "", "{hosts: ['*.example.com'], " + sePorts + ", resolution: DNS}", "spec.hosts[0]", "cannot be resolved"},
		{"ServiceEntry", "", "{hosts: [a.example.com], " + sePorts + ", resolution: DYNAMIC_DNS}", "spec.hosts[0]", "only supported for wildcard hosts"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: DNS_ROUND_ROBIN, endpoints: [{address: a.example.com}, {address: b.example.com}]}", "spec.endpoints", "at most one endpoint"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: DNS, addresses: [10.0.0.0/8]}", "spec.addresses[0]", "CIDR addresses are only allowed with resolution NONE or STATIC"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", addresses: [10.0.0.300]}", "spec.addresses[0]", "invalid IP address"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", exportTo: [Bad]}", "spec.exportTo[0]", "invalid namespace"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", exportTo: ['*', ns]}", "spec.exportTo", "cannot be combined"},
		{"ServiceEntry", "", "{hosts: [a], " + sePorts + ", resolution: 17}", "spec.resolution", "unknown Resolution value 17"},

		// WorkloadEntry
		{"WorkloadEntry", "", "{labels: {app: a}}", "spec.address", "required"},
		{"WorkloadEntry", "", "{address: 10.0.0.1, ports: {http: 0}}", "spec.ports[http]", "must be between 1 and 65535"},
		{"WorkloadEntry", "", "{address: 10.0.0.1, ports: {http: 65536}}", "spec.ports[http]", "must be between 1 and 65535"},
		{"WorkloadEntry", "", "{address: 10.0.0.1, ports: {'not_a_name': 80}}", "spec.ports[not_a_name]", "invalid port name"},
		{"WorkloadEntry", "", "{address: 'unix:///a.sock', ports: {http: 80}}", "spec.ports", "not allowed with a unix:// address"},
		{"WorkloadEntry", "", "{address: 10.0.0.1, labels: {app: 'a b'}}", "spec.labels[app]", "invalid label value"},

		// VirtualService
		{"VirtualService", "", "{http: [{" + vsRoute + "}]}", "spec.hosts", "at least one host is required"},
		{"VirtualService", "", "{hosts: ['*'], http: [{" + vsRoute + "}]}", "spec.hosts[0]", "not the mesh"},
		{"VirtualService", "", "{hosts: [a]}", "spec", "at least one of http, tls or tcp routes is required"},
		{"VirtualService", "", "{hosts: [a], gateways: [a/b/c], http: [{" + vsRoute + "}]}", "spec.gateways[0]", "invalid gateway"},
		{"VirtualService", "", "{hosts: [a], http: [{name: x}]}", "spec.http[0]", "one of route, redirect, directResponse or delegate is required"},
		{"VirtualService", "", "{hosts: [a], http: [{" + vsRoute + ", redirect: {uri: /b}}]}", "spec.http[0]", "found route and redirect"},
		{"VirtualService", "", "{hosts: [a], http: [{redirect: {uri: /b}, rewrite: {uri: /c}}]}", "spec.http[0].rewrite", "cannot be used with redirect"},
		{"VirtualService", "", "{hosts: [a], http: [{route: [{destination: {subset: v1}}]}]}", "spec.http[0].route[0].destination.host", "required"},
		{"VirtualService", "", "{hosts: [a], http: [{route: [{weight: 100}]}]}", "spec.http[0].route[0].destination", "required"},
		{"VirtualService", "", "{hosts: [a], http: [{route: [{destination: {host: a}, weight: 10}, {destination: {host: b}, weight: -5}]}]}", "spec.http[0].route[1].weight", "must be >= 0"},
		{"VirtualService", "", "{hosts: [a], http: [{route: [{destination: {host: a, port: {number: 0}}}]}]}", "spec.http[0].route[0].destination.port.number", "must be between 1 and 65535"},
		{"VirtualService", "", "{hosts: [a], http: [{route: [{destination: {host: '*.example.com'}}]}]}", "spec.http[0].route[0].destination.host", "not a wildcard"},
		{"VirtualService", "", "{hosts: [a], http: [{route: [{destination: {host: a, subset: V_1}}]}]}", "spec.http[0].route[0].destination.subset", "invalid subset name"},
		{"VirtualService", "", "{hosts: [a], http: [{match: [{uri: {}}], " + vsRoute + "}]}", "spec.http[0].match[0].uri", "exactly one of exact, prefix or regex is required"},
		{"VirtualService", "", "{hosts: [a], http: [{match: [{uri: {regex: '(a'}}], " + vsRoute + "}]}", "spec.http[0].match[0].uri.regex", "invalid regular expression"},
		{"VirtualService", "", "{hosts: [a], http: [{match: [{headers: {x-a: {regex: '[z-a]'}}}], " + vsRoute + "}]}", "spec.http[0].match[0].headers[x-a].regex", "invalid regular expression"},
		{"VirtualService", "", "{hosts: [a], http: [{match: [{port: 70000}], " + vsRoute + "}]}", "spec.http[0].match[0].port", "must be between 1 and 65535"},
		{"VirtualService", "", "{hosts: [a], http: [{" + vsRoute + ", timeout: -1s}]}", "spec.http[0].timeout", "must not be negative"},
		{"VirtualService", "", "{hosts: [a], http: [{" + vsRoute + ", retries: {attempts: 3, perTryTimeout: 0s}}]}", "spec.http[0].retries.perTryTimeout", "must be positive"},
		{"VirtualService", "", "{hosts: [a], http: [{" + vsRoute + ", retries: {attempts: -1}}]}", "spec.http[0].retries.attempts", "must be >= 0"},
		{"VirtualService", "", "{hosts: [a], http: [{" + vsRoute + ", retries: {attempts: 2, retryOn: '5xx,sometimes'}}]}", "spec.http[0].retries.retryOn", `unknown retry condition "sometimes"`},
		{"VirtualService", "", "{hosts: [a], http: [{directResponse: {status: 99}}]}", "spec.http[0].directResponse.status", "must be between 200 and 599"},
		{"VirtualService", "", "{hosts: [a], http: [{redirect: {uri: /a, redirectCode: 200}}]}", "spec.http[0].redirect.redirectCode", "200 is not a redirect code"},
		{"VirtualService", "", "{hosts: [a], http: [{delegate: {namespace: ns}}]}", "spec.http[0].delegate.name", "required"},
		{"VirtualService", "", "{hosts: [a], http: [{" + vsRoute + ", rewrite: {uriRegexRewrite: {match: '(', rewrite: /}}}]}", "spec.http[0].rewrite.uriRegexRewrite.match", "invalid regular expression"},
		{"VirtualService", "", "{hosts: [a], http: [{" + vsRoute + ", fault: {abort: {httpStatus: 700}}}]}", "spec.http[0].fault.abort.httpStatus", "must be between 200 and 599"},
		{"VirtualService", "", "{hosts: [a], http: [{" + vsRoute + ", fault: {delay: {percentage: {value: 50}}}}]}", "spec.http[0].fault.delay.fixedDelay", "required"},
		{"VirtualService", "", "{hosts: [a], http: [{" + vsRoute + ", mirror: {host: b}, mirrorPercentage: {value: 150}}]}", "spec.http[0].mirrorPercentage.value", "must be between 0 and 100"},
		{"VirtualService", "", "{hosts: [a], tcp: [{match: [{port: 80}]}]}", "spec.tcp[0].route", "at least one destination is required"},
		{"VirtualService", "", "{hosts: [a], tls: [{match: [{port: 443}], route: [{destination: {host: a}}]}]}", "spec.tls[0].match[0].sniHosts", "at least one SNI host is required"},

		// DestinationRule
		{"DestinationRule", "", "{subsets: [{name: v1}]}", "spec.host", "required"},
		{"DestinationRule", "", "{host: a, subsets: [{labels: {version: v1}}]}", "spec.subsets[0].name", "required"},
		{"DestinationRule", "", "{host: a, subsets: [{name: v1}, {name: v1, labels: {version: v2}}]}", "spec.subsets[1].name", `duplicate subset name "v1" (also spec.subsets[0])`},
		{"DestinationRule", "", "{host: a, trafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}}", "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "must be between 0 and 100"},
		{"DestinationRule", "", "{host: a, trafficPolicy: {outlierDetection: {interval: 0s}}}", "spec.trafficPolicy.outlierDetection.interval", "must be positive"},
		{"DestinationRule", "", "{host: a, trafficPolicy: {tls: {mode: MUTUAL}}}", "spec.trafficPolicy.tls.clientCertificate", "required with mode MUTUAL"},
		{"DestinationRule", "", "{host: a, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, caCertificates: /ca.pem}}}", "spec.trafficPolicy.tls", "mode ISTIO_MUTUAL uses Istio's certificates"},
		{"DestinationRule", "", "{host: a, trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}}", "spec.trafficPolicy.portLevelSettings[0].port", "required"},
		{"DestinationRule", "", "{host: a, trafficPolicy: {portLevelSettings: [{port: {number: 80}}, {port: {number: 80}}]}}", "spec.trafficPolicy.portLevelSettings[1].port.number", "duplicate port 80"},
		{"DestinationRule", "", "{host: a, trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}}", "spec.trafficPolicy.connectionPool.tcp.maxConnections", "must be >= 0"},
		{"DestinationRule", "", "{host: a, trafficPolicy: {loadBalancer: {simple: 42}}}", "spec.trafficPolicy.loadBalancer.simple", "unknown SimpleLB value 42"},
		{"DestinationRule", "", "{host: a, subsets: [{name: v1, trafficPolicy: {tls: {mode: MUTUAL, credentialName: c}, tunnel: {targetPort: 8080}}}]}", "spec.subsets[0].trafficPolicy.tunnel.targetHost", "required"},

		// Gateway
		{"Gateway", "", "{selector: {istio: ingressgateway}}", "spec.servers", "at least one server is required"},
		{"Gateway", "", "{servers: [{hosts: ['*']}]}", "spec.servers[0].port", "required"},
		{"Gateway", "", "{servers: [{" + gwHTTP + "}]}", "spec.servers[0].hosts", "at least one host is required"},
		{"Gateway", "", "{servers: [{port: {number: 80, name: http, protocol: SPDY}, hosts: ['*']}]}", "spec.servers[0].port.protocol", `unknown protocol "SPDY"`},
		{"Gateway", "", "{servers: [{port: {number: 80, name: http}, hosts: ['*']}]}", "spec.servers[0].port.protocol", "required"},
		{"Gateway", "", "{servers: [{port: {number: 80, protocol: HTTP}, hosts: ['*']}]}", "spec.servers[0].port.name", "required"},
		{"Gateway", "", "{servers: [{port: {number: 0, name: http, protocol: HTTP}, hosts: ['*']}]}", "spec.servers[0].port.number", "must be between 1 and 65535"},
		{"Gateway", "", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]}", "spec.servers[0].tls", "required for protocol HTTPS"},
		{"Gateway", "", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE}}]}", "spec.servers[0].tls.serverCertificate", "required with mode SIMPLE"},
		{"Gateway", "", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}}]}", "spec.servers[0].tls.caCertificates", "required with mode MUTUAL"},
		{"Gateway", "", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, credentialName: c}}]}", "spec.servers[0].tls.credentialName", "must not be set with mode ISTIO_MUTUAL"},
		{"Gateway", "", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, serverCertificate: /c}}]}", "spec.servers[0].tls.serverCertificate", "must not be set with mode ISTIO_MUTUAL"},
		{"Gateway", "", "{servers: [{" + gwHTTP + ", hosts: ['Bad_NS/a.example.com']}]}", "spec.servers[0].hosts[0]", `invalid namespace "Bad_NS"`},
		{"Gateway", "", "{servers: [{" + gwHTTP + ", hosts: ['*']}, {port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}]}", "spec.servers[1].port.name", "port names must be unique"},

		// Sidecar
		{"Sidecar", "", "{egress: [{hosts: [a.example.com]}]}", "spec.egress[0].hosts[0]", "must be of the form namespace/host"},
		{"Sidecar", "", "{egress: [{hosts: ['ns/a_b']}]}", "spec.egress[0].hosts[0]", "is not a DNS label"},
		{"Sidecar", "", "{egress: [{port: {number: 80, protocol: HTTP}}]}", "spec.egress[0].hosts", "at least one host is required"},
		{"Sidecar", "", "{egress: [{hosts: ['./*']}, {hosts: ['*/*']}]}", "spec.egress[1].port", "only one egress listener may omit the port"},
		{"Sidecar", "", "{egress: [{port: {number: 99999, protocol: TCP}, hosts: ['./*']}]}", "spec.egress[0].port.number", "must be between 1 and 65535"},
		{"Sidecar", "", "{egress: [{bind: not-an-ip, hosts: ['./*']}]}", "spec.egress[0].bind", "neither an IP address"},
		{"Sidecar", "", "{ingress: [{defaultEndpoint: '127.0.0.1:8080'}]}", "spec.ingress[0].port", "required"},
		{"Sidecar", "", "{ingress: [{port: {number: 80, protocol: HTTP}, defaultEndpoint: '10.0.0.1:8080'}]}", "spec.ingress[0].defaultEndpoint", "must be a loopback"},
		{"Sidecar", "", "{ingress: [{port: {number: 80}}]}", "spec.ingress[0].port.protocol", "required"},

		// PeerAuthentication
		{"PeerAuthentication", "", "{portLevelMtls: {8080: {mode: DISABLE}}}", "spec.portLevelMtls", "requires a selector with matchLabels"},
		{"PeerAuthentication", "", "{selector: {matchLabels: {}}, portLevelMtls: {8080: {mode: DISABLE}}}", "spec.portLevelMtls", "requires a selector with matchLabels"},
		{"PeerAuthentication", "", "{selector: {matchLabels: {app: a}}, portLevelMtls: {0: {mode: DISABLE}}}", "spec.portLevelMtls[0]", "must be between 1 and 65535"},
		{"PeerAuthentication", "", "{mtls: {mode: 7}}", "spec.mtls.mode", "unknown Mode value 7"},

		// AuthorizationPolicy
		{"AuthorizationPolicy", "", "{action: ALLOW, provider: {name: ext}}", "spec.provider", "only allowed with action CUSTOM, not ALLOW"},
		{"AuthorizationPolicy", "", "{action: CUSTOM, rules: [{}]}", "spec.provider.name", "required with action CUSTOM"},
		{"AuthorizationPolicy", "", "{action: 9}", "spec.action", "unknown Action value 9"},
		{"AuthorizationPolicy", "", "{selector: {matchLabels: {app: a}}, targetRef: {kind: Service, name: a}}", "spec", "only one of selector, targetRef or targetRefs"},
		{"AuthorizationPolicy", "", "{rules: [{from: [{source: {}}]}]}", "spec.rules[0].from[0].source", "must set at least one field"},
		{"AuthorizationPolicy", "", "{rules: [{from: [{}]}]}", "spec.rules[0].from[0].source", "required"},
		{"AuthorizationPolicy", "", "{rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]}", "spec.rules[0].from[0].source.ipBlocks[0]", "invalid CIDR"},
		{"AuthorizationPolicy", "", "{rules: [{from: [{source: {principals: ['']}}]}]}", "spec.rules[0].from[0].source.principals[0]", "must not be empty"},
		{"AuthorizationPolicy", "", "{rules: [{from: [{source: {serviceAccounts: [ns/sa], namespaces: [ns]}}]}]}", "spec.rules[0].from[0].source", "serviceAccounts cannot be combined"},
		{"AuthorizationPolicy", "", "{rules: [{to: [{operation: {ports: [http]}}]}]}", "spec.rules[0].to[0].operation.ports[0]", `"http" is not a port number`},
		{"AuthorizationPolicy", "", "{rules: [{to: [{operation: {}}]}]}", "spec.rules[0].to[0].operation", "must set at least one field"},
		{"AuthorizationPolicy", "", "{rules: [{when: [{key: request.color, values: [red]}]}]}", "spec.rules[0].when[0].key", `unknown key "request.color"`},
		{"AuthorizationPolicy", "", "{rules: [{when: [{key: 'request.headers[]', values: [a]}]}]}", "spec.rules[0].when[0].key", "unknown key"},
		{"AuthorizationPolicy", "", "{rules: [{when: [{key: source.ip}]}]}", "spec.rules[0].when[0]", "at least one of values or notValues is required"},
		{"AuthorizationPolicy", "", "{rules: [{when: [{key: source.ip, values: [nowhere]}]}]}", "spec.rules[0].when[0].values[0]", "invalid IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.kind+" "+tt.field+" "+tt.want, func(t *testing.T) {
			doc := object(tt.kind, tt.meta, tt.spec)
			_, err := Parse("f.yaml", []byte(doc))
			errs := Errors(err)
			for _, e := range errs {
				if e.Field == tt.field && strings.Contains(e.Err.Error(), tt.want) {
					if e.Kind != tt.kind || e.File != "f.yaml" || e.Doc != 0 {
						t.Errorf("error not located: %#v", e)
					}
					if !strings.Contains(e.Error(), tt.field+": ") {
						t.Errorf("message does not name the field: %s", e)
					}
					return
				}
			}
			t.Errorf("%s\nwant %s: ...%s...\ngot  %v", doc, tt.field, tt.want, err)
		})
	}
}

// TestValidateBuiltObjects covers objects made in code rather than decoded: no TypeMeta, nil
// entries in lists, and nothing set at all. Validate must report, not panic.
func TestValidateBuiltObjects(t *testing.T) {
	vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}}
	vs.Spec.Hosts = []string{"a"}
	vs.Spec.Http = append(vs.Spec.Http, nil)
	err := Validate(vs)
	errs := Errors(err)
	if len(errs) == 0 || errs[0].Kind != "VirtualService" || errs[0].Doc != -1 {
		t.Fatalf("got %v", err)
	}
	if want := "VirtualService ns/a: spec.http[0]: must not be null"; errs[0].Error() != want {
		t.Errorf("got %q, want %q", errs[0].Error(), want)
	}
	for _, o := range NewSet().Objects() {
		t.Errorf("empty set has %v", o)
	}
	if err := Validate(nil); err == nil {
		t.Error("nil object validated")
	}
	for kind, info := range kinds {
		o, _ := info.newObject()
		if err := Validate(o); err == nil {
			t.Errorf("empty %s validated", kind)
		}
	}
}

// TestParseMeshConfig: a mesh configuration applies over Skiff's defaults as istiod's does,
// and its mistakes name the field.
func TestParseMeshConfig(t *testing.T) {
	base := DefaultMeshConfig(true)
	m, err := ParseMeshConfig([]byte(`
accessLogFile: /dev/stdout
accessLogEncoding: JSON
defaultProviders:
  tracing: [otel]
extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}
- name: envoy
  envoyFileAccessLog: {path: /tmp/access.log}
`), base)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.GetDefaultProviders().GetMetrics(); len(got) != 1 || got[0] != PrometheusProvider {
		t.Errorf("defaultProviders.metrics %v: a file that sets only tracing keeps the default's", got)
	}
	if m.GetAccessLogFile() != "/dev/stdout" || m.GetRootNamespace() != DefaultRootNamespace || len(m.GetExtensionProviders()) != 3 {
		t.Errorf("merged %v", m)
	}
	for _, p := range m.GetExtensionProviders() {
		if p.GetName() == EnvoyProvider && p.GetEnvoyFileAccessLog().GetPath() != "/tmp/access.log" {
			t.Errorf("envoy provider not replaced: %v", p)
		}
	}
	if len(base.GetDefaultProviders().GetTracing()) != 0 || len(base.GetExtensionProviders()) != 2 {
		t.Error("ParseMeshConfig modified its base")
	}
	for doc, want := range map[string]string{
		"accessLogEncoding: XML\n": "accessLogEncoding",
		"extensionProviders: [{name: z, zipkin: {service: zipkin.example.com}}]\n":          "extensionProviders[0].zipkin.port",
		"extensionProviders: [{name: o, opentelemetry: {service: 'bad host', port: 4317}}]": "extensionProviders[0].opentelemetry.service",
		"defaultProviders: {tracing: [missing]}\n":                                          "defaultProviders.tracing[0]",
		"enableTracingg: true\n":                      "enableTracingg",
		"defaultConfig: {tracing: {sampling: 101}}\n": "defaultConfig.tracing.sampling",
	} {
		if _, err := ParseMeshConfig([]byte(doc), base); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %s", doc, err, want)
		}
	}
}
