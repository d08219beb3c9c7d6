// Package ca is Skiff's certificate authority: it owns the signing key and issues the SPIFFE
// workload certificates that sidecars use for mutual TLS. Nothing else in Skiff touches private
// keys. The CA's own key is the one secret that is persisted, in Istio's `cacerts` layout: in
// --ca-dir (folder mode) or in a Kubernetes Secret (package kube); workload keys are generated
// here, live in memory only, and are never logged.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// The files of Istio's plugged-in CA layout (`cacerts`), which is also how a self-signed root
// is persisted, so an operator can swap one for the other.
const (
	CACertFile    = "ca-cert.pem"    // the signing certificate
	CAKeyFile     = "ca-key.pem"     // its private key
	RootCertFile  = "root-cert.pem"  // the trust anchor(s) handed to proxies
	CertChainFile = "cert-chain.pem" // signing cert up to (not including) the root; optional
)

// Defaults, as in Istio.
const (
	DefaultTrustDomain = "cluster.local"
	DefaultWorkloadTTL = 24 * time.Hour
	rootTTL            = 10 * 365 * 24 * time.Hour
	// clockSkew backdates certificates so a peer whose clock is slightly behind accepts them.
	clockSkew = 5 * time.Minute
)

// CA signs workload certificates.
type CA struct {
	trustDomain string
	signer      crypto.Signer
	cert        *x509.Certificate
	// chainPEM is the signing certificate followed by any intermediates: what a workload
	// certificate's chain continues with.
	chainPEM []byte
	rootsPEM []byte
	roots    *x509.CertPool
}

// LoadOrCreate loads the CA from dir in the cacerts layout, or, when dir holds no CA yet,
// creates a self-signed root valid for ten years and persists it there (key file mode 0600),
// so that a restart keeps the same root.
func LoadOrCreate(dir, trustDomain string) (*CA, error) {
	_, err := os.Stat(filepath.Join(dir, CACertFile))
	switch {
	case err == nil:
		return Load(dir, trustDomain)
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("CA directory %s: %w", dir, err)
	}
	files, err := NewSelfSigned(trustDomain)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating CA directory: %w", err)
	}
	// The key goes first and the certificate last: Load looks for the certificate, so a crash
	// between the writes leaves a directory that is simply initialised again.
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{CAKeyFile, 0o600}, {RootCertFile, 0o644}, {CACertFile, 0o644}} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), files[f.name], f.mode); err != nil {
			return nil, fmt.Errorf("persisting the CA: %w", err)
		}
	}
	return Load(dir, trustDomain)
}

// NewSelfSigned creates a self-signed root valid for ten years, in the cacerts layout (file
// name to content), ready to be persisted in a folder or a Kubernetes Secret.
func NewSelfSigned(trustDomain string) (map[string][]byte, error) {
	certPEM, keyPEM, err := newSelfSignedRoot(cmpOr(trustDomain, DefaultTrustDomain), time.Now())
	if err != nil {
		return nil, err
	}
	return map[string][]byte{CACertFile: certPEM, CAKeyFile: keyPEM, RootCertFile: certPEM}, nil
}

// Load reads a CA in the cacerts layout from dir (see FromFiles).
func Load(dir, trustDomain string) (*CA, error) {
	files := map[string][]byte{}
	for _, name := range []string{CACertFile, CAKeyFile, RootCertFile, CertChainFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && (name == CACertFile || name == CAKeyFile || !errors.Is(err, os.ErrNotExist)) {
			return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, name), err)
		}
		if err == nil {
			files[name] = data
		}
	}
	return FromFiles(files, trustDomain)
}

