package xds

import (
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
	"github.com/skiffmesh/skiff/pkg/render"
)

// TestSecretsServedAndRedacted: a gateway class is served its credential over SDS, and the
// debug config dump lists it with the private key redacted.
func TestSecretsServedAndRedacted(t *testing.T) {
	const key = "-----BEGIN PRIVATE KEY-----\nTHE-KEY\n-----END PRIVATE KEY-----\n"
	snap := model.Build(gatewayWithCredential(key))
	proxy, err := model.ParseNodeID("router~127.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	byType := classResources(snap, proxy)
	if _, ok := byType[resourcev3.SecretType]["kubernetes://cred"]; !ok {
		t.Fatalf("secret kubernetes://cred not served: %v", byType[resourcev3.SecretType])
	}
	dump, err := buildConfigDump(byType)
	if err != nil {
		t.Fatal(err)
	}
	out, err := render.JSON(dump)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"SecretsConfigDump", `"name": "kubernetes://cred"`, `"inline_string": "[redacted]"`} {
		if !strings.Contains(s, want) {
			t.Errorf("config dump lacks %s", want)
		}
	}
	if strings.Contains(s, "THE-KEY") || strings.Contains(s, "VEhFLUtFWQ") || strings.Contains(s, "LS0tLS1CRUdJTiBQUklWQVRF") {
		t.Errorf("config dump shows the private key:\n%s", s)
	}
	// The served resource itself is untouched: Envoy needs the key.
	served := byType[resourcev3.SecretType]["kubernetes://cred"].(*tlsv3.Secret)
	if got := string(served.GetTlsCertificate().GetPrivateKey().GetInlineBytes()); got != key {
		t.Errorf("served secret lost its private key")
	}
}

// gatewayWithCredential is a gateway in istio-system serving HTTPS on 443 with the TLS Secret
// cred, whose key is key. Built in code, so not validated: translation only needs the keys
// present.
func gatewayWithCredential(key string) *config.Set {
	return &config.Set{
		Gateways: []*networkingv1.Gateway{{
			ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "istio-system"},
			Spec: networking.Gateway{Servers: []*networking.Server{{
				Port:  &networking.Port{Number: 443, Name: "https", Protocol: "HTTPS"},
				Hosts: []string{"*"},
				Tls:   &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_SIMPLE, CredentialName: "cred"},
			}}},
		}},
		Secrets: []*corev1.Secret{{
			ObjectMeta: metav1.ObjectMeta{Name: "cred", Namespace: "istio-system"},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{"tls.crt": []byte("THE-CERT"), "tls.key": []byte(key)},
		}},
	}
}
