package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
)

// NamespaceLabels returns the labels of a namespace. An AdmissionReview does not carry them, so
// cmd/sidecar-injector looks them up in an informer's cache; tests pass a map. An error (the
// namespace is unknown, say) denies the pod: admitting it unmeshed would be silent, while a
// denied pod is retried by its controller.
type NamespaceLabels func(ctx context.Context, namespace string) (map[string]string, error)

// MapNamespaces is a NamespaceLabels over a fixed map, for tests and tools.
func MapNamespaces(m map[string]map[string]string) NamespaceLabels {
	return func(_ context.Context, ns string) (map[string]string, error) {
		labels, ok := m[ns]
		if !ok {
			return nil, fmt.Errorf("namespace %q not found", ns)
		}
		return labels, nil
	}
}

// DefaultMaxBodyBytes caps an AdmissionReview request body. The API server limits objects to
// about 3 MiB, and a review carries the object once for CREATE.
const DefaultMaxBodyBytes = 6 << 20

// Handler is the webhook: an http.Handler for POST /inject with an AdmissionReview
// (admission.k8s.io/v1) body.
type Handler struct {
	Config     Config
	Namespaces NamespaceLabels
	// Log receives one line per review: the pod, the decision and its reason; never the pod's
	// spec, which may hold secrets in env values. Default: slog.Default().
	Log *slog.Logger
	// MaxBodyBytes caps the request body; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// RequestError is a request that is not a usable AdmissionReview; the HTTP answer is 400 with
// its message.
type RequestError struct{ msg string }

func (e *RequestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &RequestError{fmt.Sprintf(format, args...)}
}

func (h *Handler) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

// ServeHTTP answers an AdmissionReview. Malformed requests (wrong method or content type, body
// too large, not an AdmissionReview v1, no request) get a 4xx status with a plain-text
// explanation; everything about the pod itself is answered in the AdmissionReview, with 200,
// as the API server expects.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ServeReview(w, r, h.MaxBodyBytes, h.log(), func(body []byte) (*admissionv1.AdmissionReview, error) {
		return h.Review(r.Context(), body)
	})
}

