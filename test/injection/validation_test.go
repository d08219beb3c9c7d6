package injection

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/test/framework"
)

// The validation webhook configurations of deploy/: the revision's, and the default
// revision's (deploy/default-revision), which the injector both keeps.
var validationConfigs = []struct{ file, name, webhook string }{
	{"deploy/injector/validation.yaml", "istio-validator-skiff-istio-system", "rev.validation.istio.io"},
	{"deploy/default-revision/validation.yaml", "istiod-default-validator", "validation.istio.io"},
}

// installValidation creates deploy/'s ValidatingWebhookConfigurations with each webhook's
// clientConfig pointed at url instead of the in-cluster Service, and deletes them when the test
// ends (with failurePolicy Fail and the injector gone, they would refuse all Istio
// configuration).
func installValidation(t *testing.T, url string) {
	t.Helper()
	api := cluster.Kube.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	for _, vc := range validationConfigs {
		data, err := os.ReadFile(filepath.Join(framework.RepoRoot(t), vc.file))
		if err != nil {
			t.Fatal(err)
		}
		vwc := &admissionregv1.ValidatingWebhookConfiguration{}
		if err := yaml.UnmarshalStrict(data, vwc); err != nil {
			t.Fatalf("%s: %v", vc.file, err)
		}
		for i := range vwc.Webhooks {
			if p := vwc.Webhooks[i].FailurePolicy; p == nil || *p != admissionregv1.Ignore {
				t.Errorf("%s: failurePolicy %v, want Ignore until the webhook serves, as istiod's chart", vc.file, p)
			}
			vwc.Webhooks[i].ClientConfig = admissionregv1.WebhookClientConfig{URL: &url}
		}
		if _, err := api.Create(ctx(t), vwc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", vc.name, err)
		}
		t.Cleanup(func() {
			// The test's context has ended by now.
			c, cancel := context.WithTimeout(context.Background(), framework.Patience)
			defer cancel()
			_ = api.Delete(c, vc.name, metav1.DeleteOptions{})
		})
	}
}

// virtualService is a VirtualService in namespace "validated", with istio.io/rev=skiff when
// labelled, whose first route matches the URI regex.
func virtualService(name, regex string, labelled bool) string {
	labels := ""
	if labelled {
		labels = ", labels: {istio.io/rev: skiff}"
	}
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s, namespace: validated%s}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {regex: %q}}]
    route: [{destination: {host: reviews}}]
