package inject

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FuzzHandle feeds arbitrary bodies to the webhook. Whatever arrives, Review must not panic; it
// either rejects the body as a RequestError or answers a review that echoes the request's UID,
// and a patch it returns is RFC 6902 and applies to the object it was computed for. `go test`
// runs the seeds; `go test -fuzz FuzzHandle ./pkg/inject` explores further.
func FuzzHandle(f *testing.F) {
	pod := deploymentPod()
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sleep", Labels: map[string]string{RevisionLabel: "skiff"}}}
	hostNet := deploymentPod()
	hostNet.Spec.HostNetwork = true
	for _, seed := range [][]byte{
		review(f, "bookinfo", pod),
		review(f, "plain", bare),
		review(f, "istio", pod),
		review(f, "nope", pod),
		review(f, "bookinfo", hostNet),
		review(f, "", bare),
		edit(f, review(f, "bookinfo", pod), func(m map[string]any) { m["request"].(map[string]any)["operation"] = "DELETE" }),
		edit(f, review(f, "bookinfo", pod), func(m map[string]any) { m["request"].(map[string]any)["object"] = nil }),
		edit(f, review(f, "bookinfo", pod), func(m map[string]any) { m["request"].(map[string]any)["object"] = []int{1} }),
		edit(f, review(f, "bookinfo", pod), func(m map[string]any) { m["apiVersion"] = "admission.k8s.io/v1beta1" }),
		edit(f, review(f, "bookinfo", pod), func(m map[string]any) { m["request"] = "x" }),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","namespace":"bookinfo","object":{"metadata":{"labels":{"sidecar.istio.io/inject":"true"}},"spec":{"containers":null}}}}`),
		[]byte(`null`), []byte(`{}`), []byte(`"x"`), []byte("\xff"), nil,
	} {
		f.Add(seed)
	}
	h := &Handler{Namespaces: testNamespaces, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := h.Review(context.Background(), body)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a RequestError", err)
			}
			return
		}
		var in admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("accepted a body that does not decode: %v", err)
		}
		if out.Response == nil || out.Response.UID != in.Request.UID {
			t.Fatalf("response %+v does not echo uid %q", out.Response, in.Request.UID)
		}
		if out.Response.Patch == nil {
			return
		}
		if !out.Response.Allowed {
			t.Fatal("a patch on a denial")
		}
		var pod corev1.Pod
		if err := json.Unmarshal(in.Request.Object.Raw, &pod); err != nil {
			t.Fatalf("patched an undecodable pod: %v", err)
		}
		orig, _ := json.Marshal(&pod)
		p, err := jsonpatchapply.DecodePatch(out.Response.Patch)
		if err != nil {
			t.Fatalf("patch is not RFC 6902: %v", err)
		}
		if _, err := p.Apply(orig); err != nil {
			t.Fatalf("patch does not apply: %v\n%s", err, out.Response.Patch)
		}
	})
}
