package translate_test

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/render"
	"github.com/skiffmesh/skiff/pkg/translate"
)

func inline(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(s)}}
}

// TestRedactSecret: every field Envoy's API marks sensitive is replaced, whatever kind of
// secret holds it; the certificate stays; the input is untouched.
func TestRedactSecret(t *testing.T) {
	secrets := []*tlsv3.Secret{
		{Name: "cert", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline("PUBLIC-CHAIN"),
			PrivateKey:       inline("SECRET-KEY"),
			Password:         inline("SECRET-PASSWORD"),
		}}},
		{Name: "generic", Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{Secret: inline("SECRET-GENERIC")}}},
		{Name: "tickets", Type: &tlsv3.Secret_SessionTicketKeys{SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{
			Keys: []*corev3.DataSource{inline("SECRET-TICKET-1"), inline("SECRET-TICKET-2")},
		}}},
	}
	for _, s := range secrets {
		orig := proto.Clone(s)
		red := translate.RedactSecret(s)
		out, err := render.JSON(red)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "SECRET") || strings.Contains(string(out), "U0VDUkVU") { // base64 of SECRET
			t.Errorf("%s: redacted secret still shows sensitive data:\n%s", s.Name, out)
		}
		if !strings.Contains(string(out), `"inline_string": "[redacted]"`) {
			t.Errorf("%s: no [redacted] marker:\n%s", s.Name, out)
		}
		if !proto.Equal(orig, s) {
			t.Errorf("%s: RedactSecret modified its input", s.Name)
		}
		if err := red.ValidateAll(); err != nil {
			t.Errorf("%s: redacted secret is not valid: %v", s.Name, err)
		}
	}
	red := translate.RedactSecret(secrets[0])
	if got := string(red.GetTlsCertificate().GetCertificateChain().GetInlineBytes()); got != "PUBLIC-CHAIN" {
		t.Errorf("certificate chain = %q, want it kept", got)
	}
}
