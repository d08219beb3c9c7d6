package kubemesh

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffmesh/skiff/test/framework"
)

// What the tests create in the API server, as the controllers and kubelets of a real cluster
// would have.

const (
	controlPlaneNamespace = "istio-system"
	pilotServiceAccount   = "skiff-pilot"
)

var namespaceCount atomic.Int64

// ctx is the context of one call to the API server: it ends with the test, and after
// framework.Patience, so that a hung call fails instead of eating the package's timeout.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), framework.Patience)
	t.Cleanup(cancel)
	return c
}

// newNamespace creates a namespace unique to the test, with the default ServiceAccount that
// the (absent) controller manager would have made, and deletes it at the end.
func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%100000, namespaceCount.Add(1))
	_, err := cluster.Kube.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() { deleteNamespace(t, name) })
	serviceAccount(t, name, "default")
	return name
}

// deleteNamespace deletes a namespace and everything the tests put in it. Without a
// controller manager nobody empties a deleted namespace or removes its finalizer, so the test
// does both: otherwise one test's objects (a broken VirtualService, say) would stay in every
// later pilot's view.
func deleteNamespace(t *testing.T, name string) {
	c, cancel := context.WithTimeout(context.Background(), framework.Patience)
	defer cancel()
	all, opts := metav1.DeleteOptions{}, metav1.ListOptions{}
	kube, net, sec := cluster.Kube, cluster.Istio.NetworkingV1(), cluster.Istio.SecurityV1()
	for what, del := range map[string]func() error{
		"pods":                  func() error { return kube.CoreV1().Pods(name).DeleteCollection(c, all, opts) },
		"services":              func() error { return deleteServices(c, name) },
		"endpointslices":        func() error { return kube.DiscoveryV1().EndpointSlices(name).DeleteCollection(c, all, opts) },
		"secrets":               func() error { return kube.CoreV1().Secrets(name).DeleteCollection(c, all, opts) },
		"configmaps":            func() error { return kube.CoreV1().ConfigMaps(name).DeleteCollection(c, all, opts) },
		"virtualservices":       func() error { return net.VirtualServices(name).DeleteCollection(c, all, opts) },
		"destinationrules":      func() error { return net.DestinationRules(name).DeleteCollection(c, all, opts) },
		"gateways":              func() error { return net.Gateways(name).DeleteCollection(c, all, opts) },
		"sidecars":              func() error { return net.Sidecars(name).DeleteCollection(c, all, opts) },
		"serviceentries":        func() error { return net.ServiceEntries(name).DeleteCollection(c, all, opts) },
		"workloadentries":       func() error { return net.WorkloadEntries(name).DeleteCollection(c, all, opts) },
		"peerauthentications":   func() error { return sec.PeerAuthentications(name).DeleteCollection(c, all, opts) },
		"authorizationpolicies": func() error { return sec.AuthorizationPolicies(name).DeleteCollection(c, all, opts) },
		"telemetries": func() error {
			return cluster.Istio.TelemetryV1().Telemetries(name).DeleteCollection(c, all, opts)
		},
	} {
		if err := del(); err != nil {
			t.Errorf("deleting the %s of namespace %s: %v", what, name, err)
		}
	}
	ns, err := kube.CoreV1().Namespaces().Get(c, name, metav1.GetOptions{})
	if err != nil {
		t.Errorf("namespace %s: %v", name, err)
		return
	}
	ns.Spec.Finalizers = nil
	if _, err := kube.CoreV1().Namespaces().Finalize(c, ns, metav1.UpdateOptions{}); err != nil {
		t.Errorf("finalizing namespace %s: %v", name, err)
	}
	if err := kube.CoreV1().Namespaces().Delete(c, name, all); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting namespace %s: %v", name, err)
	}
}

