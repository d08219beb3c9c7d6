package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

var testNamespaces = MapNamespaces(map[string]map[string]string{
	"bookinfo": {RevisionLabel: "skiff"},
	"plain":    {},
	"istio":    {NamespaceInjectionLabel: "enabled"},
})

// review builds an AdmissionReview for creating pod in namespace.
func review(t testing.TB, namespace string, pod *corev1.Pod) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "0f6b4a57-1d3c-4c5e-9a47-5b4c1e0d9a11",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: namespace,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit decodes an AdmissionReview body as a generic map, lets f change it, and re-encodes it.
func edit(t testing.TB, body []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReview(t *testing.T) {
	var logs bytes.Buffer
	h := &Handler{Namespaces: testNamespaces, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx := context.Background()
	pod := deploymentPod()
	req := func(m map[string]any) map[string]any { return m["request"].(map[string]any) }

	t.Run("inject", func(t *testing.T) {
		logs.Reset()
		out, err := h.Review(ctx, review(t, "bookinfo", pod))
		if err != nil {
			t.Fatal(err)
		}
		r := out.Response
		if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
			t.Errorf("answer is %s %s", out.APIVersion, out.Kind)
		}
		if !r.Allowed || r.UID != "0f6b4a57-1d3c-4c5e-9a47-5b4c1e0d9a11" || r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("response %+v", r)
		}
		// The namespace comes from the request: the pod has none.
		orig, _ := json.Marshal(pod)
		p, err := jsonpatchapply.DecodePatch(r.Patch)
		if err != nil {
			t.Fatal(err)
		}
		patched, err := p.Apply(orig)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(patched), `\"cluster\":\"reviews.bookinfo\"`) {
			t.Error("bootstrap cluster is not reviews.bookinfo: namespace not taken from the request")
		}
		l := logs.String()
		if !strings.Contains(l, "injecting") || !strings.Contains(l, "pod=reviews-v1-7f99b6d4c5-*") || !strings.Contains(l, "istio.io/rev=skiff") {
			t.Errorf("log lacks the decision, pod or reason:\n%s", l)
		}
		if strings.Contains(l, "hunter2") {
			t.Errorf("the log shows an env value:\n%s", l)
		}
	})

	allowedNoPatch := func(t *testing.T, body []byte, wantLog string) {
		t.Helper()
		logs.Reset()
		out, err := h.Review(ctx, body)
		if err != nil {
			t.Fatal(err)
		}
		if r := out.Response; !r.Allowed || r.Patch != nil || r.PatchType != nil || r.UID == "" {
			t.Errorf("response %+v, want allowed without a patch", r)
		}
		if !strings.Contains(logs.String(), wantLog) {
			t.Errorf("log lacks %q:\n%s", wantLog, logs.String())
		}
	}
	t.Run("not selected", func(t *testing.T) { allowedNoPatch(t, review(t, "plain", pod), "no injection label") })
	t.Run("default revision's namespace", func(t *testing.T) { allowedNoPatch(t, review(t, "istio", pod), "not installed as the default") })
	t.Run("update", func(t *testing.T) {
		allowedNoPatch(t, edit(t, review(t, "bookinfo", pod), func(m map[string]any) { req(m)["operation"] = "UPDATE" }), "only CREATE")
	})
	t.Run("not a pod", func(t *testing.T) {
		body := edit(t, review(t, "bookinfo", pod), func(m map[string]any) {
			req(m)["resource"] = map[string]any{"group": "apps", "version": "v1", "resource": "deployments"}
		})
		allowedNoPatch(t, body, "is not a pod")
		out, _ := h.Review(ctx, body)
		if len(out.Response.Warnings) != 1 {
			t.Errorf("warnings %v, want one about the rules", out.Response.Warnings)
		}
	})

	denied := func(t *testing.T, h *Handler, body []byte, wantMsg string) {
		t.Helper()
		out, err := h.Review(ctx, body)
		if err != nil {
			t.Fatal(err)
		}
		r := out.Response
		if r.Allowed || r.Result == nil || !strings.Contains(r.Result.Message, wantMsg) || r.UID == "" {
			t.Errorf("response %+v, want denied with %q", r, wantMsg)
		}
	}
	t.Run("unknown namespace", func(t *testing.T) { denied(t, h, review(t, "nope", pod), `namespace "nope" not found`) })
	t.Run("lookup fails", func(t *testing.T) {
		broken := &Handler{Namespaces: func(context.Context, string) (map[string]string, error) {
			return nil, errors.New("informer not synced")
		}, Log: h.Log}
		denied(t, broken, review(t, "bookinfo", pod), "informer not synced")
	})
	t.Run("no namespace", func(t *testing.T) { denied(t, h, review(t, "", pod), "no namespace") })
	t.Run("pod namespace used", func(t *testing.T) {
		p := deploymentPod()
		p.Namespace = "bookinfo"
		out, err := h.Review(ctx, review(t, "", p))
		if err != nil || !out.Response.Allowed || out.Response.Patch == nil {
			t.Errorf("pod with its own namespace: %+v %v", out, err)
		}
	})
	t.Run("undecodable pod", func(t *testing.T) {
		denied(t, h, edit(t, review(t, "bookinfo", pod), func(m map[string]any) { req(m)["object"] = map[string]any{"spec": "not an object"} }), "decoding the pod")
	})
	t.Run("no object", func(t *testing.T) {
		denied(t, h, edit(t, review(t, "bookinfo", pod), func(m map[string]any) { delete(req(m), "object") }), "request.object is empty")
	})
	t.Run("object is not a pod", func(t *testing.T) {
		denied(t, h, edit(t, review(t, "bookinfo", pod), func(m map[string]any) {
			req(m)["object"] = map[string]any{"apiVersion": "v1", "kind": "Service"}
		}), `kind "Service"`)
	})
	t.Run("bad bootstrap", func(t *testing.T) {
		bad := &Handler{Namespaces: testNamespaces, Log: h.Log, Config: Config{PilotAddress: "not an address"}}
		denied(t, bad, review(t, "bookinfo", pod), "XDSAddress")
	})

	for name, tc := range map[string]struct {
		body []byte
		want string
	}{
		"not JSON":       {[]byte("{"), "decoding the AdmissionReview"},
		"empty":          {nil, "decoding the AdmissionReview"},
		"JSON array":     {[]byte("[]"), "decoding the AdmissionReview"},
		"v1beta1":        {edit(t, review(t, "bookinfo", pod), func(m map[string]any) { m["apiVersion"] = "admission.k8s.io/v1beta1" }), `"admission.k8s.io/v1beta1"`},
		"wrong kind":     {edit(t, review(t, "bookinfo", pod), func(m map[string]any) { m["kind"] = "Pod" }), `kind "Pod"`},
		"no request":     {edit(t, review(t, "bookinfo", pod), func(m map[string]any) { delete(m, "request") }), "without a request"},
		"no uid":         {edit(t, review(t, "bookinfo", pod), func(m map[string]any) { delete(req(m), "uid") }), "without a uid"},
		"wrong type uid": {edit(t, review(t, "bookinfo", pod), func(m map[string]any) { req(m)["uid"] = 5 }), "decoding the AdmissionReview"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := h.Review(ctx, tc.body)
			var re *RequestError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want a RequestError containing %q", err, tc.want)
			}
		})
	}
}

