package kubemesh

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/test/framework"
)

// A gateway Pod selected by a Gateway whose HTTPS server names a Secret: pilot watches that
// Secret (and no other), serves it to the gateway over SDS, and the gateway terminates TLS
// with it and routes by the VirtualService bound to the Gateway. A second server names a Secret
// that does not exist in the gateway Pod's namespace: it is left out, and pilot says so at
// /debug/config_errors (IST0101 on its credentialName).
func TestKubernetesGatewayCredential(t *testing.T) {
	ns := newNamespace(t, "gateway")
	pilot := startPilot(t)
	pods := newPodNetwork(t, pilot)
	deployService(t, pods, ns, "web", "10.253.3.", "v1")
	gw := createPod(t, ns, "ingressgateway-1", "10.253.3.1", "ingressgateway", map[string]string{"istio": "ingressgateway"})

	pki := framework.NewPKI(t, "shop.example.com", "client")
	for name, data := range map[string]map[string][]byte{
		"shop-cert": {"tls.crt": pki.ServerCertPEM, "tls.key": pki.ServerKeyPEM},
		// Not named by any Gateway: pilot must not read it.
		"unrelated": {"tls.crt": pki.ClientCertPEM, "tls.key": pki.ClientKeyPEM},
	} {
		_, err := cluster.Kube.CoreV1().Secrets(ns).Create(ctx(t), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Type: corev1.SecretTypeTLS, Data: data}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	const httpsPort = 8443
	apply(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: %[1]s}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %[2]d, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: %[3]d, name: https-missing, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: no-such-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: %[1]s}
spec:
  hosts: [shop.example.com]
  gateways: [shop]
  http:
  - route:
    - destination: {host: web}
`, ns, httpsPort, httpsPort+1))
	router := fmt.Sprintf("router~%s~%s.%s~%s.svc.cluster.local", gw.Status.PodIP, gw.Name, ns, ns)
	envoy := framework.StartEnvoyInNetNS(t, pilot, pods.ns, framework.NetNSEnvoyOptions{NodeID: router, XDSAddress: pods.xds})

	client := &http.Client{Timeout: framework.RequestTimeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return pods.ns.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort))
		},
		TLSClientConfig: &tls.Config{RootCAs: pki.Roots, ServerName: "shop.example.com"},
	}}
	framework.Eventually(t, func() error {
		resp, err := client.Get("https://shop.example.com/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("x-upstream") != "web-v1" {
			return fmt.Errorf("status %d from %q: %s", resp.StatusCode, resp.Header.Get("x-upstream"), body)
		}
		return nil
	})
	log := pilot.Log()
	if !strings.Contains(log, "secret="+ns+"/shop-cert") {
		t.Errorf("pilot's log does not show it watching the Secret the Gateway names")
	}
	if strings.Contains(log, ns+"/unrelated") {
		t.Errorf("pilot read a Secret no Gateway names")
	}
	framework.Eventually(t, func() error {
		for _, w := range configErrors(t, pilot).Warnings {
			if w.Code == "IST0101" && w.Namespace == ns && w.Name == "shop" && w.Field == "spec.servers[1].tls.credentialName" &&
				strings.Contains(w.Message, "no Secret no-such-cert in namespace "+ns+", where the gateway workload Pod ingressgateway-1 runs") {
				return nil
			}
		}
		return fmt.Errorf("no IST0101 for Gateway %s/shop spec.servers[1].tls.credentialName: %+v", ns, configErrors(t, pilot).Warnings)
	})
	if strings.Contains(string(envoy.ConfigDump(t)), fmt.Sprintf(`"port_value": %d`, httpsPort+1)) {
		t.Errorf("Envoy holds a listener for the server whose Secret does not exist")
	}
	envoy.AssertNoRejections(t)
}