// deleteServices deletes a namespace's Services one by one: they have no DeleteCollection.
func deleteServices(c context.Context, ns string) error {
	list, err := cluster.Kube.CoreV1().Services(ns).List(c, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, svc := range list.Items {
		if err := cluster.Kube.CoreV1().Services(ns).Delete(c, svc.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

func serviceAccount(t *testing.T, ns, name string) {
	t.Helper()
	_, err := cluster.Kube.CoreV1().ServiceAccounts(ns).Create(ctx(t), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating ServiceAccount %s/%s: %v", ns, name, err)
	}
}

// createPod creates a Pod and gives it the status a kubelet would: running, with ip.
func createPod(t *testing.T, ns, name, ip, sa string, labels map[string]string) *corev1.Pod {
	t.Helper()
	if sa != "" {
		serviceAccount(t, ns, sa)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
	return runPod(t, pod, ip)
}

// runPod creates pod and gives it the status a kubelet would: running, with ip.
func runPod(t *testing.T, pod *corev1.Pod, ip string) *corev1.Pod {
	t.Helper()
	ns, name := pod.Namespace, pod.Name
	created, err := cluster.Kube.CoreV1().Pods(ns).Create(ctx(t), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Pod %s/%s: %v", ns, name, err)
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	updated, err := cluster.Kube.CoreV1().Pods(ns).UpdateStatus(ctx(t), created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("setting the status of Pod %s/%s: %v", ns, name, err)
	}
	return updated
}

// createService creates a ClusterIP Service with one HTTP port.
func createService(t *testing.T, ns, name string, port int, portName string) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: portName, Port: int32(port), TargetPort: intstr.FromInt32(8080)}},
		},
	}
	created, err := cluster.Kube.CoreV1().Services(ns).Create(ctx(t), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Service %s/%s: %v", ns, name, err)
	}
	return created
}

// createSlice creates an EndpointSlice of service with one ready endpoint, the Pod at address
// (IP:PORT; the port stands for the container port).
func createSlice(t *testing.T, ns, service, pod, portName, address string) {
	t.Helper()
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portText)
	ready := true
	p32 := int32(port)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: service + "-" + pod, Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{host},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &p32}},
	}
	if _, err := cluster.Kube.DiscoveryV1().EndpointSlices(ns).Create(ctx(t), slice, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating EndpointSlice %s/%s: %v", ns, slice.Name, err)
	}
}

// deployService creates Service name (port 9080, HTTP) and, for each version, an app in the pod
// network at subnet+"1N" (N counting from 1), its Pod labelled app=name, version=VERSION, and
// its EndpointSlice: what a Deployment per version, the scheduler, the kubelets and the
// endpoint controller would have made. The apps are returned in version order.
func deployService(t *testing.T, pods *podNetwork, ns, name, subnet string, versions ...string) []*app {
	t.Helper()
	createService(t, ns, name, 9080, "http")
	apps := make([]*app, len(versions))
	for i, v := range versions {
		ip := fmt.Sprintf("%s1%d", subnet, i+1)
		pod := fmt.Sprintf("%s-%s-1", name, v)
		apps[i] = pods.startApp(t, ip, name+"-"+v)
		createPod(t, ns, pod, ip, name, map[string]string{"app": name, "version": v})
		createSlice(t, ns, name, pod, "http", apps[i].address)
	}
	return apps
}

// versionSubsets is a DestinationRule for host with subsets v1 and v2 by the version label, as
// deployService labels the Pods, followed by a document separator.
func versionSubsets(ns, host string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  host: %[2]s
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
`, ns, host)
}

// apply runs `kubectl apply -f -` on the YAML, as a user would.
func apply(t *testing.T, yaml string) {
	t.Helper()
	if out, err := cluster.KubectlWithInput(t, yaml, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

var rbacOnce sync.Once

// installPilotRBAC applies deploy/pilot's namespace and RBAC, once per package.
func installPilotRBAC(t *testing.T) {
	t.Helper()
	rbacOnce.Do(func() {
		root := framework.RepoRoot(t)
		for _, f := range []string{"namespace.yaml", "rbac.yaml"} {
			if out, err := cluster.Kubectl(t, "apply", "-f", filepath.Join(root, "deploy", "pilot", f)); err != nil {
				t.Fatalf("kubectl apply %s: %v\n%s", f, err, out)
			}
		}
	})
}

// pilotOptions runs pilot in Kubernetes mode with a token of its ServiceAccount, never as
// admin, keeping its CA in Secret caSecret.
func pilotOptions(t *testing.T, caSecret string) framework.PilotOptions {
	t.Helper()
	installPilotRBAC(t)
	return framework.PilotOptions{
		Kubeconfig: cluster.TokenKubeconfig(t, controlPlaneNamespace, pilotServiceAccount),
		Args:       []string{"--namespace", controlPlaneNamespace, "--ca-secret", caSecret},
	}
}

func startPilot(t *testing.T) *framework.Pilot {
	t.Helper()
	return framework.StartPilot(t, pilotOptions(t, "skiff-ca"))
}

// pilotHolds waits until pilot's configuration holds the object kind ns/name and every
// connected proxy has answered its push (/debug/wait?for=, what `skiffctl wait --for` calls).
func pilotHolds(t *testing.T, pilot *framework.Pilot, kind, ns, name string) {
	t.Helper()
	path := fmt.Sprintf("/debug/wait?timeout=2m&for=%s/%s/%s", kind, ns, name)
	if status, body := pilot.Get(t, path); status != http.StatusOK {
		t.Fatalf("%s: %d: %s", path, status, body)
	}
}

// nodeID is the node ID of a sidecar in a Pod, as the injector builds it.
func nodeID(pod *corev1.Pod) string {
	return fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", pod.Status.PodIP, pod.Name, pod.Namespace, pod.Namespace)
}
