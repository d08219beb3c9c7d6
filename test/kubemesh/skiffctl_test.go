package kubemesh

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffmesh/skiff/test/framework"
)

var skiffctlBuild struct {
	once sync.Once
	path string
	err  error
}

// skiffctlBinary is $SKIFFCTL, or ./cmd/skiffctl built once for the package.
func skiffctlBinary(t *testing.T) string {
	t.Helper()
	if path := os.Getenv("SKIFFCTL"); path != "" {
		return path
	}
	skiffctlBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "skiffctl-")
		if err != nil {
			skiffctlBuild.err = err
			return
		}
		skiffctlBuild.path = filepath.Join(dir, "skiffctl")
		cmd := exec.Command("go", "build", "-o", skiffctlBuild.path, "./cmd/skiffctl")
		cmd.Dir = framework.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			skiffctlBuild.err = fmt.Errorf("building skiffctl: %v\n%s", err, out)
		}
	})
	if skiffctlBuild.err != nil {
		t.Fatal(skiffctlBuild.err)
	}
	return skiffctlBuild.path
}

// runSkiffctl runs skiffctl and returns its stdout, stderr and exit code.
func runSkiffctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(skiffctlBinary(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running skiffctl: %v", err)
	}
	return out.String(), errOut.String(), code
}

// createPodOnNode creates a running Pod scheduled on node, as the scheduler and the kubelet
// would leave it.
func createPodOnNode(t *testing.T, ns, name, ip, node string, labels map[string]string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
	return runPod(t, pod, ip)
}

// TestSkiffctlThroughPortForward: in Kubernetes mode skiffctl reaches pilot the way istioctl
// does, through the API server's port-forward to the Pods of the skiff-pilot Service, and a
// sidecar's admin through a port-forward to its Pod: proxy-status shows the sidecar SYNCED and
// names the pilot Pod, proxy-config --diff between pilot and the sidecar (both port-forwarded)
// is empty, wait --for a VirtualService just applied returns once the Envoy has it (the
// resourceVersion read from the API server), and analyze reads the cluster as pilot does.
// The API server forwards to a kubelet: the test's fake one (kubelet_test.go).
func TestSkiffctlThroughPortForward(t *testing.T) {
	ns := newNamespace(t, "skiffctl")
	pilot := startPilot(t)
	pods := newPodNetwork(t, pilot)
	kubelet := startFakeKubelet(t)
	deployService(t, pods, ns, "ratings", "10.253.77.", "v1", "v2")
	client := createPodOnNode(t, ns, "client-1", "10.253.77.1", kubelet.Node, map[string]string{"app": "client"})
	envoy := pods.startEnvoy(t, pilot, nodeID(client))

	// The pilot, as deploy/pilot runs it: a Pod behind the skiff-pilot Service (here in the
	// test's namespace, passed with -n, so that istio-system stays as the other tests know it).
	createPodOnNode(t, ns, "skiff-pilot-0", "10.253.77.100", kubelet.Node, map[string]string{"app": "skiff-pilot"})
	if _, err := cluster.Kube.CoreV1().Services(ns).Create(ctx(t), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "skiff-pilot", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "skiff-pilot"},
			Ports: []corev1.ServicePort{{Name: "http-monitoring", Port: 15014, TargetPort: intstr.FromInt32(15014)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the skiff-pilot Service: %v", err)
	}
	kubelet.forward(ns, "skiff-pilot-0", 15014, pilot.MonitoringAddress)
	kubelet.forward(ns, client.Name, 15000, envoy.AdminAddress)
	kube := []string{"--kubeconfig", cluster.KubeconfigFile(t), "-n", ns}
	ctl := func(args ...string) string {
		t.Helper()
		out, errOut, code := runSkiffctl(t, append(kube, args...)...)
		if code != 0 {
			t.Fatalf("skiffctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	ctl("wait", "--timeout", "2m")

	status := ctl("proxy-status")
	var row string
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, nodeID(client)) {
			row = strings.Join(strings.Fields(l), " ")
		}
	}
	if !strings.Contains(row, "SYNCED SYNCED SYNCED SYNCED") || !strings.Contains(row, "skiff-pilot-0."+ns) {
		t.Fatalf("proxy-status through the port-forward: want %s SYNCED, from pilot skiff-pilot-0.%s:\n%s", nodeID(client), ns, status)
	}

	podName := client.Name + "." + ns
	if out, errOut, code := runSkiffctl(t, append(kube, "proxy-config", "all", podName, "--envoy", podName, "--diff")...); code != 0 || out != "" {
		t.Errorf("proxy-config all --diff through port-forwards: want nothing and exit 0: exit %d\n%s%s", code, out, errOut)
	}
	clusters := ctl("proxy-config", "clusters", podName, "--envoy", podName, "--fqdn", "ratings."+ns+".svc.cluster.local")
	if !strings.Contains(clusters, "ratings."+ns+".svc.cluster.local") {
		t.Errorf("proxy-config clusters --envoy POD: no ratings cluster:\n%s", clusters)
	}

	apply(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: %[1]s}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
      headers: {response: {set: {x-skiffctl: waited}}}
`, ns))
	ctl("wait", "--for", "VirtualService/"+ns+"/ratings", "--timeout", "2m")
	if dump := string(envoy.ConfigDump(t)); !strings.Contains(dump, `"x-skiffctl"`) {
		t.Fatalf("after skiffctl wait --for: the Envoy's routes lack the VirtualService's header")
	}

	apply(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: typo, namespace: %s}
spec:
  hosts: [typo.example.com]
  http:
  - route:
    - destination: {host: nowhere.example.com}
`, ns))
	out, errOut, code := runSkiffctl(t, append(kube, "analyze")...)
	if code != 79 || !strings.Contains(out, "Error [IST0101] (VirtualService "+ns+"/typo) ") {
		t.Errorf("analyze --kubeconfig: want exit 79 and IST0101 for %s/typo: exit %d\n%s%s", ns, code, out, errOut)
	}
	if kubelet.Forwarded.Load() == 0 {
		t.Errorf("the fake kubelet forwarded nothing: skiffctl did not go through the API server")
	}
}
