package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/inject"
)

// The objects of the tests, as YAML a user would write.
const (
	goodVirtualService = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews, subset: v1}}]
`
	badRegexVirtualService = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {regex: "/api/(v1"}}]
    route: [{destination: {host: reviews}}]
`
	// delegate loads but is not served: a warning, SKF0001.
	delegateVirtualService = `apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - delegate: {name: reviews-routes}
`
	envoyFilter = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua, namespace: bookinfo}
spec: {configPatches: []}
`
	emptyGateway = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: skiff-invalid-gateway, namespace: istio-system, labels: {istio.io/rev: skiff}}
spec: {}
`
)

// validationReview is an AdmissionReview of op on the object in objectYAML, as the API server
// sends it (the object as JSON).
func validationReview(t testing.TB, op admissionv1.Operation, objectYAML string) []byte {
	t.Helper()
	var raw []byte
	if objectYAML != "" {
		var err error
		if raw, err = yaml.YAMLToJSON([]byte(objectYAML)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "uid-7", Namespace: "bookinfo", Operation: op,
			Kind:     metav1.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "VirtualService"},
			Resource: metav1.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"},
			Object:   runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func quietHandler() *validationHandler {
	return &validationHandler{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// TestValidateReview: the webhook's decisions, and that a refusal carries the folder
// loader's own message for the same object, less the file and document.
func TestValidateReview(t *testing.T) {
	_, loaderErr := config.Parse("vs.yaml", []byte(badRegexVirtualService))
	loaderMsg := config.Errors(loaderErr)[0].Error()
	_, wantMsg, _ := strings.Cut(loaderMsg, "document 0 (") // "VirtualService bookinfo/reviews): spec...."
	wantMsg = strings.Replace(wantMsg, ")", "", 1)
	if !strings.Contains(wantMsg, "spec.http[0].match[0].uri.regex") {
		t.Fatalf("the loader says %q: want it to name the regex field", loaderMsg)
	}

	for name, tc := range map[string]struct {
		op          admissionv1.Operation
		object      string
		allowed     bool
		code        int32
		message     string // in the refusal
		warning     string // in a warning
		noWarnings  bool
		subresource string
	}{
		"valid":                                 {op: admissionv1.Create, object: goodVirtualService, allowed: true, noWarnings: true},
		"valid update":                          {op: admissionv1.Update, object: goodVirtualService, allowed: true, noWarnings: true},
		"invalid regex":                         {op: admissionv1.Create, object: badRegexVirtualService, code: 422, message: "configuration is invalid: " + wantMsg},
		"invalid regex, update":                 {op: admissionv1.Update, object: badRegexVirtualService, code: 422, message: "spec.http[0].match[0].uri.regex"},
		"gateway without servers":               {op: admissionv1.Create, object: emptyGateway, code: 422, message: "Gateway istio-system/skiff-invalid-gateway: spec.servers: at least one server is required"},
		"delete":                                {op: admissionv1.Delete, object: badRegexVirtualService, allowed: true},
		"delete without an object":              {op: admissionv1.Delete, allowed: true},
		"finalizers of an object being deleted": {op: admissionv1.Update, object: strings.Replace(badRegexVirtualService, "namespace: bookinfo}", "namespace: bookinfo, deletionTimestamp: \"2026-01-02T03:04:05Z\", finalizers: []}", 1), allowed: true},
		"status subresource":                    {op: admissionv1.Update, object: badRegexVirtualService, subresource: "status", allowed: true},
		"not served: a warning":                 {op: admissionv1.Create, object: delegateVirtualService, allowed: true, warning: "SKF0001 VirtualService bookinfo/reviews: spec.http[0].delegate"},
		"a kind pilot does not read":            {op: admissionv1.Create, object: envoyFilter, allowed: true, warning: "pilot does not read networking.istio.io/v1alpha3 EnvoyFilter"},
		"no object":                             {op: admissionv1.Create, code: 400, message: "request.object is empty"},
		"unknown field":                         {op: admissionv1.Create, object: goodVirtualService + "  tcpRoutes: []\n", code: 422, message: `spec.tcpRoutes: unknown field`},
		"unknown top-level field":               {op: admissionv1.Create, object: goodVirtualService + "extra: 1\n", code: 422, message: `unknown field "extra"`},
		"a v1 List, not read by pilot":          {op: admissionv1.Create, object: "apiVersion: v1\nkind: List\nitems: []\n", allowed: true},
		"no apiVersion":                         {op: admissionv1.Create, object: "kind: Gateway\n", code: 400, message: "no apiVersion or kind"},
		"object is not a mapping":               {op: admissionv1.Create, object: "[1, 2]", code: 400, message: "cannot decode configuration"},
		"wrong type of a spec field":            {op: admissionv1.Create, object: strings.Replace(goodVirtualService, "hosts: [reviews]", "hosts: reviews", 1), code: 422, message: "spec.hosts"},
		"metadata that does not match":          {op: admissionv1.Create, object: strings.Replace(goodVirtualService, "name: reviews,", "name: Reviews,", 1), code: 422, message: "metadata.name"},
	} {
		t.Run(name, func(t *testing.T) {
			body := validationReview(t, tc.op, tc.object)
			if tc.subresource != "" {
				body = bytes.Replace(body, []byte(`"operation"`), []byte(`"subResource":"`+tc.subresource+`","operation"`), 1)
			}
			out, err := quietHandler().review(body)
			if err != nil {
				t.Fatalf("review: %v", err)
			}
			r := out.Response
			if r == nil || r.UID != "uid-7" || out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
				t.Fatalf("review %+v: want an admission.k8s.io/v1 AdmissionReview answering uid-7", out)
			}
			if r.Allowed != tc.allowed {
				t.Fatalf("allowed = %v, want %v (result %+v)", r.Allowed, tc.allowed, r.Result)
			}
			if !tc.allowed {
				if r.Result == nil || r.Result.Code != tc.code || !strings.Contains(r.Result.Message, tc.message) {
					t.Fatalf("result %+v: want code %d and a message containing %q", r.Result, tc.code, tc.message)
				}
			}
			if tc.warning != "" && !strings.Contains(strings.Join(r.Warnings, "\n"), tc.warning) {
				t.Errorf("warnings %q: want one containing %q", r.Warnings, tc.warning)
			}
			if tc.noWarnings && len(r.Warnings) > 0 {
				t.Errorf("warnings %q: want none", r.Warnings)
			}
		})
	}
}

// TestValidateMalformed: bodies that are no AdmissionReview get a 4xx HTTP answer saying why,
// over the webhook's HTTP handler.
func TestValidateMalformed(t *testing.T) {
	for name, tc := range map[string]struct {
		method, body string
		code         int
		want         string
	}{
		"not JSON":        {"POST", "{", 400, "decoding the AdmissionReview"},
		"empty":           {"POST", "", 400, "decoding the AdmissionReview"},
		"v1beta1":         {"POST", `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}`, 400, "want admission.k8s.io/v1 AdmissionReview"},
		"no request":      {"POST", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, 400, "without a request"},
		"no uid":          {"POST", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`, 400, "without a uid"},
		"object not JSON": {"POST", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":"x"}}`, 200, `"allowed":false`},
		"GET":             {"GET", "", 405, "want POST"},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, ValidatePath, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			quietHandler().ServeHTTP(w, r)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
				t.Errorf("%d %q: want %d with %q", w.Code, w.Body.String(), tc.code, tc.want)
			}
		})
	}
	if w := httptest.NewRecorder(); true {
		r := httptest.NewRequest("POST", ValidatePath, bytes.NewReader(validationReview(t, admissionv1.Create, goodVirtualService)))
		r.Header.Set("Content-Type", "text/plain")
		quietHandler().ServeHTTP(w, r)
		if w.Code != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type text/plain: %d %q, want 415", w.Code, w.Body.String())
		}
	}
}

