package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"time"
)

// Lifetimes of the self-managed certificates. They live as long as the process: a restart makes
// new ones and re-patches the caBundle, so a year is only a bound on a very long-lived pod.
const (
	selfSignedCATTL      = 10 * 365 * 24 * time.Hour
	selfSignedServingTTL = 365 * 24 * time.Hour
	clockSkew            = 5 * time.Minute
)

// selfSigned is the self-managed TLS: a CA and a serving certificate it signed, both created in
// memory; the keys are never written anywhere.
type selfSigned struct {
	caPEM []byte
	cert  tls.Certificate
}

func (s *selfSigned) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &s.cert, nil }

// newSelfSigned creates a CA and a serving certificate for dnsNames.
func newSelfSigned(dnsNames []string) (*selfSigned, error) {
	return newSelfSignedAt(dnsNames, time.Now())
}

func newSelfSignedAt(dnsNames []string, now time.Time) (*selfSigned, error) {
	if len(dnsNames) == 0 {
		return nil, errors.New("self-managed TLS: --dns-names is empty: want the webhook Service's DNS name")
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("self-managed TLS: generating the CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"Skiff"}, CommonName: "skiff-sidecar-injector CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(selfSignedCATTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("self-managed TLS: signing the CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("self-managed TLS: parsing the CA: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("self-managed TLS: generating the serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: dnsNames[0]},
		DNSNames:     dnsNames,
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(selfSignedServingTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("self-managed TLS: signing the serving certificate for %v: %w", dnsNames, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("self-managed TLS: parsing the serving certificate: %w", err)
	}
	return &selfSigned{
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		cert:  tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("crypto/rand failed: " + err.Error()) // never, per crypto/rand's documentation
	}
	return n
}

// fileCert serves the key pair in two PEM files, re-reading them when either file's
// modification time changes (checked at most every recheck), so a certificate that
// cert-manager renews into the mounted Secret is served without a restart. If a re-read fails
// (the files are being replaced), the previous pair is kept.
type fileCert struct {
	certFile, keyFile string
	recheck           time.Duration

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]time.Time // modification times of the files the cert was read from
	checkedAt time.Time
}

func newFileCert(certFile, keyFile string) (*fileCert, error) {
	f := &fileCert{certFile: certFile, keyFile: keyFile, recheck: 10 * time.Second}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fileCert) load() error {
	stamp, err := f.stamps()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert %s / --tls-key %s: %w", f.certFile, f.keyFile, err)
	}
	f.cert, f.stamp = &cert, stamp
	return nil
}

func (f *fileCert) stamps() ([2]time.Time, error) {
	var out [2]time.Time
	for i, p := range []string{f.certFile, f.keyFile} {
		st, err := os.Stat(p)
		if err != nil {
			return out, fmt.Errorf("TLS file: %w", err)
		}
		out[i] = st.ModTime()
	}
	return out, nil
}

func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checkedAt) >= f.recheck {
		f.checkedAt = now
		if stamp, err := f.stamps(); err == nil && stamp != f.stamp {
			_ = f.load() // on failure keep serving the previous pair
		}
	}
	return f.cert, nil
}
