package framework

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
)

// The scanner is only worth its "found nothing" if it finds a key printed in every way a
// program might print one. Each case hides the key in some text and must be found; the
// other key, and text with no key, must not be.
func TestKeyScannerFindsKeysHoweverPrinted(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	ecDER, rsaDER := pkcs8(ecKey), pkcs8(rsaKey)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	otherPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8(other)})

	var s KeyScanner
	for name, p := range map[string][]byte{"ec": ecPEM, "rsa": rsaPEM} {
		if err := s.AddPEM(name, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddPEM("certificate only", []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")); err == nil {
		t.Errorf("AddPEM accepted a PEM without a private key")
	}

	// pemBody is the PEM without its header lines, as a log cutting the block would print it.
	pemBody := func(p []byte) string {
		lines := strings.Split(strings.TrimSpace(string(p)), "\n")
		return strings.Join(lines[1:len(lines)-1], "\n")
	}
	jsonString := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write(append([]byte("profile\x00"), ecDER...))
	_ = zw.Close()
	scalar, _ := ecKey.Bytes()
	colonHex := func(b []byte) string {
		parts := make([]string, len(b))
		for i, c := range b {
			parts[i] = fmt.Sprintf("%02X", c)
		}
		return strings.Join(parts, ":")
	}
	// The second PEM line (bytes 48 to 95 of the DER): the scalar's last 20 bytes.
	secondLine := strings.Split(pemBody(ecPEM), "\n")[1]

	found := map[string]string{
		"PEM in a log line":               "level=DEBUG msg=issued key=" + fmt.Sprintf("%q", ecPEM),
		"PEM body without its header":     pemBody(ecPEM),
		"one line of the PEM body":        "...\n" + secondLine + "\n...",
		"base64 of the PEM (Secret data)": "tls.key: " + base64.StdEncoding.EncodeToString(ecPEM),
		"PEM as JSON bytes (proto JSON)":  jsonString(map[string][]byte{"inline_bytes": ecPEM}),
		"PEM as a JSON string":            jsonString(map[string]string{"inline_string": string(ecPEM)}),
		"DER in base64url, unpadded":      base64.RawURLEncoding.EncodeToString(ecDER),
		"DER in base64 after 1 byte":      base64.StdEncoding.EncodeToString(append([]byte{7}, ecDER...)),
		"DER in base64 after 2 bytes":     base64.StdEncoding.EncodeToString(append([]byte{7, 8}, ecDER...)),
		"DER in hex":                      "key=" + hex.EncodeToString(ecDER),
		"scalar in upper hex with colons": colonHex(scalar),
		"%v of the key (decimal)":         fmt.Sprintf("%v", ecKey),
		"raw DER":                         "\x00\x01" + string(ecDER),
		"gzipped DER (a profile)":         zipped.String(),
		"RSA key as PKCS#8 base64":        base64.StdEncoding.EncodeToString(rsaDER),
		"RSA prime in decimal":            rsaKey.Primes[1].String(),
	}
	for name, text := range found {
		leaks := s.Scan(name, []byte(text))
		if len(leaks) == 0 {
			t.Errorf("%s: not found in %.120q", name, text)
			continue
		}
		var keyed bool
		for _, l := range leaks {
			keyed = keyed || l.Key != "any"
		}
		if !keyed {
			t.Errorf("%s: found %v, want the key named", name, leaks)
		}
	}

	clean := map[string]string{
		"another key's DER":     base64.StdEncoding.EncodeToString(pkcs8(other)),
		"a certificate":         "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnVu\n-----END CERTIFICATE-----",
		"a redacted secret":     `{"private_key": {"inline_string": "[redacted]"}}`,
		"the public key in hex": hex.EncodeToString(elliptic.MarshalCompressed(elliptic.P256(), ecKey.X, ecKey.Y)),
	}
	for name, text := range clean {
		if leaks := s.Scan(name, []byte(text)); len(leaks) > 0 {
			t.Errorf("%s: found %v; want nothing", name, leaks)
		}
	}
	// The other key's own PEM is a PEM private key, found by its header alone.
	if leaks := s.Scan("other PEM", otherPEM); len(leaks) != 1 || leaks[0].Key != "any" {
		t.Errorf("another key's PEM: found %v, want its header alone", leaks)
	}
}
