package kubemesh

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/test/framework"
)

// apiServerOutage is how long the API server stays down in TestKubernetesAPIServerOutage.
const apiServerOutage = 60 * time.Second

// With the API server stopped for a minute, pilot keeps serving the last configuration (to
// connected Envoys and to new ones), then resyncs; a restarted pilot comes back with the same
// root and the full configuration.
func TestKubernetesAPIServerOutage(t *testing.T) {
	ns := newNamespace(t, "outage")
	pilot := startPilot(t)
	pods := newPodNetwork(t, pilot)
	deployService(t, pods, ns, "details", "10.253.2.", "v1", "v2")
	client := createPod(t, ns, "client-1", "10.253.2.1", "client", map[string]string{"app": "client"})
	late := createPod(t, ns, "client-2", "10.253.2.2", "client", map[string]string{"app": "client"})
	routeTo := func(subset string) string {
		return versionSubsets(ns, "details") + fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: %[1]s}
spec:
  hosts: [details]
  http:
  - route:
    - destination: {host: details, subset: %[2]s}
`, ns, subset)
	}
	apply(t, routeTo("v1"))
	host := "details." + ns + ".svc.cluster.local"
	url := "http://127.0.0.1:9080/"
	envoy := pods.startEnvoy(t, pilot, nodeID(client))
	pods.eventuallyRoutedTo(t, url, host, nil, "details-v1")
	rootBefore := rootConfigMap(t, ns)

	cluster.StopAPIServer(t)
	stopped := time.Now()
	for time.Since(stopped) < apiServerOutage {
		if got, err := pods.routedTo(url, host, nil); err != nil || got != "details-v1" {
			t.Fatalf("%s into the outage: routed to %q, %v; want details-v1", time.Since(stopped).Round(time.Second), got, err)
		}
		if status, _ := pilot.Get(t, "/ready"); status != 200 {
			t.Fatalf("pilot not ready %s into the outage", time.Since(stopped).Round(time.Second))
		}
		time.Sleep(5 * time.Second)
	}
	// A proxy that connects while the API server is down gets the full configuration too.
	// Its Pod was created before the outage, so pilot knows it. (A pod of its own: two
	// sidecars cannot share one network namespace's ports.)
	lateEnvoy := newPodNetwork(t, pilot).startEnvoy(t, pilot, nodeID(late))
	if _, clusters := lateEnvoy.Get(t, "/clusters"); !containsAll(string(clusters), "outbound|9080|v1|"+host) {
		t.Errorf("an Envoy joining during the outage lacks the details clusters")
	}

	cluster.StartAPIServer(t)
	restarted := time.Now()
	apply(t, routeTo("v2"))
	// client-go's reflectors back off up to 30 s between attempts, jittered up to twice that,
	// so after a minute's outage a resync can take a minute.
	framework.Eventually(t, func() error {
		got, err := pods.routedTo(url, host, nil)
		if err != nil || got != "details-v2" {
			return fmt.Errorf("routed to %q (%v); want details-v2 after the API server came back", got, err)
		}
		return nil
	})
	t.Logf("pilot resynced %s after the API server came back", time.Since(restarted).Round(time.Second))

	// A restarted pilot: the same root (from Secret skiff-ca), the full configuration.
	pilot.Restart(t)
	pods.eventuallyRoutedTo(t, url, host, nil, "details-v2")
	if after := rootConfigMap(t, ns); after != rootBefore {
		t.Errorf("the root certificate changed across the outage and a pilot restart")
	}
	envoy.AssertNoRejections(t)
	lateEnvoy.AssertNoRejections(t)
}

// Two pilots started together against a cluster without a CA Secret end up with one root: one
// creates the Secret, the other reads it, and both sign with it.
func TestKubernetesTwoReplicasShareOneRoot(t *testing.T) {
	secret := fmt.Sprintf("skiff-ca-replicas-%d", time.Now().UnixNano()%100000)
	t.Cleanup(func() {
		_ = cluster.Kube.CoreV1().Secrets(controlPlaneNamespace).Delete(ctx(t), secret, metav1.DeleteOptions{})
	})
	opts := pilotOptions(t, secret)
	tlsAddresses := []string{framework.FreeAddress(t, "127.0.0.1"), framework.FreeAddress(t, "127.0.0.1")}
	pilots := framework.StartPilots(t, 2, opts, func(i int) []string { return []string{"--xds-tls-address", tlsAddresses[i]} })

	s, err := cluster.Kube.CoreV1().Secrets(controlPlaneNamespace).Get(ctx(t), secret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("CA Secret: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.Data["root-cert.pem"]) {
		t.Fatalf("Secret %s holds no root-cert.pem", secret)
	}
	// Each pilot's TLS xDS certificate must chain to the one root in the Secret.
	for i, addr := range tlsAddresses {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"}})
		if err != nil {
			t.Errorf("pilot %d's certificate does not verify against the Secret's root: %v\n%s", i, err, pilots[i].Log())
			continue
		}
		conn.Close()
	}
}

// Pilot publishes its root as ConfigMap istio-ca-root-cert in every namespace, new ones
// included, and restores it when it is edited or deleted.
func TestKubernetesRootCertConfigMaps(t *testing.T) {
	startPilot(t)
	ns := newNamespace(t, "rootcert")
	root := rootConfigMap(t, ns)
	maps := cluster.Kube.CoreV1().ConfigMaps(ns)
	cm, err := maps.Get(ctx(t), "istio-ca-root-cert", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["root-cert.pem"] = "tampered"
	if _, err := maps.Update(ctx(t), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, func() error {
		if got := rootConfigMap(t, ns); got != root {
			return fmt.Errorf("root-cert.pem not restored after an edit")
		}
		return nil
	})
	if err := maps.Delete(ctx(t), "istio-ca-root-cert", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, func() error {
		if got := rootConfigMap(t, ns); got != root {
			return fmt.Errorf("ConfigMap not recreated after a delete")
		}
		return nil
	})
}

// rootConfigMap waits for ConfigMap istio-ca-root-cert in ns and returns its root-cert.pem.
func rootConfigMap(t *testing.T, ns string) string {
	t.Helper()
	var cm *corev1.ConfigMap
	framework.Eventually(t, func() error {
		var err error
		cm, err = cluster.Kube.CoreV1().ConfigMaps(ns).Get(ctx(t), "istio-ca-root-cert", metav1.GetOptions{})
		if err == nil && cm.Data["root-cert.pem"] == "tampered" {
			return fmt.Errorf("not restored yet")
		}
		return err
	})
	return cm.Data["root-cert.pem"]
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
