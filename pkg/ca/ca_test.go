package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSelfSignedRootPersistsAcrossRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	first, err := LoadOrCreate(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	second, err := LoadOrCreate(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.RootPEM(), second.RootPEM()) {
		t.Fatal("a restart with the same directory produced a different root")
	}
	info, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("%s has mode %v, want 0600", CAKeyFile, mode)
	}
	root, err := parseCertificate(first.RootPEM())
	if err != nil {
		t.Fatal(err)
	}
	if life := root.NotAfter.Sub(root.NotBefore); life < 9*365*24*time.Hour {
		t.Errorf("root lives %v, want about ten years", life)
	}
}

func TestIssuedCertificateCarriesTheSPIFFEID(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir(), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	w, err := c.Issue("shop", "cart", 2*time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	if w.SPIFFEID != "spiffe://example.org/ns/shop/sa/cart" {
		t.Errorf("SPIFFE ID %s", w.SPIFFEID)
	}
	leaf := verifyChain(t, w.ChainPEM, c.Roots())
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != w.SPIFFEID {
		t.Errorf("URI SANs %v, want [%s]", leaf.URIs, w.SPIFFEID)
	}
	if got := leaf.NotAfter.Sub(now); got < 119*time.Second || got > 121*time.Second {
		t.Errorf("certificate lives %v after issue, want 2m", got)
	}
	if strings.Contains(w.String(), "PRIVATE") {
		t.Error("Workload.String leaks key material")
	}
	if _, err := c.Issue("", "cart", 0, now); err == nil {
		t.Error("an empty namespace must be refused")
	}
}

// A plugged-in CA in Istio's cacerts layout: an intermediate signs, the root is distributed,
// and the workload chain leads to the root through the intermediate.
func TestPluggedInIntermediate(t *testing.T) {
	dir := t.TempDir()
	rootKey, rootCert, rootPEM := newTestCA(t, nil, nil, "root")
	_, _, interPEM, interKeyPEM := newIntermediate(t, rootKey, rootCert)
	write(t, dir, CACertFile, interPEM)
	write(t, dir, CAKeyFile, interKeyPEM)
	write(t, dir, RootCertFile, rootPEM)
	write(t, dir, CertChainFile, interPEM)
	c, err := Load(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Issue("default", "reviews", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	verifyChain(t, w.ChainPEM, roots)
}

func TestLoadRejectsBrokenCAs(t *testing.T) {
	rootKey, rootCert, rootPEM := newTestCA(t, nil, nil, "root")
	_, _, otherPEM := newTestCA(t, nil, nil, "other")
	_, _, interPEM, interKeyPEM := newIntermediate(t, rootKey, rootCert)
	cases := map[string]struct {
		files map[string][]byte
		want  string
	}{
		"key of another certificate": {map[string][]byte{CACertFile: otherPEM, CAKeyFile: interKeyPEM}, "does not belong"},
		"chain to an unknown root":   {map[string][]byte{CACertFile: interPEM, CAKeyFile: interKeyPEM, RootCertFile: otherPEM}, "does not chain"},
		"no key":                     {map[string][]byte{CACertFile: rootPEM}, CAKeyFile},
		"garbage key":                {map[string][]byte{CACertFile: rootPEM, CAKeyFile: []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")}, "not a PKCS#8"},
	}
	for name, c := range cases {
		dir := t.TempDir()
		for f, data := range c.files {
			write(t, dir, f, data)
		}
		_, err := Load(dir, "")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("%s: the error leaks key material", name)
		}
	}
}

func verifyChain(t *testing.T, chainPEM []byte, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for rest := chainPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("workload chain does not verify for %v: %v", usage, err)
		}
	}
	return certs[0]
}

func newTestCA(t *testing.T, parentKey *ecdsa.PrivateKey, parent *x509.Certificate, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	signerKey, signer := key, tmpl
	if parent != nil {
		signerKey, signer = parentKey, parent
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func newIntermediate(t *testing.T, rootKey *ecdsa.PrivateKey, root *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate, []byte, []byte) {
	t.Helper()
	key, cert, certPEM := newTestCA(t, rootKey, root, "intermediate")
	der, err := x509.MarshalECPrivateKey(key) // SEC 1, as openssl writes EC keys
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func write(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}
