package translate_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var genCerts = flag.Bool("gencerts", false, "regenerate testdata/certs and the copies the gateway-*.yaml cases embed")

// The gateway golden cases embed a test CA and a server certificate and key in their Secrets
// (stringData), so that the translation, and so the goldens, are repeatable. They were made once
// by this helper, which also keeps the embedded copies in step with testdata/certs:
//
//	go test ./pkg/translate -run TestGatewayTestCerts -gencerts
//	go test ./pkg/translate -run 'TestGolden/gateway' -update
//
// The key is a throwaway test key: it protects nothing.
var certFiles = []string{"ca.crt", "tls.crt", "tls.key"}

// TestGatewayTestCerts checks the committed test certificates (the server certificate is signed
// by the CA and matches the key) and that every case embedding them embeds the current ones.
func TestGatewayTestCerts(t *testing.T) {
	dir := filepath.Join("testdata", "certs")
	old := map[string]string{}
	for _, f := range certFiles {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil && !*genCerts {
			t.Fatalf("%v (run with -gencerts to create it)", err)
		}
		old[f] = string(b)
	}
	if *genCerts {
		fresh := generateTestCerts(t)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cases, _ := filepath.Glob(filepath.Join("testdata", "gateway-*.yaml"))
		for _, c := range cases {
			data, err := os.ReadFile(c)
			if err != nil {
				t.Fatal(err)
			}
			s := string(data)
			for _, f := range certFiles {
				if old[f] != "" {
					s = strings.ReplaceAll(s, indent(old[f]), indent(fresh[f]))
				}
			}
			if err := os.WriteFile(c, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range certFiles {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(fresh[f]), 0o644); err != nil {
				t.Fatal(err)
			}
			old[f] = fresh[f]
		}
	}

	pair, err := tls.X509KeyPair([]byte(old["tls.crt"]), []byte(old["tls.key"]))
	if err != nil {
		t.Fatalf("tls.crt and tls.key: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(old["ca.crt"])) {
		t.Fatal("ca.crt holds no certificate")
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "bookinfo.example.com", CurrentTime: leaf.NotBefore.Add(time.Hour)}); err != nil {
		t.Errorf("tls.crt does not verify against ca.crt: %v", err)
	}

	cases, _ := filepath.Glob(filepath.Join("testdata", "gateway-*.yaml"))
	for _, c := range cases {
		data, err := os.ReadFile(c)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "BEGIN CERTIFICATE") && !strings.Contains(string(data), indent(old["tls.crt"])) {
			t.Errorf("%s embeds a certificate other than testdata/certs/tls.crt (regenerate with -gencerts)", c)
		}
	}
}

// indent is how a PEM sits in a case: a YAML block scalar under `stringData:` keys.
func indent(pemText string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(pemText, "\n"), "\n", "\n    ")
}

// generateTestCerts makes an ECDSA test CA and a server certificate for bookinfo.example.com
// and *.example.com it signs, valid for a century from 2025 so the goldens never expire.
func generateTestCerts(t *testing.T) map[string]string {
	t.Helper()
	notBefore := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter := notBefore.AddDate(100, 0, 0)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Skiff test CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "bookinfo.example.com"},
		DNSNames:     []string{"bookinfo.example.com", "*.example.com"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"ca.crt":  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		"tls.crt": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		"tls.key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
	}
}