`, name, labels, regex)
}

// loaderError is what pilot's folder loader says of the object in a file, less the file and
// document: what the webhook must say.
func loaderError(t *testing.T, objectYAML string) *config.Error {
	t.Helper()
	_, err := config.Parse("mesh/bad.yaml", []byte(objectYAML))
	errs := config.Errors(err)
	if len(errs) != 1 || errs[0].Field == "" {
		t.Fatalf("the loader says %v: want one field error", err)
	}
	e := *errs[0]
	e.File, e.Doc = "", -1
	return &e
}

// TestValidationByTheAPIServer: Istio configuration pilot would refuse is refused by the API
// server through the injector's /validate, with the loader's own field error; the rest is
// admitted (with pilot's SKF0001 warnings); deletes go through; failurePolicy moves from
// Ignore to Fail once the webhook works, as istiod's controller does; a malformed review gets
// a 400, and the injector serves on.
func TestValidationByTheAPIServer(t *testing.T) {
	applyFile(t, "deploy", "pilot", "namespace.yaml")
	applyFile(t, "deploy", "injector", "rbac.yaml")
	namespace(t, "validated", nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(address)
	installValidation(t, "https://localhost:"+port+"/validate")

	bad := virtualService("bad-regex", "/api/(v1", true)
	want := loaderError(t, bad)

	// Before the webhook serves, failurePolicy Ignore admits even what it would refuse.
	if out, err := cluster.KubectlWithInput(t, bad, "apply", "-f", "-"); err != nil {
		t.Fatalf("with failurePolicy Ignore and no webhook: %v\n%s", err, out)
	}
	if out, err := cluster.Kubectl(t, "delete", "-n", "validated", "virtualservice", "bad-regex"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	binary := framework.BuildBinary(t, "./cmd/sidecar-injector")
	started := time.Now()
	inj := startInjector(t, binary, address, "--validation-webhook-configs",
		validationConfigs[0].name+","+validationConfigs[1].name, "--namespace", "istio-system")

	// The injector writes its CA into the caBundles, sees a dry-run invalid Gateway refused,
	// and switches both configurations to failurePolicy Fail.
	var caPEM []byte
	framework.Eventually(t, func() error {
		for _, vc := range validationConfigs {
			vwc, err := cluster.Kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx(t), vc.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, wh := range vwc.Webhooks {
				if len(wh.ClientConfig.CABundle) == 0 || wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregv1.Fail {
					return fmt.Errorf("%s webhook %s: caBundle %d bytes, failurePolicy %v", vc.name, wh.Name, len(wh.ClientConfig.CABundle), *wh.FailurePolicy)
				}
				caPEM = wh.ClientConfig.CABundle
			}
		}
		return nil
	})
	t.Logf("failurePolicy Fail %v after the injector started", time.Since(started).Round(time.Millisecond))
	if _, err := istioClient(t, nil).NetworkingV1().Gateways("istio-system").Get(ctx(t), "skiff-invalid-gateway", metav1.GetOptions{}); err == nil {
		t.Errorf("the readiness check's invalid Gateway was stored: it must be a dry run")
	}

	// Refused, labelled for the revision or unlabelled (the default revision's webhook), with
	// the loader's message. The API server may call the webhook with the previous
	// configuration for a moment, so each is awaited.
	for _, tc := range []struct {
		yaml, webhook string
	}{
		{bad, validationConfigs[0].webhook},
		{virtualService("bad-regex", "/api/(v1", false), validationConfigs[1].webhook},
	} {
		framework.Eventually(t, func() error {
			out, err := cluster.KubectlWithInput(t, tc.yaml, "apply", "-f", "-")
			if err == nil {
				return fmt.Errorf("an invalid VirtualService was admitted: %s", out)
			}
			msg := err.Error()
			for _, part := range []string{
				fmt.Sprintf("admission webhook %q denied the request", tc.webhook),
				"configuration is invalid: " + want.Error(),
				"spec.http[0].match[0].uri.regex",
			} {
				if !strings.Contains(msg, part) {
					return fmt.Errorf("kubectl apply: %s\nwant %q", msg, part)
				}
			}
			return nil
		})
	}
	if _, err := istioClient(t, nil).NetworkingV1().VirtualServices("validated").Get(ctx(t), "bad-regex", metav1.GetOptions{}); err == nil {
		t.Errorf("the refused VirtualService was stored")
	}

	// Admitted, with pilot's warning for what it does not serve (kubectl prints it as
	// "Warning: ...").
	var warnings warningRecorder
	client := istioClient(t, &warnings)
	vs := &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "delegating", Namespace: "validated"},
		Spec: networking.VirtualService{Hosts: []string{"reviews"}, Http: []*networking.HTTPRoute{
			{Name: "to-v1", Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "reviews", Subset: "v1"}}}},
			{Delegate: &networking.Delegate{Name: "reviews-routes"}},
		}},
	}
	if _, err := client.NetworkingV1().VirtualServices("validated").Create(ctx(t), vs, metav1.CreateOptions{}); err != nil {
		t.Fatalf("a valid VirtualService was refused: %v", err)
	}
	if got := warnings.all(); !strings.Contains(got, "SKF0001 VirtualService validated/delegating: spec.http[1].delegate") {
		t.Errorf("warnings %q: want SKF0001 for spec.http[1].delegate", got)
	}
	if out, err := cluster.KubectlWithInput(t, virtualService("good-regex", "/api/v[0-9]+", false), "apply", "-f", "-"); err != nil {
		t.Errorf("a valid VirtualService was refused: %v\n%s", err, out)
	}
	// Deletes are never refused.
	if out, err := cluster.Kubectl(t, "delete", "-n", "validated", "virtualservice", "delegating", "good-regex"); err != nil {
		t.Errorf("delete: %v\n%s", err, out)
	}

	// A body that is no AdmissionReview gets a 400 saying why; the injector serves on.
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("the caBundle holds no certificate")
	}
	hc := &http.Client{Timeout: framework.Patience, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	for body, wantText := range map[string]string{
		`{"apiVersion":`: "decoding the AdmissionReview",
		`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}`: "without a uid",
	} {
		resp, err := hc.Post("https://"+address+"/validate", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatalf("posting a malformed review: %v", err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(text), wantText) {
			t.Errorf("malformed review %s: %d %q, want 400 with %q", body, resp.StatusCode, text, wantText)
		}
	}
	if out, err := cluster.KubectlWithInput(t, bad, "apply", "-f", "-"); err == nil || !strings.Contains(err.Error(), "denied the request") {
		t.Errorf("after malformed reviews: %v %s, want the webhook still refusing", err, out)
	}

	// With the webhook gone, failurePolicy Fail refuses Istio configuration, as istiod's does.
	inj.stop()
	_, err = cluster.KubectlWithInput(t, virtualService("good-regex", "/api", false), "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
		t.Errorf("with the webhook down: err %v, want the API server failing closed", err)
	}
}

// istioClient is an Istio clientset with the admin credentials that hands the API server's
// warnings to w (when not nil).
func istioClient(t *testing.T, w rest.WarningHandler) istioclient.Interface {
	t.Helper()
	cfg := rest.CopyConfig(cluster.Config)
	if w != nil {
		cfg.WarningHandler = w
	}
	c, err := istioclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// warningRecorder keeps the warnings the API server returns.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningRecorder) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.msgs, "\n")
}
