package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"time"
)

// IssueServing creates a key and a server certificate for pilot's own TLS xDS port, with DNS
// and IP SANs (istiod's are istiod.istio-system.svc and friends), so proxies that trust the
// mesh root can verify the control plane they join. The key stays in the returned value only.
func (c *CA) IssueServing(dnsNames []string, ips []net.IP, ttl time.Duration, now time.Time) (tls.Certificate, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return tls.Certificate{}, fmt.Errorf("issuing a serving certificate: no DNS name or IP to certify")
	}
	if ttl <= 0 {
		ttl = DefaultWorkloadTTL
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating a serving key: %w", err)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(dnsNames) > 0 {
		tmpl.Subject.CommonName = dnsNames[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.signer)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("signing the serving certificate for %v: %w", dnsNames, err)
	}
	chainPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), c.chainPEM...)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("encoding the serving key: %w", err)
	}
	cert, err := tls.X509KeyPair(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("assembling the serving certificate: %w", err)
	}
	return cert, nil
}