// FromFiles builds a CA from the cacerts layout (file name to content, as in a folder or the
// data of a Kubernetes Secret): ca-cert.pem and ca-key.pem are required; root-cert.pem
// defaults to ca-cert.pem (a self-signed root); cert-chain.pem, when present, is the chain
// from the signing certificate up to the root.
func FromFiles(files map[string][]byte, trustDomain string) (*CA, error) {
	trustDomain = cmpOr(trustDomain, DefaultTrustDomain)
	certPEM, keyPEM, rootsPEM, chainPEM := files[CACertFile], files[CAKeyFile], files[RootCertFile], files[CertChainFile]
	if len(certPEM) == 0 {
		return nil, fmt.Errorf("%s is missing", CACertFile)
	}
	if len(keyPEM) == 0 {
		return nil, fmt.Errorf("%s is missing", CAKeyFile)
	}
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CACertFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: the certificate is not a CA (basicConstraints CA:FALSE)", CACertFile)
	}
	signer, err := parsePrivateKey(keyPEM)
	if err != nil {
		// Never include the key material itself in the error.
		return nil, fmt.Errorf("%s: %w", CAKeyFile, err)
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("%s does not belong to %s", CAKeyFile, CACertFile)
	}
	if len(rootsPEM) == 0 {
		rootsPEM = certPEM
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootsPEM) {
		return nil, fmt.Errorf("%s holds no certificate", RootCertFile)
	}
	if len(chainPEM) == 0 {
		chainPEM = certPEM
	}
	// The signing certificate must lead to a root we hand out, or every handshake fails later.
	intermediates := x509.NewCertPool()
	intermediates.AppendCertsFromPEM(chainPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%s does not chain to %s: %w", CACertFile, RootCertFile, err)
	}
	return &CA{trustDomain: trustDomain, signer: signer, cert: cert, chainPEM: chainPEM, rootsPEM: rootsPEM, roots: roots}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// RootPEM is the trust bundle proxies verify peers against (the ROOTCA secret).
func (c *CA) RootPEM() []byte { return c.rootsPEM }

// Roots is the trust bundle as a pool.
func (c *CA) Roots() *x509.CertPool { return c.roots }

// TrustDomain is the SPIFFE trust domain of issued identities.
func (c *CA) TrustDomain() string { return c.trustDomain }

// SPIFFEID is Istio's workload identity, spiffe://TRUST_DOMAIN/ns/NS/sa/SA.
func (c *CA) SPIFFEID(namespace, serviceAccount string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", c.trustDomain, namespace, serviceAccount)
}

// Workload is an issued identity: a certificate chain and its private key, both PEM.
type Workload struct {
	SPIFFEID  string
	ChainPEM  []byte
	KeyPEM    []byte
	NotBefore time.Time
	NotAfter  time.Time
}

// String names the identity without any key material, so a Workload can be logged safely.
func (w *Workload) String() string {
	return fmt.Sprintf("%s (valid until %s)", w.SPIFFEID, w.NotAfter.Format(time.RFC3339))
}

// Issue creates a key and a certificate for spiffe://TRUST_DOMAIN/ns/NS/sa/SA valid for ttl,
// usable for both ends of mutual TLS, as Istio's workload certificates are.
func (c *CA) Issue(namespace, serviceAccount string, ttl time.Duration, now time.Time) (*Workload, error) {
	if namespace == "" || serviceAccount == "" {
		return nil, fmt.Errorf("issuing a workload certificate: namespace %q and service account %q must both be set", namespace, serviceAccount)
	}
	if ttl <= 0 {
		ttl = DefaultWorkloadTTL
	}
	id := c.SPIFFEID(namespace, serviceAccount)
	uri, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("SPIFFE ID %q: %w", id, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a workload key: %w", err)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter // never outlive the signer
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		// Istio leaves the subject empty and puts the identity in the URI SAN.
		URIs:        []*url.URL{uri},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.signer)
	if err != nil {
		return nil, fmt.Errorf("signing the certificate for %s: %w", id, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the key for %s: %w", id, err)
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), c.chainPEM...)
	return &Workload{
		SPIFFEID:  id,
		ChainPEM:  chain,
		KeyPEM:    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		NotBefore: tmpl.NotBefore,
		NotAfter:  notAfter,
	}, nil
}

func newSelfSignedRoot(trustDomain string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the root key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{trustDomain}, CommonName: "Skiff root CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(rootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signing the root: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the root key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("ca: the system's random source failed: " + err.Error())
	}
	return n
}

func parseCertificate(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(block.Bytes)
}

// parsePrivateKey accepts PKCS#8, PKCS#1 (RSA) and SEC 1 (EC) keys, the forms openssl and
// Istio's tooling write.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a PKCS#8, PKCS#1 or EC private key", block.Type)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// writeFileAtomic writes through a temporary file and a rename, so readers never see half a key.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
