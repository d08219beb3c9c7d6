package config

import (
	"os"
	"testing"
)

// FuzzDecode feeds arbitrary bytes through decoding and validation, which must never panic
// and must always say where a problem is.
func FuzzDecode(f *testing.F) {
	if data, err := os.ReadFile("testdata/good.yaml"); err == nil {
		f.Add(data)
	}
	seeds := []string{
		"",
		"---\n---\n",
		"# only a comment\n",
		workload("a", "10.0.0.1"),
		object("VirtualService", "", "{hosts: [a], http: [{match: [{uri: {regex: '^/a'}, headers: {x: {}}}], route: [{destination: {host: a, port: {number: 80}}, weight: 100}], timeout: 1m, retries: {attempts: 2, perTryTimeout: 100ms}}]}"),
		object("ServiceEntry", "", "{hosts: ['*.a'], ports: [{number: 80, name: http}], resolution: DNS, endpoints: [{address: 'unix:///s', ports: {http: 1}}]}"),
		object("DestinationRule", "{name: a, namespace: b, labels: {x: y}}", "{host: a, subsets: [{name: v1}], trafficPolicy: {portLevelSettings: [{port: {number: 1}}]}}"),
		object("PeerAuthentication", "", "{selector: {matchLabels: {a: b}}, portLevelMtls: {80: {mode: STRICT}}}"),
		object("AuthorizationPolicy", "", "{action: CUSTOM, provider: {name: p}, rules: [{when: [{key: 'request.headers[x]', values: [a]}]}]}"),
		object("Sidecar", "", "{ingress: [{port: {number: 80, protocol: HTTP}, defaultEndpoint: 'unix:///a'}], egress: [{hosts: ['./*']}]}"),
		object("Gateway", "", "{servers: [{port: {number: 443, name: h, protocol: HTTPS}, hosts: ['ns/*'], tls: {mode: MUTUAL, credentialName: c}}]}"),
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: &m {name: a}\nspec: {hosts: *m}\n",
		"--- {apiVersion: v1, kind: X}\n",
		"a: [\n---\nkind: {}\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Parse("fuzz.yaml", data)
		for _, e := range Errors(err) {
			if e.File != "fuzz.yaml" || e.Doc < 0 || e.Err == nil || e.Error() == "" {
				t.Fatalf("unlocated error: %#v", e)
			}
		}
		for _, o := range objs {
			if o.GetName() == "" && err == nil {
				t.Fatalf("object without a name passed validation: %v", o)
			}
			_ = KindOf(o)
		}
		_ = NewSet(objs...).Objects()
	})
}
