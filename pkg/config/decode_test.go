package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
)

func TestDecodeGoodFile(t *testing.T) {
	data, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Parse("testdata/good.yaml", data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	set := NewSet(objs...)
	if got := set.Len(); got != 8 {
		t.Fatalf("got %d objects, want 8", got)
	}
	for _, o := range objs {
		gvk := o.GetObjectKind().GroupVersionKind()
		if gvk.Version != "v1" || gvk.Kind == "" {
			t.Errorf("%s/%s: TypeMeta %v, want version v1", o.GetNamespace(), o.GetName(), gvk)
		}
	}

	se := set.ServiceEntries[0]
	if se.Namespace != "default" || se.APIVersion != "networking.istio.io/v1" || se.Kind != "ServiceEntry" {
		t.Errorf("ServiceEntry meta: %s %s %s", se.Namespace, se.APIVersion, se.Kind)
	}
	if se.Spec.Resolution != networking.ServiceEntry_STATIC || len(se.Spec.Endpoints) != 2 || se.Spec.Endpoints[1].Ports["http"] != 9081 {
		t.Errorf("ServiceEntry spec not decoded: %v", &se.Spec)
	}

	vs := set.VirtualServices[0]
	if vs.Namespace != "bookinfo" || vs.Labels["app"] != "reviews" {
		t.Errorf("VirtualService meta: %s %v", vs.Namespace, vs.Labels)
	}
	if got := vs.Spec.Http[0].Match[0].Headers["end-user"].GetExact(); got != "jason" {
		t.Errorf("header match: %q", got)
	}
	// Go-syntax durations, as Istio accepts them.
	if got := vs.Spec.Http[0].Retries.PerTryTimeout.AsDuration(); got != 500*time.Millisecond {
		t.Errorf("perTryTimeout: %v", got)
	}
	if got := vs.Spec.Http[1].Route[0].Weight; got != 90 {
		t.Errorf("weight: %d", got)
	}
	if got := set.DestinationRules[0].Spec.TrafficPolicy.OutlierDetection.GetConsecutive_5XxErrors().GetValue(); got != 5 {
		t.Errorf("consecutive5xxErrors: %d", got)
	}
	if got := set.AuthorizationPolicies[0].Spec.Rules[0].To[0].Operation.Ports; len(got) != 1 || got[0] != "9080" {
		t.Errorf("ports: %v", got)
	}
}

// TestDecodeVersions checks that every accepted apiVersion of every kind becomes the v1 type.
func TestDecodeVersions(t *testing.T) {
	specs := map[string]string{
		"ServiceEntry":        "hosts: [a.example.com]\n  ports: [{number: 80, name: http}]",
		"WorkloadEntry":       "address: 10.0.0.1",
		"VirtualService":      "hosts: [a]\n  http: [{route: [{destination: {host: a}}]}]",
		"DestinationRule":     "host: a",
		"Gateway":             "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]",
		"Sidecar":             "egress: [{hosts: ['./*']}]",
		"PeerAuthentication":  "mtls: {mode: PERMISSIVE}",
		"AuthorizationPolicy": "action: DENY",
		"Telemetry":           "tracing: [{randomSamplingPercentage: 10}]",
	}
	for kind, info := range kinds {
		for _, version := range info.versions {
			apiVersion := info.group + "/" + version
			t.Run(apiVersion+"/"+kind, func(t *testing.T) {
				doc := "apiVersion: " + apiVersion + "\nkind: " + kind + "\nmetadata: {name: x, namespace: ns}\nspec:\n  " + specs[kind] + "\n"
				objs, err := Parse("f.yaml", []byte(doc))
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if len(objs) != 1 {
					t.Fatalf("got %d objects", len(objs))
				}
				o := objs[0]
				if KindOf(o) != kind || o.GetObjectKind().GroupVersionKind().GroupVersion().String() != info.group+"/v1" {
					t.Errorf("got %v", o.GetObjectKind().GroupVersionKind())
				}
				var ok bool
				switch kind {
				case "ServiceEntry":
					_, ok = o.(*networkingv1.ServiceEntry)
				case "WorkloadEntry":
					_, ok = o.(*networkingv1.WorkloadEntry)
				case "VirtualService":
					_, ok = o.(*networkingv1.VirtualService)
				case "DestinationRule":
					_, ok = o.(*networkingv1.DestinationRule)
				case "Gateway":
					_, ok = o.(*networkingv1.Gateway)
				case "Sidecar":
					_, ok = o.(*networkingv1.Sidecar)
				case "PeerAuthentication":
					_, ok = o.(*securityv1.PeerAuthentication)
				case "AuthorizationPolicy":
					_, ok = o.(*securityv1.AuthorizationPolicy)
				case "Telemetry":
					_, ok = o.(*telemetryv1.Telemetry)
				}
				if !ok {
					t.Errorf("decoded to %T", o)
				}
			})
		}
	}
}

const vsHeader = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n"

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name  string
		data  string
		doc   int
		field string
		want  string // in the error message
	}{
		{
			name:  "unknown field deep in spec",
			data:  vsHeader + "spec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {hots: a}\n",
			field: "spec.http[0].route[0].destination.hots",
			want:  `unknown field "hots"`,
		},
		{
			name:  "protobuf field name instead of JSON name",
			data:  vsHeader + "spec:\n  hosts: [a]\n  export_to: [.]\n",
			field: "spec.export_to",
			want:  `did you mean "exportTo"`,
		},
		{
			name:  "unknown field in map value",
			data:  vsHeader + "spec:\n  hosts: [a]\n  http:\n  - match:\n    - headers: {x-user: {exactly: a}}\n",
			field: "spec.http[0].match[0].headers[x-user].exactly",
			want:  "unknown field",
		},
		{
			name:  "unknown field in metadata",
			data:  "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  lables: {a: b}\nspec: {}\n",
			field: "metadata",
			want:  `unknown field "lables"`,
		},
		{
			name:  "case matters in metadata",
			data:  "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  Name: reviews\nspec: {}\n",
			field: "metadata",
			want:  `unknown field "Name"`,
		},
		{
			name: "unknown top-level field",
			data: vsHeader + "spec: {}\nspecs: {}\n",
			want: `unknown field "specs"`,
		},
		{
			name:  "unknown kind",
			data:  "apiVersion: networking.istio.io/v1\nkind: EnvoyFilter\nmetadata: {name: x}\n",
			field: "apiVersion",
			want:  `unsupported apiVersion/kind "networking.istio.io/v1" "EnvoyFilter"; supported: networking.istio.io/{v1,v1beta1,v1alpha3} DestinationRule, Gateway`,
		},
		{
			name:  "kind in the wrong group",
			data:  "apiVersion: security.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n",
			field: "apiVersion",
			want:  "unsupported apiVersion/kind",
		},
		{
			name:  "unknown version",
			data:  "apiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: x}\n",
			field: "apiVersion",
			want:  "security.istio.io/{v1,v1beta1} AuthorizationPolicy, PeerAuthentication",
		},
		{
			name: "missing kind",
			data: "apiVersion: networking.istio.io/v1\nmetadata: {name: x}\n",
			want: "apiVersion and kind are required",
		},
		{
			name: "bad YAML in the third document",
			data: vsHeader + "spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n---\n---\n" +
				"apiVersion: v1\nkind: [\n",
			doc:  2,
			want: "invalid YAML: yaml: line 9: did not find expected node content",
		},
		{
			name: "duplicate YAML key",
			data: vsHeader + "spec:\n  hosts: [a]\n  hosts: [b]\n",
			want: `invalid YAML: yaml: unmarshal errors: line 7: key "hosts" already set in map`,
		},
		{
			name: "not a mapping",
			data: "- a\n- b\n",
			want: "document is not a YAML mapping",
		},
		{
			name:  "unknown enum name",
			data:  "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\nspec: {resolution: STATIK}\n",
			field: "spec.resolution",
			want:  `unknown value "STATIK": must be one of NONE, STATIC, DNS`,
		},
		{
			name:  "string instead of list",
			data:  vsHeader + "spec:\n  hosts: a\n",
			field: "spec.hosts",
			want:  "must be a list",
		},
		{
			name:  "number instead of string",
			data:  vsHeader + "spec:\n  hosts: [a]\n  http: [{route: [{destination: {host: 7}}]}]\n",
			field: "spec.http[0].route[0].destination.host",
			want:  "must be a string",
		},
		{
			name:  "list instead of object",
			data:  vsHeader + "spec:\n  hosts: [a]\n  http: [{route: [{destination: [a]}]}]\n",
			field: "spec.http[0].route[0].destination",
			want:  "must be an object",
		},
		{
			name:  "number out of range",
			data:  vsHeader + "spec:\n  hosts: [a]\n  http: [{route: [{destination: {host: a, port: {number: 99999999999}}}]}]\n",
			field: "spec.http[0].route[0].destination.port.number",
			want:  "99999999999 is out of range",
		},
		{
			name:  "bad duration",
			data:  vsHeader + "spec:\n  hosts: [a]\n  http: [{timeout: soon, route: [{destination: {host: a}}]}]\n",
			field: "spec.http[0].timeout",
			want:  `invalid duration "soon"`,
		},
		{
			name:  "two match types",
			data:  vsHeader + "spec:\n  hosts: [a]\n  http: [{match: [{uri: {exact: /a, prefix: /b}}]}]\n",
			field: "spec.http[0].match[0].uri.prefix",
			want:  `cannot be set together with "exact": only one of exact, prefix, regex may be set`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("dir/bad.yaml", []byte(tt.data))
			errs := Errors(err)
			if len(errs) == 0 {
				t.Fatalf("no error (err=%v)", err)
			}
			e := errs[0]
			if e.File != "dir/bad.yaml" || e.Doc != tt.doc {
				t.Errorf("File, Doc = %q, %d; want dir/bad.yaml, %d", e.File, e.Doc, tt.doc)
			}
			if e.Field != tt.field {
				t.Errorf("Field = %q, want %q", e.Field, tt.field)
			}
			msg := e.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			if !strings.HasPrefix(msg, "dir/bad.yaml: document ") {
				t.Errorf("error %q does not name the file and document", msg)
			}
		})
	}
}

