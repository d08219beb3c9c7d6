package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/skiffmesh/skiff/pkg/inject"
	"github.com/skiffmesh/skiff/test/framework"
)

func admissionReview(t *testing.T, namespace string) []byte {
	t.Helper()
	pod, _ := json.Marshal(corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	})
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "uid-1", Namespace: namespace, Operation: admissionv1.Create,
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Object:   runtime.RawExtension{Raw: pod},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServer serves the injector as the command does (TLS with a self-managed certificate, the
// namespace lookup over an informer of a fake API server) and talks to it as the API server
// would: verifying the serving certificate against the CA that goes into the caBundle.
func TestServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{inject.RevisionLabel: "skiff"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}},
	)
	namespaces := newNamespaceLabels(client)
	namespaces.start(ctx)
	certs, err := newSelfSigned([]string{"skiff-sidecar-injector.istio-system.svc"})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := &inject.Handler{Namespaces: namespaces.lookup, Log: log}
	served := make(chan error, 1)
	go func() { served <- inject.Serve(ctx, lis, inject.NewMux(h, namespaces.ready), certs.get, log) }()

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certs.caPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "skiff-sidecar-injector.istio-system.svc",
	}}}
	url := "https://" + lis.Addr().String()
	post := func(body io.Reader) (int, string) {
		t.Helper()
		resp, err := c.Post(url+inject.InjectPath, "application/json", body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	framework.Eventually(t, func() error {
		resp, err := c.Get(url + inject.ReadyPath)
		if err != nil {
			return fmt.Errorf("%s: %w", inject.ReadyPath, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", inject.ReadyPath, resp.Status)
		}
		return nil
	})

	code, body := post(bytes.NewReader(admissionReview(t, "web")))
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal([]byte(body), &out); code != 200 || err != nil {
		t.Fatalf("inject: %d %v %.300s", code, err, body)
	}
	if r := out.Response; !r.Allowed || r.UID != "uid-1" || !strings.Contains(string(r.Patch), `"name":"istio-proxy"`) {
		t.Errorf("inject response %+v", r)
	}
	if code, body := post(bytes.NewReader(admissionReview(t, "other"))); code != 200 || strings.Contains(body, "patch") {
		t.Errorf("unselected namespace: %d %.300s", code, body)
	}
	// A namespace the informer has not seen is looked up in the API.
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "new", Labels: map[string]string{inject.RevisionLabel: "skiff"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, body := post(bytes.NewReader(admissionReview(t, "new"))); code != 200 || !strings.Contains(body, `"patch"`) {
		t.Errorf("new namespace: %d %.300s", code, body)
	}
	if code, body := post(strings.NewReader(`{"apiVersion": "admission.k8s.io/v1", "kind": `)); code != 400 || !strings.Contains(body, "decoding the AdmissionReview") {
		t.Errorf("malformed body: %d %q", code, body)
	}
	huge := io.MultiReader(strings.NewReader(`{"apiVersion":"`), strings.NewReader(strings.Repeat("x", inject.DefaultMaxBodyBytes)))
	if code, body := post(huge); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "larger than") {
		t.Errorf("oversized body: %d %q", code, body)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(framework.Patience):
		t.Errorf("Serve did not return within %v after the context ended", framework.Patience)
	}
}

func TestSelfSigned(t *testing.T) {
	s, err := newSelfSigned([]string{"a.ns.svc", "a.ns.svc.cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.caPEM) {
		t.Fatal("caPEM is not PEM")
	}
	for _, name := range []string{"a.ns.svc", "a.ns.svc.cluster.local"} {
		if _, err := s.cert.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := s.cert.Leaf.Verify(x509.VerifyOptions{DNSName: "other.svc", Roots: roots}); err == nil {
		t.Error("certificate valid for a name it was not made for")
	}
	if _, err := newSelfSigned(nil); err == nil || !strings.Contains(err.Error(), "--dns-names") {
		t.Errorf("no names: %v", err)
	}
}

func TestPatchCABundle(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "skiff-sidecar-injector"},
		Webhooks:   []admissionregv1.MutatingWebhook{{Name: "rev.namespace.skiff.io"}, {Name: "rev.object.skiff.io", ClientConfig: admissionregv1.WebhookClientConfig{CABundle: []byte("old")}}},
	})
	ca := []byte("-----BEGIN CERTIFICATE-----\n...\n")
	changed, err := patchCABundle(ctx, client, "skiff-sidecar-injector", ca)
	if err != nil || !changed {
		t.Fatalf("first patch: changed %v, %v", changed, err)
	}
	mwc, _ := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "skiff-sidecar-injector", metav1.GetOptions{})
	for _, w := range mwc.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, ca) {
			t.Errorf("webhook %s caBundle %q", w.Name, w.ClientConfig.CABundle)
		}
	}
	if changed, err := patchCABundle(ctx, client, "skiff-sidecar-injector", ca); err != nil || changed {
		t.Errorf("second patch: changed %v, %v; want no change", changed, err)
	}
	if _, err := patchCABundle(ctx, client, "missing", ca); err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("missing configuration: %v", err)
	}
}

func TestFileCertReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(name string, at time.Time) *x509.Certificate {
		s, err := newSelfSigned([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalPKCS8PrivateKey(s.cert.PrivateKey)
		for path, data := range map[string][]byte{
			certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.cert.Certificate[0]}),
			keyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		} {
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(path, at, at); err != nil {
				t.Fatal(err)
			}
		}
		return s.cert.Leaf
	}
	first := write("one.svc", time.Now().Add(-time.Hour))
	fc, err := newFileCert(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	fc.recheck = 0
	if c, _ := fc.get(nil); !bytes.Equal(c.Certificate[0], first.Raw) {
		t.Fatal("not serving the file's certificate")
	}
	second := write("two.svc", time.Now())
	if c, _ := fc.get(nil); !bytes.Equal(c.Certificate[0], second.Raw) {
		t.Error("renewed certificate not picked up")
	}
	// A half-written pair keeps the previous one.
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, _ := fc.get(nil); !bytes.Equal(c.Certificate[0], second.Raw) {
		t.Error("a broken key file replaced the certificate")
	}
	if _, err := newFileCert(filepath.Join(dir, "none"), keyFile); err == nil {
		t.Error("missing file accepted")
	}
}

func TestFlags(t *testing.T) {
	for args, want := range map[string]string{
		"--tls-cert x":     "go together",
		"--log-level loud": "--log-level",
		"--tls-key y":      "go together",
		"--unknown-flag":   "unknown flag",
	} {
		cmd := newRootCommand()
		cmd.SetArgs(strings.Fields(args))
		cmd.SetOut(io.Discard)
		if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", args, err, want)
		}
	}
	cmd := newRootCommand()
	cmd.SetArgs([]string{"--pilot-address", "pilot", "--kubeconfig", "/nonexistent"})
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "XDSAddress") {
		t.Errorf("bad --pilot-address: %v, want the bootstrap's complaint", err)
	}
}