// ServeReview is the HTTP side of an admission webhook, shared by the injector's /inject and
// the validation webhook: it checks the method and content type, reads at most limit bytes
// (DefaultMaxBodyBytes if limit is not positive), and writes what review answers. A
// *RequestError from review (the body is no usable AdmissionReview), like a bad method or
// size, is a 4xx answer with a plain-text explanation, never a panic or a 500.
func ServeReview(w http.ResponseWriter, r *http.Request, limit int64, log *slog.Logger, review func(body []byte) (*admissionv1.AdmissionReview, error)) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method "+r.Method+": want POST with an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			http.Error(w, fmt.Sprintf("Content-Type %q: want application/json", ct), http.StatusUnsupportedMediaType)
			return
		}
	}
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("request body larger than %d bytes", limit), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	out, err := review(body)
	if err != nil {
		log.Warn("bad admission request", "path", r.URL.Path, "remote", r.RemoteAddr, "error", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	js, err := json.Marshal(out)
	if err != nil { // cannot happen with these types
		http.Error(w, "encoding the AdmissionReview: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(js)
}

// Review answers the AdmissionReview in body. A *RequestError means body is not an
// AdmissionReview v1 with a request; any other outcome, a denial included, is the returned
// review, whose response echoes the request's UID.
func (h *Handler) Review(ctx context.Context, body []byte) (*admissionv1.AdmissionReview, error) {
	in, err := DecodeReview(body)
	if err != nil {
		return nil, err
	}
	return Answer(in, h.admit(ctx, in.Request)), nil
}

// DecodeReview decodes an AdmissionReview request body. The error, a *RequestError, says why
// it is not an admission.k8s.io/v1 AdmissionReview with a request and a uid.
func DecodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var in admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, badRequest("decoding the AdmissionReview: %v", err)
	}
	want := admissionv1.SchemeGroupVersion.String()
	if in.APIVersion != want || in.Kind != "AdmissionReview" {
		return nil, badRequest("apiVersion %q kind %q: want %s AdmissionReview (admissionReviewVersions: [v1] in the webhook configuration)", in.APIVersion, in.Kind, want)
	}
	if in.Request == nil {
		return nil, badRequest("AdmissionReview without a request")
	}
	if in.Request.UID == "" {
		return nil, badRequest("AdmissionReview request without a uid")
	}
	return &in, nil
}

// Answer is the review answering in with resp, which it marks with the request's UID, as the
// API server requires.
func Answer(in *admissionv1.AdmissionReview, resp *admissionv1.AdmissionResponse) *admissionv1.AdmissionReview {
	resp.UID = in.Request.UID
	return &admissionv1.AdmissionReview{TypeMeta: in.TypeMeta, Response: resp}
}

// podResource is what the webhook's rules should send.
var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// admit decides and, if the pod is Skiff's, injects. It never fails the HTTP request: every
// outcome is a response.
func (h *Handler) admit(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	log := h.log().With("uid", string(req.UID))
	allow := func() *admissionv1.AdmissionResponse { return &admissionv1.AdmissionResponse{Allowed: true} }
	if req.Resource != podResource || req.SubResource != "" {
		// A misconfigured webhook rule; blocking unrelated objects would be worse than saying so.
		reason := fmt.Sprintf("resource %s/%s %q is not a pod: check the webhook's rules", req.Resource.Group, req.Resource.Version, req.Resource.Resource+subresource(req.SubResource))
		log.Warn("not injecting", "reason", reason)
		r := allow()
		r.Warnings = []string{"skiff-sidecar-injector: " + reason}
		return r
	}
	if req.Operation != admissionv1.Create {
		log.Info("not injecting", "namespace", req.Namespace, "reason", "operation "+string(req.Operation)+": only CREATE is injected")
		return allow()
	}
	if len(req.Object.Raw) == 0 {
		return deny(log, http.StatusBadRequest, "request.object is empty: want the pod")
	}
	var pod corev1.Pod
	// Case-sensitive, as the API server decodes: "Spec" is not "spec".
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &pod); err != nil {
		return deny(log, http.StatusBadRequest, fmt.Sprintf("decoding the pod in request.object: %v", err))
	}
	if pod.Kind != "" && (pod.Kind != "Pod" || pod.APIVersion != "v1") {
		return deny(log, http.StatusBadRequest, fmt.Sprintf("request.object is apiVersion %q kind %q: want v1 Pod", pod.APIVersion, pod.Kind))
	}
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	log = log.With("namespace", namespace, "pod", PodName(&pod))
	if namespace == "" {
		return deny(log, http.StatusBadRequest, "no namespace in the request or the pod")
	}
	if h.Namespaces == nil {
		return deny(log, http.StatusInternalServerError, "the injector has no namespace lookup (a bug)")
	}
	nsLabels, err := h.Namespaces(ctx, namespace)
	if err != nil {
		return deny(log, http.StatusInternalServerError, fmt.Sprintf("looking up the labels of namespace %q: %v", namespace, err))
	}
	inject, reason := h.Config.Decide(&pod, nsLabels)
	if !inject {
		log.Info("not injecting", "reason", reason)
		return allow()
	}
	mutated, err := h.Config.Inject(&pod, namespace)
	if err != nil {
		return deny(log, http.StatusInternalServerError, fmt.Sprintf("injecting: %v", err))
	}
	patch, err := Patch(&pod, mutated)
	if err != nil {
		return deny(log, http.StatusInternalServerError, fmt.Sprintf("computing the patch: %v", err))
	}
	log.Info("injecting", "reason", reason, "operations", patchOps(patch))
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, PatchType: &pt, Patch: patch}
}

// deny refuses the pod with a message that kubectl and the controller's events show.
func deny(log *slog.Logger, code int32, msg string) *admissionv1.AdmissionResponse {
	log.Error("denying the pod", "error", msg)
	return &admissionv1.AdmissionResponse{
		Allowed: false,
		Result:  &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: "skiff-sidecar-injector: " + msg},
	}
}

func subresource(s string) string {
	if s == "" {
		return ""
	}
	return "/" + s
}

// Patch is the RFC 6902 JSONPatch from original to mutated. Both are encoded from the Go types,
// so fields this binary does not know (from a newer API server) are absent on both sides and
// the patch never removes them.
func Patch(original, mutated *corev1.Pod) ([]byte, error) {
	a, err := json.Marshal(original)
	if err != nil {
		return nil, fmt.Errorf("encoding the original pod: %w", err)
	}
	b, err := json.Marshal(mutated)
	if err != nil {
		return nil, fmt.Errorf("encoding the mutated pod: %w", err)
	}
	ops, err := jsonpatch.CreatePatch(a, b)
	if err != nil {
		return nil, fmt.Errorf("diffing the pods: %w", err)
	}
	out, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encoding the patch: %w", err)
	}
	return out, nil
}

// patchOps counts a patch's operations for the log, without the values (an env value could be
// a secret, and the bootstrap is long).
func patchOps(patch []byte) int {
	var ops []json.RawMessage
	_ = json.Unmarshal(patch, &ops)
	return len(ops)
}
