package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Kubernetes Secrets carry gateway credentials: a Gateway server's
// credentialName names a Secret of type kubernetes.io/tls in the gateway proxy's namespace, and
// pilot serves it to that proxy over SDS, as istiod does. Nothing in this file may put key
// material into an error: errors end up in logs, metrics labels and /debug/config_errors.

// The keys of a kubernetes.io/tls Secret that Skiff reads.
const (
	SecretCertKey = corev1.TLSCertKey       // "tls.crt": the certificate chain, leaf first
	SecretKeyKey  = corev1.TLSPrivateKeyKey // "tls.key": the private key
	SecretCAKey   = "ca.crt"                // CAs that verify client certificates (MUTUAL)
)

// foldStringData moves stringData into data (stringData wins on conflicts), as the API server
// does on write, so the rest of Skiff reads data only.
func foldStringData(s *corev1.Secret) {
	if len(s.StringData) == 0 {
		return
	}
	if s.Data == nil {
		s.Data = make(map[string][]byte, len(s.StringData))
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}

// validateSecret checks a Secret for what a Gateway needs from it: type kubernetes.io/tls, a
// certificate chain and its matching private key in PEM, and optionally CA certificates.
// Messages name the key, never the content.
func validateSecret(v *validator, s *corev1.Secret) {
	switch s.Type {
	case corev1.SecretTypeTLS:
	case "":
		v.add("type", "required: Skiff reads only Secrets of type %q (Kubernetes would default it to Opaque)", corev1.SecretTypeTLS)
	default:
		v.add("type", "unsupported type %q: Skiff reads only Secrets of type %q", s.Type, corev1.SecretTypeTLS)
	}
	for _, k := range sortedKeys(s.Data) {
		if msgs := validation.IsConfigMapKey(k); len(msgs) > 0 {
			v.add(key("data", k), "invalid key: %s", strings.Join(msgs, "; "))
		}
	}
	certPEM, keyPEM := s.Data[SecretCertKey], s.Data[SecretKeyKey]
	switch {
	case len(certPEM) == 0:
		v.add(key("data", SecretCertKey), "required (in data, base64, or stringData): the PEM certificate chain")
	default:
		v.addErr(key("data", SecretCertKey), checkCertificates(certPEM))
	}
	switch {
	case len(keyPEM) == 0:
		v.add(key("data", SecretKeyKey), "required (in data, base64, or stringData): the PEM private key")
	case len(certPEM) > 0 && checkCertificates(certPEM) == nil:
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			// crypto/tls errors describe the mismatch or the parse failure, not the bytes.
			v.add(key("data", SecretKeyKey), "not a private key for the certificate in %s: %v", SecretCertKey, err)
		}
	}
	if ca, ok := s.Data[SecretCAKey]; ok {
		v.addErr(key("data", SecretCAKey), checkCertificates(ca))
	}
}

// checkCertificates requires PEM input holding at least one certificate, every CERTIFICATE
// block of which parses.
func checkCertificates(data []byte) error {
	rest := bytes.TrimSpace(data)
	n := 0
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d does not parse: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate (-----BEGIN CERTIFICATE-----) found")
	}
	return nil
}
