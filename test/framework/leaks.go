package framework

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"regexp"
	"strings"
)

// A test that claims no private key leaks has to be able to find one that does. KeyScanner
// looks for the keys a test knows are in use (the CA's, a gateway Secret's, workload keys
// captured on their way to Envoy) in any text or bytes: logs, debug pages, metrics, files. It
// looks for each key's secret numbers (an EC key's scalar, an RSA key's private exponent and
// primes, an Ed25519 seed), not for its PEM form, so that the key is found however it was
// printed:
//
//   - as raw bytes (a binary dump, a gzipped profile once unzipped);
//   - in hex, plain or with ':' or ' ' between the bytes (%x, openssl's style);
//   - in base64, standard or URL alphabet, padded or not, at any alignment, broken over lines
//     or JSON-escaped (a PEM block, a Secret's data, a protobuf's JSON), and base64 inside
//     base64 (a Secret's data holds the base64 of a PEM);
//   - in decimal (%v of a Go key prints its big integers so).
//
// A key counts as found when 16 consecutive bytes of one of its secret numbers are, at any of
// the offsets 0, 8, 16, ... into the number: any leak of 23 bytes or more in a row is caught,
// and 16 bytes are 128 bits, so a match by chance does not happen. Independently of the keys
// it knows, any "PRIVATE KEY" (the PEM block type of every private key encoding) is a finding.
type KeyScanner struct {
	keys []scannedKey
}

// scannedKey is a key's secret numbers, as big-endian bytes, and the decimal forms of the
// big ones.
type scannedKey struct {
	name     string
	secrets  [][]byte
	decimals []string
}

// KeyLeak is one finding: which key (or "any" for a PEM private key header), where, and in
// what form.
type KeyLeak struct {
	Key, Where, Form string
}

func (l KeyLeak) String() string { return fmt.Sprintf("%s: %s (%s)", l.Where, l.Key, l.Form) }

// pemPrivateKeyMarker is in the header of every PEM private key: PRIVATE KEY, EC PRIVATE KEY,
// RSA PRIVATE KEY, ENCRYPTED PRIVATE KEY.
const pemPrivateKeyMarker = "PRIVATE KEY"

// AddPEM adds every private key in pemData (PKCS#8, SEC 1 or PKCS#1) under name. A PEM
// without a private key is an error: a test that meant to look for a key must have one.
func (s *KeyScanner) AddPEM(name string, pemData []byte) error {
	found := 0
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if !strings.Contains(block.Type, pemPrivateKeyMarker) {
			continue
		}
		key, err := parseAnyPrivateKey(block.Bytes)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := s.add(name, key); err != nil {
			return err
		}
		found++
	}
	if found == 0 {
		return fmt.Errorf("%s: no PEM private key in it", name)
	}
	return nil
}

// Keys is how many keys the scanner looks for.
func (s *KeyScanner) Keys() int { return len(s.keys) }

func parseAnyPrivateKey(der []byte) (any, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, SEC 1 or PKCS#1 private key")
}

func (s *KeyScanner) add(name string, key any) error {
	k := scannedKey{name: name}
	addInt := func(n *big.Int, size int) {
		k.secrets = append(k.secrets, n.FillBytes(make([]byte, max(size, (n.BitLen()+7)/8))))
		k.decimals = append(k.decimals, n.String())
	}
	switch key := key.(type) {
	case *ecdsa.PrivateKey:
		b, err := key.Bytes() // the scalar, fixed size
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		k.secrets = append(k.secrets, b)
		k.decimals = append(k.decimals, new(big.Int).SetBytes(b).String())
	case *rsa.PrivateKey:
		addInt(key.D, 0)
		for _, p := range key.Primes {
			addInt(p, 0)
		}
	case ed25519.PrivateKey:
		k.secrets = append(k.secrets, key.Seed())
	default:
		return fmt.Errorf("%s: unsupported private key type %T", name, key)
	}
	s.keys = append(s.keys, k)
	return nil
}

// leakWindow is the length of the runs of secret bytes looked for, leakStride the distance
// between their starts.
const (
	leakWindow = 16
	leakStride = 8
)

// windows are the runs of b looked for.
func windows(b []byte) [][]byte {
	if len(b) <= leakWindow {
		return [][]byte{b}
	}
	var out [][]byte
	for i := 0; ; i += leakStride {
		if i+leakWindow >= len(b) {
			out = append(out, b[len(b)-leakWindow:])
			return out
		}
		out = append(out, b[i:i+leakWindow])
	}
}

