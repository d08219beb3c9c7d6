package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// testCert makes a self-signed ECDSA certificate and its key, PEM encoded.
func testCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// indented puts PEM text under a YAML block scalar key.
func indented(b []byte) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(string(b), "\n"), "\n", "\n    ")
}

func TestSecretDecodes(t *testing.T) {
	cert, key := testCert(t)
	ca, _ := testCert(t)
	file := "apiVersion: v1\nkind: Secret\nmetadata: {name: cred, namespace: istio-system}\ntype: kubernetes.io/tls\n" +
		"data:\n  tls.crt: " + b64(cert) + "\n  tls.key: " + b64([]byte("overridden")) + "\n" +
		"stringData:\n  tls.key: |\n" + indented(key) + "\n  ca.crt: |\n" + indented(ca) + "\n" +
		"---\napiVersion: v1\nkind: Secret\nmetadata: {name: plain}\ntype: kubernetes.io/tls\n" +
		"stringData:\n  tls.crt: |\n" + indented(cert) + "\n  tls.key: |\n" + indented(key) + "\n"
	objs, err := Parse("secrets.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	set := NewSet(objs...)
	if len(set.Secrets) != 2 || set.Len() != 2 {
		t.Fatalf("got %d secrets, %d objects", len(set.Secrets), set.Len())
	}
	s := set.Secrets[1] // sorted by namespace: default/plain, then istio-system/cred
	if got := string(s.Data["tls.key"]); got != string(key) {
		t.Errorf("stringData must win over data for tls.key")
	}
	if string(s.Data["ca.crt"]) != string(ca) || string(s.Data["tls.crt"]) != string(cert) || s.StringData != nil {
		t.Errorf("data not merged as the API server does: %v keys, stringData %v", len(s.Data), s.StringData != nil)
	}
	if KindOf(s) != "Secret" || s.APIVersion != "v1" || s.Type != corev1.SecretTypeTLS {
		t.Errorf("kind %q apiVersion %q type %q", KindOf(s), s.APIVersion, s.Type)
	}
	if set.Secrets[0].Namespace != DefaultNamespace {
		t.Errorf("a Secret without a namespace lands in %q, want %q", set.Secrets[0].Namespace, DefaultNamespace)
	}
}

func TestSecretErrors(t *testing.T) {
	cert, key := testCert(t)
	otherCert, otherKey := testCert(t)
	head := "apiVersion: v1\nkind: Secret\nmetadata: {name: cred, namespace: istio-system}\n"
	tlsType := "type: kubernetes.io/tls\n"
	data := func(kv ...string) string {
		out := "data:\n"
		for i := 0; i < len(kv); i += 2 {
			out += "  " + kv[i] + ": " + kv[i+1] + "\n"
		}
		return out
	}
	tests := []struct {
		name, doc, field, want string
	}{
		{"opaque", head + "type: Opaque\n" + data("tls.crt", b64(cert), "tls.key", b64(key)), "type", `unsupported type "Opaque"`},
		{"no type", head + data("tls.crt", b64(cert), "tls.key", b64(key)), "type", "required"},
		{"no key", head + tlsType + data("tls.crt", b64(cert)), "data[tls.key]", "required"},
		{"no cert", head + tlsType + data("tls.key", b64(key)), "data[tls.crt]", "required"},
		{"not base64", head + tlsType + data("tls.crt", "not*base64", "tls.key", b64(key)), "", "illegal base64"},
		{"not PEM", head + tlsType + data("tls.crt", b64([]byte("hello")), "tls.key", b64(key)), "data[tls.crt]", "no PEM certificate"},
		{"key of another cert", head + tlsType + data("tls.crt", b64(cert), "tls.key", b64(otherKey)), "data[tls.key]", "private key does not match"},
		{"bad CA", head + tlsType + data("tls.crt", b64(otherCert), "tls.key", b64(otherKey), "ca.crt", b64(otherKey)), "data[ca.crt]", "no PEM certificate"},
		{"bad key name", head + tlsType + data("tls.crt", b64(cert), "tls.key", b64(key), "a/b", "eA=="), "data[a/b]", "invalid key"},
		{"unknown field", head + tlsType + data("tls.crt", b64(cert), "tls.key", b64(key)) + "strinData: {}\n", "", `unknown field "strinData"`},
		{"spec", head + tlsType + "spec: {}\n", "", `unknown field "spec"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("s.yaml", []byte(tt.doc))
			var list *ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("got %v, want an error", err)
			}
			var found bool
			for _, e := range list.Errors {
				if e.Kind != "Secret" || e.Namespace != "istio-system" || e.Name != "cred" {
					t.Errorf("error names %s %s/%s", e.Kind, e.Namespace, e.Name)
				}
				if strings.Contains(e.Err.Error(), tt.want) && (tt.field == "" || e.Field == tt.field) {
					found = true
				}
				for _, secret := range [][]byte{key, otherKey} {
					block, _ := pem.Decode(secret)
					if strings.Contains(e.Error(), b64(block.Bytes)[:24]) || strings.Contains(e.Error(), b64(secret)[:24]) {
						t.Errorf("error shows key material: %v", e)
					}
				}
			}
			if !found {
				t.Errorf("got %v, want %s: ...%s...", err, tt.field, tt.want)
			}
		})
	}
}

// A v1 kind other than Secret is still unsupported, and the message says what is.
func TestSecretOnlyCoreKind(t *testing.T) {
	_, err := Parse("cm.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"))
	if err == nil || !strings.Contains(err.Error(), "v1 Secret (type kubernetes.io/tls)") {
		t.Errorf("got %v", err)
	}
}
