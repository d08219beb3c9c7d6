package kubemesh

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffmesh/skiff/pkg/appprobe"
	"github.com/skiffmesh/skiff/pkg/inject"
	"github.com/skiffmesh/skiff/test/framework"
)

// TestKubernetesAppProbes: a Pod as the injector writes it, created in the API server, gives its
// sidecar the app-health listener from the ISTIO_KUBE_APP_PROBERS pilot reads through its Pod
// informer. A real Envoy (captured mode, in the pod network) answers the rewritten readiness
// probe with the app's answer, from the app on the Pod's IP, and the liveness probe, on a port
// where nothing listens, with a failure. (Folder mode reads the same Pod YAML: test/capture.)
func TestKubernetesAppProbes(t *testing.T) {
	ns := newNamespace(t, "probes")
	pilot := startPilot(t)
	pods := newPodNetwork(t, pilot)
	const ip = "10.253.0.41"
	app := pods.startApp(t, ip, "probed")
	_, portText, _ := net.SplitHostPort(app.address)
	port, _ := strconv.Atoi(portText)
	closedPort := framework.FreePort(t, "127.0.0.1") // nothing listens there on the Pod's IP either

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probed-1", Namespace: ns, Labels: map[string]string{"app": "probed"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "example.com/app:1",
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt(port)}}},
			LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromInt(closedPort)}}},
		}}},
	}
	injected, err := inject.Config{}.Inject(pod, ns)
	if err != nil {
		t.Fatal(err)
	}
	created, err := cluster.Kube.CoreV1().Pods(ns).Create(ctx(t), injected, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the injected Pod: %v", err)
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if created, err = cluster.Kube.CoreV1().Pods(ns).UpdateStatus(ctx(t), created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	envoy := framework.StartEnvoyInNetNS(t, pilot, pods.ns, framework.NetNSEnvoyOptions{
		NodeID: nodeID(created), XDSAddress: pods.xds, Interception: "redirect",
	})
	client := pods.ns.HTTPClient()
	probe := func(kind string, want int) {
		t.Helper()
		c := created.Spec.Containers[0]
		p := map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe}[kind].HTTPGet
		url := fmt.Sprintf("http://%s%s", net.JoinHostPort(ip, p.Port.String()), p.Path)
		framework.Eventually(t, func() error {
			resp, err := client.Get(url)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != want {
				return fmt.Errorf("%s probe GET %s: %d %s, want %d", kind, url, resp.StatusCode, strings.TrimSpace(string(body)), want)
			}
			if want == http.StatusOK && !strings.Contains(string(body), "probed GET /ready") {
				return fmt.Errorf("%s probe GET %s answered %q, not the app's answer to GET /ready", kind, url, body)
			}
			return nil
		})
	}
	if p := created.Spec.Containers[0].ReadinessProbe.HTTPGet; p.Port.IntValue() != appprobe.StatusPort {
		t.Fatalf("the stored readiness probe is on port %s, want the status port", p.Port.String())
	}
	probe("readiness", http.StatusOK)
	probe("liveness", http.StatusServiceUnavailable)
	if n := app.requests.Load(); n == 0 {
		t.Error("the app got no request")
	}
	// Both went through the forwarding cluster: one answered, one refused at the connection.
	atLeastOne := func(n uint64) bool { return n >= 1 }
	envoy.WaitStat(t, "cluster.app-health|http.upstream_rq_total", atLeastOne)
	envoy.WaitStat(t, "cluster.app-health|http.upstream_cx_connect_fail", atLeastOne)
}
