package framework

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// PKI is a throwaway CA with one server certificate and one client certificate it signed,
// made fresh for a test that needs TLS between Envoy and test peers.
type PKI struct {
	CAPEM []byte
	Roots *x509.CertPool

	ServerName                  string
	ServerCertPEM, ServerKeyPEM []byte
	Server                      tls.Certificate

	ClientName                  string
	ClientCertPEM, ClientKeyPEM []byte
	Client                      tls.Certificate
}

// NewPKI creates the CA, a server certificate for serverName (CN and DNS SAN) and a client
// certificate with CN clientName, all ECDSA P-256, valid for a day.
func NewPKI(tb testing.TB, serverName, clientName string) *PKI {
	tb.Helper()
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatalf("framework: generating a test key: %v", err)
		}
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "skiff test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("framework: self-signing the test CA: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	issue := func(serial int64, cn string, dns []string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, pair tls.Certificate) {
		key := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatalf("framework: issuing a test certificate for %s: %v", cn, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			tb.Fatal(err)
		}
		certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		if pair, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
			tb.Fatal(err)
		}
		return certPEM, keyPEM, pair
	}
	p := &PKI{CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), Roots: x509.NewCertPool(),
		ServerName: serverName, ClientName: clientName}
	p.Roots.AddCert(ca)
	p.ServerCertPEM, p.ServerKeyPEM, p.Server = issue(2, serverName, []string{serverName}, x509.ExtKeyUsageServerAuth)
	p.ClientCertPEM, p.ClientKeyPEM, p.Client = issue(3, clientName, nil, x509.ExtKeyUsageClientAuth)
	return p
}