func TestDecodeDocuments(t *testing.T) {
	good := "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s}\nspec: {address: 10.0.0.1}\n"
	name := func(n string) string { return strings.Replace(good, "%s", n, 1) }
	tests := []struct {
		name  string
		data  string
		names []string
		docs  []int
	}{
		{"empty file", "", nil, nil},
		{"comments only", "# nothing here\n\n# at all\n", nil, nil},
		{"single document without separator", name("a"), []string{"a"}, []int{0}},
		{"leading separator", "---\n" + name("a"), []string{"a"}, []int{0}},
		{"comment preamble", "# header\n---\n" + name("a") + "---\n" + name("b"), []string{"a", "b"}, []int{0, 1}},
		{"empty and comment documents count", name("a") + "---\n---\n# c\n---\n" + name("b") + "---\n", []string{"a", "b"}, []int{0, 3}},
		{"CRLF", strings.ReplaceAll("---\r\n"+name("a")+"---\r\n"+name("b"), "\n", "\r\n"), []string{"a", "b"}, []int{0, 1}},
		{"separator with comment", name("a") + "--- # next\n" + name("b"), []string{"a", "b"}, []int{0, 1}},
		{"byte order mark", "\xef\xbb\xbf" + name("a"), []string{"a"}, []int{0}},
		{"null document", "~\n---\n" + name("a"), []string{"a"}, []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, errs := decodeFile("f.yaml", []byte(tt.data))
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			var names []string
			var docs []int
			for _, e := range entries {
				names = append(names, e.obj.GetName())
				docs = append(docs, e.doc)
			}
			if strings.Join(names, ",") != strings.Join(tt.names, ",") || len(docs) != len(tt.docs) {
				t.Fatalf("got %v at %v, want %v at %v", names, docs, tt.names, tt.docs)
			}
			for i := range docs {
				if docs[i] != tt.docs[i] {
					t.Errorf("got documents %v, want %v", docs, tt.docs)
				}
			}
		})
	}
}

