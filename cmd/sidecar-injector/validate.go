package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/inject"
	"github.com/skiffmesh/skiff/pkg/model"
)

// ValidatePath is where the validation webhook is served, istiod's path, so a
// ValidatingWebhookConfiguration written for istiod needs only its Service changed.
const ValidatePath = "/validate"

// validationHandler is the validating admission webhook for Istio configuration, istiod's
// /validate: an object that pilot would refuse is refused by the API server, with the
// message pilot's folder loader gives for the same object in a file. It validates by
// config.Parse, the loader's own entry point (strict decoding, then config.Validate), so there
// is one validator: a kind pkg/config learns is validated here from then on.
//
// It serves from the injector because the injector already answers the API server over TLS
// with a certificate whose CA it keeps in the webhook configurations (or that cert-manager
// manages): pilot's TLS port serves xDS under the mesh's own root, which the API server would
// have to be given, and folder-mode pilot has no API server at all.
type validationHandler struct {
	log *slog.Logger
	// maxBodyBytes caps the request body; 0 means inject.DefaultMaxBodyBytes.
	maxBodyBytes int64
}

// ServeHTTP answers POST /validate. A body that is no AdmissionReview v1 gets 400 and a
// plain-text reason; every answer about the object itself is an AdmissionReview.
func (v *validationHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	inject.ServeReview(w, r, v.maxBodyBytes, v.log, v.review)
}

// review answers the AdmissionReview in body, or returns a *inject.RequestError when the body
// is not one.
func (v *validationHandler) review(body []byte) (*admissionv1.AdmissionReview, error) {
	in, err := inject.DecodeReview(body)
	if err != nil {
		return nil, err
	}
	return inject.Answer(in, v.admit(in.Request)), nil
}

// admit decides one request. Like istiod, only CREATE and UPDATE of an object are checked:
// a DELETE (of an object that may have been written while validation was off), an update of
// an object being deleted, or of a subresource (status) is always allowed.
func (v *validationHandler) admit(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	log := v.log.With("uid", string(req.UID), "operation", string(req.Operation),
		"kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name)
	if (req.Operation != admissionv1.Create && req.Operation != admissionv1.Update) || req.SubResource != "" {
		log.Debug("allowed without validation", "subresource", req.SubResource)
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	raw := req.Object.Raw
	if len(raw) == 0 {
		return refuse(log, http.StatusBadRequest, "request.object is empty: want the object to validate")
	}
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			DeletionTimestamp *metav1.Time `json:"deletionTimestamp"`
		} `json:"metadata"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &head); err != nil {
		return refuse(log, http.StatusBadRequest, fmt.Sprintf("cannot decode configuration: %v", err))
	}
	tm := head.TypeMeta
	if tm.APIVersion == "" || tm.Kind == "" {
		return refuse(log, http.StatusBadRequest, "request.object has no apiVersion or kind")
	}
	if head.Metadata.DeletionTimestamp != nil {
		// An object being deleted is updated only to remove its finalizers: refusing that
		// would keep an invalid object (stored while validation was off) from ever going.
		log.Debug("allowed without validation", "reason", "being deleted")
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	if !config.Supports(tm.APIVersion, tm.Kind) {
		// Istio kinds pilot does not read (EnvoyFilter, WasmPlugin, ...) are another control
		// plane's to judge: refusing them would block istiod's configuration beside Skiff.
		msg := fmt.Sprintf("skiff: pilot does not read %s %s; not validated", tm.APIVersion, tm.Kind)
		log.Info("allowed without validation", "reason", msg)
		return &admissionv1.AdmissionResponse{Allowed: true, Warnings: []string{msg}}
	}
	objs, err := config.Parse("", raw)
	if err != nil {
		return refuse(log, http.StatusUnprocessableEntity, "configuration is invalid: "+fieldErrors(err))
	}
	if len(objs) != 1 {
		return refuse(log, http.StatusBadRequest, fmt.Sprintf("request.object holds %d objects: want one", len(objs)))
	}
	warnings := objectWarnings(objs[0])
	log.Info("allowed", "warnings", len(warnings))
	return &admissionv1.AdmissionResponse{Allowed: true, Warnings: warnings}
}

// fieldErrors renders Parse's errors as the loader does, less the file and document: "KIND
// NAMESPACE/NAME: FIELD: PROBLEM", several joined by "; ".
func fieldErrors(err error) string {
	errs := config.Errors(err)
	if len(errs) == 0 {
		return err.Error()
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		e := *e
		e.File, e.Doc = "", -1
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// objectWarnings are the model's warnings about obj that obj alone decides: SKF0001, a field
// pilot accepts but does not serve. The warnings that depend on the rest of the mesh (IST0101
// for a host that does not exist, IST0109 for two VirtualServices of one host, ...) would
// need the whole configuration, which the injector does not watch; pilot reports them.
func objectWarnings(obj config.Object) []string {
	kind := config.KindOf(obj)
	var out []string
	for _, w := range model.Build(config.NewSet(obj)).Warnings() {
		if w.Code == model.CodeNotServed && w.Kind == kind && w.Namespace == obj.GetNamespace() && w.Name == obj.GetName() {
			out = append(out, w.String())
		}
	}
	return out
}

// refuse denies the object with a message that kubectl prints after `admission webhook "..."
// denied the request: `.
func refuse(log *slog.Logger, code int32, msg string) *admissionv1.AdmissionResponse {
	log.Info("denied", "reason", msg)
	reason := metav1.StatusReasonBadRequest
	if code == http.StatusUnprocessableEntity {
		reason = metav1.StatusReasonInvalid
	}
	return &admissionv1.AdmissionResponse{
		Allowed: false,
		Result:  &metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg},
	}
}
