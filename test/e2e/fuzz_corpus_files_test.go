package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// proxyFilePath is a certificate, key or CRL path on the proxy's filesystem, as
// DestinationRules and Gateways may name them (caCertificates, clientCertificate, privateKey,
// caCrl, serverCertificate).
var proxyFilePath = regexp.MustCompile(`/etc/[A-Za-z0-9_./-]+\.(pem|crt|key|crl)\b`)

// proxyFiles stands in for the files that corpus inputs name on the proxy's filesystem: Envoy
// reads them when it takes the configuration, and rejects it when they are missing, as they
// are on a test machine. Each path is rewritten to a file under a folder of the test's own,
// made on first use: a key file holds a leaf key, a CRL file a CRL of the CA, and any other a
// leaf certificate followed by its CA, which serves both as a chain and as a trust bundle.
type proxyFiles struct {
	t       *testing.T
	dir     string
	made    map[string]bool
	certPEM []byte
	keyPEM  []byte
	crlPEM  []byte
}

func newProxyFiles(t *testing.T) *proxyFiles {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "corpus CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "corpus"}, DNSNames: []string{"*.example.com", "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour),
	}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	block := func(kind string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}) }
	return &proxyFiles{
		t: t, dir: t.TempDir(), made: map[string]bool{},
		certPEM: append(block("CERTIFICATE", leafDER), block("CERTIFICATE", caDER)...),
		keyPEM:  block("PRIVATE KEY", keyDER),
		crlPEM:  block("X509 CRL", crlDER),
	}
}

// rewrite points every proxy file path in data at the test's stand-in for it.
func (f *proxyFiles) rewrite(data []byte) []byte {
	return proxyFilePath.ReplaceAllFunc(data, func(path []byte) []byte {
		local := filepath.Join(f.dir, string(path))
		if !f.made[local] {
			f.made[local] = true
			content := f.certPEM
			switch base := filepath.Base(local); {
			case strings.HasSuffix(base, ".crl"):
				content = f.crlPEM
			case strings.Contains(base, "key"):
				content = f.keyPEM
			}
			if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
				f.t.Fatal(err)
			}
			if err := os.WriteFile(local, content, 0o644); err != nil {
				f.t.Fatal(err)
			}
		}
		return []byte(local)
	})
}

// listenerNames are the listeners a config dump holds, active or warming (not those draining
// after removal), from Envoy's /config_dump or pilot's /debug/config_dump, which has its form.
func listenerNames(t *testing.T, dump []byte) []string {
	t.Helper()
	var parsed struct {
		Configs []struct {
			Type      string `json:"@type"`
			Listeners []struct {
				Name    string          `json:"name"`
				Active  json.RawMessage `json:"active_state"`
				Warming json.RawMessage `json:"warming_state"`
			} `json:"dynamic_listeners"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(dump, &parsed); err != nil {
		t.Fatalf("config dump: %v", err)
	}
	var out []string
	for _, c := range parsed.Configs {
		for _, l := range c.Listeners {
			if l.Active != nil || l.Warming != nil {
				out = append(out, l.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}
