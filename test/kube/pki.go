package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// adminUser is the admin client certificate's user; its group system:masters
// is bound to cluster-admin by the apiserver's bootstrap RBAC policy.
const adminUser = "skiff-test-admin"

// pki is the cluster's key material, made fresh for each cluster and kept in
// its work directory for the cluster's life, so an apiserver restart serves
// the same certificate and accepts the same client certificates and tokens.
type pki struct {
	caPEM        []byte // CA for both the serving and the client certificates
	servingCert  string // file: the apiserver's serving certificate
	servingKey   string // file
	clientCA     string // file: the CA's certificate, for --client-ca-file
	adminCertPEM []byte // admin client certificate (O=system:masters)
	adminKeyPEM  []byte
	saKey        string // file: the ServiceAccount token signing key
}

// newPKI writes a CA, a serving certificate for 127.0.0.1 and localhost, an
// admin client certificate and a ServiceAccount signing key into dir. ECDSA
// P-256 keys keep it fast; everything is valid for a day, far longer than any
// test run.
func newPKI(dir string) (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "skiff-test-kube-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parsing the CA certificate: %w", err)
	}
	p := &pki{
		caPEM:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		clientCA:    filepath.Join(dir, "ca.crt"),
		saKey:       filepath.Join(dir, "sa.key"),
	}
	if err := os.WriteFile(p.clientCA, p.caPEM, 0o600); err != nil {
		return nil, fmt.Errorf("writing the CA certificate: %w", err)
	}

	// The names cover how clients address it here (loopback) and the
	// in-cluster names a kubeconfig written for pods would use.
	serving := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	certPEM, keyPEM, err := issue(ca, caKey, serving, now)
	if err != nil {
		return nil, fmt.Errorf("issuing the serving certificate: %w", err)
	}
	if err := os.WriteFile(p.servingCert, certPEM, 0o600); err != nil {
		return nil, fmt.Errorf("writing the serving certificate: %w", err)
	}
	if err := os.WriteFile(p.servingKey, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("writing the serving key: %w", err)
	}

	admin := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: adminUser, Organization: []string{"system:masters"}},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if p.adminCertPEM, p.adminKeyPEM, err = issue(ca, caKey, admin, now); err != nil {
		return nil, fmt.Errorf("issuing the admin client certificate: %w", err)
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the ServiceAccount signing key: %w", err)
	}
	saPEM, err := keyToPEM(saKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the ServiceAccount signing key: %w", err)
	}
	if err := os.WriteFile(p.saKey, saPEM, 0o600); err != nil {
		return nil, fmt.Errorf("writing the ServiceAccount signing key: %w", err)
	}
	return p, nil
}

// issue signs tmpl with the CA for a new key, returning both as PEM.
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating a key: %w", err)
	}
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing: %w", err)
	}
	keyPEM, err = keyToPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func keyToPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}