func TestDecodeKeepsGoodDocuments(t *testing.T) {
	data := "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\nspec: {address: 10.0.0.1}\n" +
		"---\nkind: Nonsense\napiVersion: x/v1\n---\n" +
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: b}\nspec: {address: 10.0.0.2, bogus: 1}\n"
	objs, err := Decode("f.yaml", []byte(data))
	if len(objs) != 1 || objs[0].GetName() != "a" {
		t.Errorf("got %d objects", len(objs))
	}
	errs := Errors(err)
	if len(errs) != 2 || errs[0].Doc != 1 || errs[1].Doc != 2 || errs[1].Name != "b" || errs[1].Field != "spec.bogus" {
		t.Errorf("errors: %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Doc != 1 {
		t.Errorf("errors.As: %v", e)
	}
}

func TestParseDuplicateInFile(t *testing.T) {
	doc := "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\nspec: {address: 10.0.0.1}\n"
	// The same name in another version of the kind is still the same object.
	other := strings.Replace(doc, "/v1\n", "/v1beta1\n", 1)
	_, err := Parse("f.yaml", []byte(doc+"---\n"+other))
	errs := Errors(err)
	if len(errs) != 1 || errs[0].Doc != 1 || !strings.Contains(errs[0].Error(), "duplicate WorkloadEntry default/a: also defined in document 0") {
		t.Fatalf("got %v", err)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{File: "examples/bad.yaml", Doc: 2, Kind: "VirtualService", Namespace: "default", Name: "reviews", Field: "spec.http[0].route[1].weight", Err: errors.New("must be >= 0")},
			"examples/bad.yaml: document 2 (VirtualService default/reviews): spec.http[0].route[1].weight: must be >= 0"},
		{&Error{File: "a.yaml", Doc: 0, Err: errors.New("invalid YAML")}, "a.yaml: document 0: invalid YAML"},
		{&Error{File: "a.yaml", Doc: 1, Kind: "Gateway", Err: errors.New("x")}, "a.yaml: document 1 (Gateway): x"},
		{&Error{File: "dir", Doc: -1, Err: errors.New("unreadable")}, "dir: unreadable"},
		{&Error{Doc: -1, Kind: "Sidecar", Namespace: "ns", Name: "s", Field: "spec", Err: errors.New("x")}, "Sidecar ns/s: spec: x"},
		{&Error{Doc: -1}, "invalid"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
	inner := errors.New("inner")
	if !errors.Is(&Error{Err: inner}, inner) {
		t.Error("Unwrap does not reach the cause")
	}
}