func TestServeHTTP(t *testing.T) {
	h := &Handler{Namespaces: testNamespaces, MaxBodyBytes: 64 << 10, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	body := review(t, "bookinfo", deploymentPod())
	for name, tc := range map[string]struct {
		method, ctype string
		body          []byte
		wantCode      int
		wantBody      string
	}{
		"inject":        {"POST", "application/json", body, 200, `"patchType":"JSONPatch"`},
		"charset":       {"POST", "application/json; charset=utf-8", body, 200, `"allowed":true`},
		"GET":           {"GET", "", nil, 405, "want POST"},
		"wrong type":    {"POST", "text/yaml", body, 415, "want application/json"},
		"malformed":     {"POST", "application/json", []byte(`{"apiVersion":`), 400, "decoding the AdmissionReview"},
		"oversized":     {"POST", "application/json", bytes.Repeat([]byte(" "), 64<<10+1), 413, "larger than 65536 bytes"},
		"denied is 200": {"POST", "application/json", review(t, "nope", deploymentPod()), 200, `"allowed":false`},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/inject", bytes.NewReader(tc.body))
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.wantCode || !strings.Contains(w.Body.String(), tc.wantBody) {
				t.Errorf("%d %.300s, want %d with %q", w.Code, w.Body.String(), tc.wantCode, tc.wantBody)
			}
		})
	}
}