// FuzzValidateReview feeds arbitrary bodies to the validation webhook. Whatever arrives it must
// not panic: it rejects the body as an *inject.RequestError, or answers a review echoing the
// request's uid, and a refusal carries a message. `go test` runs the seeds; `make fuzz` runs it
// for a bounded time.
func FuzzValidateReview(f *testing.F) {
	for _, seed := range [][]byte{
		validationReview(f, admissionv1.Create, goodVirtualService),
		validationReview(f, admissionv1.Create, badRegexVirtualService),
		validationReview(f, admissionv1.Update, delegateVirtualService),
		validationReview(f, admissionv1.Create, envoyFilter),
		validationReview(f, admissionv1.Create, emptyGateway),
		validationReview(f, admissionv1.Delete, ""),
		validationReview(f, admissionv1.Create, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: n}\nspec: {action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}\n"),
		validationReview(f, admissionv1.Create, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: r, trafficPolicy: {tunnel: {protocol: CONNECT, targetHost: h, targetPort: 80}}}\n"),
		validationReview(f, admissionv1.Create, "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Namespace, metadata: {name: a}}, {apiVersion: v1, kind: Namespace, metadata: {name: b}}]\n"),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":{"apiVersion":"networking.istio.io/v1","kind":"Sidecar","metadata":{"name":"s"},"spec":{"egress":[{"hosts":["./*"]}]}}}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":null}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}`),
		[]byte(`null`), []byte(`{}`), []byte(`"x"`), []byte("\xff"), nil,
	} {
		f.Add(seed)
	}
	h := quietHandler()
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := h.review(body)
		if err != nil {
			var re *inject.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a RequestError", err)
			}
			return
		}
		var in admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("answered a body that does not decode: %v", err)
		}
		if out.Response == nil || out.Response.UID != in.Request.UID {
			t.Fatalf("response %+v does not echo uid %q", out.Response, in.Request.UID)
		}
		if !out.Response.Allowed && (out.Response.Result == nil || out.Response.Result.Message == "") {
			t.Fatalf("a refusal without a message: %+v", out.Response)
		}
	})
}