// decimalWindow is how many digits of a decimal secret must appear in a row (about 126 bits).
const decimalWindow = 38

var (
	// base64Run is a run of base64 characters (both alphabets) long enough to hold a window.
	base64Run = regexp.MustCompile(`[A-Za-z0-9+/_-]{22,}`)
	// hexRun is a run of hex digits, optionally with one separator between bytes.
	hexRun = regexp.MustCompile(`(?:[0-9A-Fa-f]{2}[: ]?){16,}`)
	// jsonEscapes are escapes that may sit inside an encoded key in a JSON or quoted log value.
	jsonEscapes = strings.NewReplacer(`\n`, "", `\r`, "", `\t`, "", `\/`, "/", `\u002b`, "+", `\u002B`, "+",
		`\u003d`, "=", `\u003D`, "=")
)

// Scan returns every finding in data, which came from where.
func (s *KeyScanner) Scan(where string, data []byte) []KeyLeak {
	seen := map[KeyLeak]bool{}
	var out []KeyLeak
	report := func(l KeyLeak) {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	s.scan(where, data, "", 0, report)
	return out
}

// maxScanDepth bounds how many encodings deep the scan goes: base64 of a PEM is two.
const maxScanDepth = 3

func (s *KeyScanner) scan(where string, data []byte, form string, depth int, report func(KeyLeak)) {
	join := func(f string) string {
		if form == "" {
			return f
		}
		return form + " in " + f
	}
	if bytes.Contains(data, []byte(pemPrivateKeyMarker)) {
		report(KeyLeak{Key: "any", Where: where, Form: join(`PEM "` + pemPrivateKeyMarker + `" header`)})
	}
	s.matchRaw(where, data, join("raw bytes"), report)
	for _, k := range s.keys {
		for _, d := range k.decimals {
			if len(d) < decimalWindow {
				continue
			}
			for i := 0; i+decimalWindow <= len(d); i += decimalWindow / 2 {
				if bytes.Contains(data, []byte(d[i:i+decimalWindow])) {
					report(KeyLeak{Key: k.name, Where: where, Form: join("decimal")})
					break
				}
			}
		}
	}
	if depth >= maxScanDepth {
		return
	}
	if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b { // gzip, as pprof's profiles
		if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
			if plain, err := io.ReadAll(io.LimitReader(zr, 256<<20)); err == nil {
				s.scan(where, plain, join("gzip"), depth+1, report)
			}
		}
	}
	for _, run := range hexRun.FindAll(data, -1) {
		digits := bytes.Map(func(r rune) rune {
			if r == ':' || r == ' ' {
				return -1
			}
			return r
		}, run)
		for off := 0; off < 2 && off < len(digits); off++ {
			d := digits[off:]
			d = d[:len(d)/2*2]
			if decoded, err := hex.DecodeString(string(d)); err == nil {
				s.matchRaw(where, decoded, join("hex"), report)
			}
		}
	}
	// Encoded keys are often wrapped (PEM lines) or escaped (JSON); undo both before looking
	// for base64 runs.
	flat := []byte(jsonEscapes.Replace(string(data)))
	flat = bytes.Map(func(r rune) rune {
		switch r {
		case '\n', '\r', '\t', ' ':
			return -1
		}
		return r
	}, flat)
	for _, run := range base64Run.FindAll(flat, -1) {
		std := bytes.Map(func(r rune) rune {
			switch r {
			case '-':
				return '+'
			case '_':
				return '/'
			}
			return r
		}, run)
		for off := 0; off < 4 && off < len(std); off++ {
			chunk := std[off:]
			chunk = chunk[:len(chunk)/4*4]
			decoded, err := base64.RawStdEncoding.DecodeString(string(chunk))
			if err != nil || len(decoded) < leakWindow {
				continue
			}
			s.scan(where, decoded, join("base64"), depth+1, report)
		}
	}
}

// matchRaw reports every key with a window in data.
func (s *KeyScanner) matchRaw(where string, data []byte, form string, report func(KeyLeak)) {
	for _, k := range s.keys {
	secrets:
		for _, secret := range k.secrets {
			for _, w := range windows(secret) {
				if bytes.Contains(data, w) {
					report(KeyLeak{Key: k.name, Where: where, Form: form})
					break secrets
				}
			}
		}
	}
}
