package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// fakeValidation is a validationConfigs over fake API servers: the webhook configuration name
// with failurePolicy Ignore, and Gateway creates answered by answer (nil: stored).
type fakeValidation struct {
	c        *validationConfigs
	kube     *fake.Clientset
	dryRuns  int
	answerFn func() error
}

func newFakeValidation(caPEM []byte, answer func() error) *fakeValidation {
	ignore := admissionregv1.Ignore
	kube := fake.NewClientset(&admissionregv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-validator-skiff-istio-system"},
		Webhooks:   []admissionregv1.ValidatingWebhook{{Name: "rev.validation.istio.io", FailurePolicy: &ignore}},
	})
	f := &fakeValidation{kube: kube, answerFn: answer}
	istio := istiofake.NewSimpleClientset()
	// (Istio's generated fake does not pass CreateOptions on, so the dry run itself is seen
	// only by the real API server, in test/injection.)
	istio.PrependReactor("create", "gateways", func(k8stesting.Action) (bool, runtime.Object, error) {
		f.dryRuns++
		return true, nil, f.answerFn()
	})
	f.c = &validationConfigs{client: kube, istio: istio, names: []string{"istio-validator-skiff-istio-system", "istiod-default-validator"},
		caPEM: caPEM, namespace: "istio-system", revision: "skiff", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return f
}

func (f *fakeValidation) webhook(t *testing.T) admissionregv1.ValidatingWebhook {
	t.Helper()
	vwc, err := f.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(context.Background(), "istio-validator-skiff-istio-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return vwc.Webhooks[0]
}

func denied() error {
	return errors.New(`admission webhook "rev.validation.istio.io" denied the request: configuration is invalid`)
}

// The controller's steps, as istiod's: caBundle first, failurePolicy Fail only once a dry
// run is refused, and again without a new check after a re-apply resets it; a configuration
// that is not installed (istiod-default-validator here) is skipped.
func TestValidationConfigsSwitchToFail(t *testing.T) {
	ctx := context.Background()
	ca := []byte("-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n")
	refusing := false
	f := newFakeValidation(ca, func() error {
		if refusing {
			return denied()
		}
		return nil // the API server does not call the webhook yet: the Gateway would be stored
	})

	if err := f.c.sync(ctx); err == nil || !strings.Contains(err.Error(), "stays failurePolicy Ignore") {
		t.Fatalf("first sync: %v, want not done", err)
	}
	if wh := f.webhook(t); !bytes.Equal(wh.ClientConfig.CABundle, ca) || *wh.FailurePolicy != admissionregv1.Ignore {
		t.Fatalf("after the first sync: caBundle %q, failurePolicy %s; want the CA and still Ignore", wh.ClientConfig.CABundle, *wh.FailurePolicy)
	}
	if err := f.c.sync(ctx); err == nil || !strings.Contains(err.Error(), "was not refused") {
		t.Fatalf("second sync, the webhook not called: %v, want not done", err)
	}
	if wh := f.webhook(t); *wh.FailurePolicy != admissionregv1.Ignore {
		t.Fatalf("failurePolicy %s while the dry run is admitted, want Ignore", *wh.FailurePolicy)
	}

	refusing = true
	if err := f.c.sync(ctx); err != nil {
		t.Fatalf("sync with the webhook refusing: %v", err)
	}
	if wh := f.webhook(t); *wh.FailurePolicy != admissionregv1.Fail {
		t.Fatalf("failurePolicy %s after a refused dry run, want Fail", *wh.FailurePolicy)
	}
	runs := f.dryRuns
	if err := f.c.sync(ctx); err != nil || f.dryRuns != runs {
		t.Fatalf("sync with nothing to do: %v, %d more dry runs", err, f.dryRuns-runs)
	}

	// `kubectl apply` of the manifest resets failurePolicy (and the caBundle).
	api := f.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	vwc, _ := api.Get(ctx, "istio-validator-skiff-istio-system", metav1.GetOptions{})
	ignore := admissionregv1.Ignore
	vwc.Webhooks[0].FailurePolicy, vwc.Webhooks[0].ClientConfig.CABundle = &ignore, nil
	if _, err := api.Update(ctx, vwc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.c.sync(ctx); err != nil {
		t.Fatalf("sync after a re-apply: %v", err)
	}
	if wh := f.webhook(t); !bytes.Equal(wh.ClientConfig.CABundle, ca) || *wh.FailurePolicy != admissionregv1.Fail {
		t.Fatalf("after a re-apply: caBundle %q, failurePolicy %s; want both restored in one pass", wh.ClientConfig.CABundle, *wh.FailurePolicy)
	}
}

// With cert-manager's CA the injector writes no caBundle, and switches once a dry run is
// refused; an unexpected failure of the dry run keeps Ignore.
func TestValidationConfigsCertManager(t *testing.T) {
	ctx := context.Background()
	answer := errors.New("gateways.networking.istio.io is forbidden")
	f := newFakeValidation(nil, func() error { return answer })
	if err := f.c.sync(ctx); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("sync with the dry run forbidden: %v, want it said", err)
	}
	if wh := f.webhook(t); *wh.FailurePolicy != admissionregv1.Ignore || wh.ClientConfig.CABundle != nil {
		t.Fatalf("failurePolicy %s, caBundle %q: want Ignore and no caBundle", *wh.FailurePolicy, wh.ClientConfig.CABundle)
	}
	answer = denied()
	if err := f.c.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if wh := f.webhook(t); *wh.FailurePolicy != admissionregv1.Fail || wh.ClientConfig.CABundle != nil {
		t.Fatalf("failurePolicy %s, caBundle %q: want Fail, and the caBundle left to cert-manager", *wh.FailurePolicy, wh.ClientConfig.CABundle)
	}
}
