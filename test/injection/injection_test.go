// Package injection tests the sidecar injector against a real kube-apiserver (test/kube): the
// injector runs as its own process with the token of the ServiceAccount deploy/injector binds,
// the webhook configuration is deploy/injector's own, pointed by URL at the injector on
// loopback, and the API server calls it when Pods are created.
package injection

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/pkg/appprobe"
	"github.com/skiffmesh/skiff/pkg/inject"
	"github.com/skiffmesh/skiff/test/framework"
	"github.com/skiffmesh/skiff/test/kube"
)

var cluster *kube.Cluster

func TestMain(m *testing.M) { kube.Main(m, &cluster) }

const webhookName = "skiff-sidecar-injector"

// injector is a running sidecar-injector process.
type injector struct {
	address string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	done    chan struct{}
}

// startInjector runs cmd/sidecar-injector on a free loopback port with self-managed TLS for
// "localhost", as the ServiceAccount deploy/injector binds, with extra flags appended.
func startInjector(t *testing.T, binary, address string, extra ...string) *injector {
	t.Helper()
	kubeconfig := cluster.TokenKubeconfig(t, "istio-system", "skiff-sidecar-injector")
	inj := &injector{address: address, log: &bytes.Buffer{}, done: make(chan struct{})}
	args := append([]string{"--listen", address, "--kubeconfig", kubeconfig, "--dns-names", "localhost",
		"--webhook-config", webhookName, "--log-level", "debug"}, extra...)
	inj.cmd = exec.Command(binary, args...)
	var mu sync.Mutex
	w := lockedWriter{mu: &mu, w: inj.log}
	inj.cmd.Stdout, inj.cmd.Stderr = w, w
	inj.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := inj.cmd.Start(); err != nil {
		t.Fatalf("starting the injector: %v", err)
	}
	go func() { _ = inj.cmd.Wait(); close(inj.done) }()
	t.Cleanup(func() {
		inj.stop()
		if t.Failed() {
			mu.Lock()
			t.Logf("---- injector log ----\n%s", inj.log.String())
			mu.Unlock()
		}
	})
	return inj
}

func (i *injector) stop() {
	select {
	case <-i.done:
		return
	default:
	}
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-i.done:
	case <-time.After(10 * time.Second):
		_ = i.cmd.Process.Kill()
		<-i.done
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// installWebhook creates deploy/injector's MutatingWebhookConfiguration with each webhook's
// clientConfig pointed at url instead of the in-cluster Service.
func installWebhook(t *testing.T, url string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(framework.RepoRoot(t), "deploy", "injector", "webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, mwc); err != nil {
		t.Fatalf("deploy/injector/webhook.yaml: %v", err)
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregv1.WebhookClientConfig{URL: &url}
	}
	if _, err := cluster.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx(t), mwc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the webhook configuration: %v", err)
	}
}

func setFailurePolicy(t *testing.T, policy admissionregv1.FailurePolicyType) {
	t.Helper()
	api := cluster.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	mwc, err := api.Get(ctx(t), webhookName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].FailurePolicy = &policy
	}
	if _, err := api.Update(ctx(t), mwc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// ctx is the context of one call to the API server: it ends with the test, and after
// framework.Patience, so that a hung call fails instead of eating the package's timeout.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), framework.Patience)
	t.Cleanup(cancel)
	return c
}

func applyFile(t *testing.T, parts ...string) {
	t.Helper()
	path := filepath.Join(append([]string{framework.RepoRoot(t)}, parts...)...)
	if out, err := cluster.Kubectl(t, "apply", "-f", path); err != nil {
		t.Fatalf("kubectl apply -f %s: %v\n%s", path, err, out)
	}
}

func namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	if _, err := cluster.Kube.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func newPod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// The acceptance cases, in one cluster and one injector: labelled, unlabelled, opt-out,
// revision labels, no double injection, and failurePolicy with the injector down.
func TestInjectionByTheAPIServer(t *testing.T) {
	applyFile(t, "deploy", "pilot", "namespace.yaml")
	applyFile(t, "deploy", "injector", "rbac.yaml")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(address)
	installWebhook(t, "https://localhost:"+port+inject.InjectPath)
	binary := framework.BuildBinary(t, "./cmd/sidecar-injector")
	inj := startInjector(t, binary, address)

	namespace(t, "meshed", map[string]string{inject.RevisionLabel: "skiff"})
	namespace(t, "plain", nil)
	namespace(t, "istiod-default", map[string]string{inject.NamespaceInjectionLabel: "enabled"})
	pods := cluster.Kube.CoreV1()

	// The injector writes its CA into the webhooks' caBundle shortly after it starts; until
	// then, with failurePolicy Fail, the API server refuses Pods in the labelled namespace.
	var injected *corev1.Pod
	framework.Eventually(t, func() error {
		p, err := pods.Pods("meshed").Create(ctx(t), newPod(fmt.Sprintf("web-%d", time.Now().UnixNano()), map[string]string{"app": "web"}), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		injected = p
		return nil
	})
	if got := containerNames(injected.Spec.Containers); !slices.Equal(got, []string{"app", inject.ProxyContainerName}) {
		t.Errorf("containers %v, want [app %s] (2/2)", got, inject.ProxyContainerName)
	}
	if got := containerNames(injected.Spec.InitContainers); !slices.Equal(got, []string{inject.InitContainerName}) {
		t.Errorf("init containers %v, want [%s]", got, inject.InitContainerName)
	}
	proxy := injected.Spec.Containers[1]
	if proxy.Image != inject.DefaultProxyImage || *proxy.SecurityContext.RunAsUser != 1337 ||
		!slices.Contains(proxy.Args, inject.NodeIDArg) || proxy.ReadinessProbe.HTTPGet.Port.IntValue() != 15021 {
		t.Errorf("istio-proxy container: image %s, user %v, args %v, readiness %+v", proxy.Image,
			proxy.SecurityContext.RunAsUser, proxy.Args, proxy.ReadinessProbe)
	}
	if injected.Annotations[inject.StatusAnnotation] == "" || injected.Annotations["prometheus.io/port"] != "15090" {
		t.Errorf("annotations %v", injected.Annotations)
	}

	checkProbesRewritten(t, pods.Pods("meshed"))

	for name, tc := range map[string]struct {
		ns     string
		labels map[string]string
		want   bool
	}{
		"unlabelled namespace":                     {"plain", nil, false},
		"opt-out label in a labelled namespace":    {"meshed", map[string]string{inject.InjectLabel: "false"}, false},
		"revision label in a plain namespace":      {"plain", map[string]string{inject.RevisionLabel: "skiff"}, true},
		"another revision's pod label":             {"meshed", map[string]string{inject.RevisionLabel: "canary"}, false},
		"istio-injection=enabled (istiod's)":       {"istiod-default", nil, false},
		"istio-injection=enabled with skiff's rev": {"istiod-default", map[string]string{inject.RevisionLabel: "skiff"}, false},
	} {
		p, err := pods.Pods(tc.ns).Create(ctx(t), newPod(strings.ReplaceAll(strings.ToLower(strings.Fields(name)[0]), "=", "-")+fmt.Sprint(time.Now().UnixNano()), tc.labels), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := slices.Contains(containerNames(p.Spec.Containers), inject.ProxyContainerName); got != tc.want {
			t.Errorf("%s: injected = %v, want %v (containers %v)", name, got, tc.want, containerNames(p.Spec.Containers))
		}
	}

	// A second admission of an injected Pod (its spec copied into a new Pod, as a controller
	// recreating it from a stored spec would) does not inject again.
	again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-again", Labels: injected.Labels, Annotations: injected.Annotations},
		Spec: *injected.Spec.DeepCopy()}
	again.Spec.NodeName = ""
	p, err := pods.Pods("meshed").Create(ctx(t), again, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := containerNames(p.Spec.Containers); !slices.Equal(got, []string{"app", inject.ProxyContainerName}) {
		t.Errorf("second admission: containers %v, want one %s", got, inject.ProxyContainerName)
	}
	if len(p.Spec.InitContainers) != 1 || len(p.Spec.Volumes) != len(injected.Spec.Volumes) {
		t.Errorf("second admission: init containers %v, %d volumes (first: %d)", containerNames(p.Spec.InitContainers), len(p.Spec.Volumes), len(injected.Spec.Volumes))
	}

	// The injector down: failurePolicy Fail (deploy/'s) refuses the Pod; Ignore admits it
	// without a sidecar.
	inj.stop()
	_, err = pods.Pods("meshed").Create(ctx(t), newPod("while-down", nil), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "sidecar-injector.skiff.io") {
		t.Errorf("with failurePolicy Fail and the injector down: err %v, want the webhook's failure", err)
	}
	setFailurePolicy(t, admissionregv1.Ignore)
	// The API server applies a changed webhook configuration a moment later (its informer),
	// so the Pod is refused, as under Fail, until it has.
	framework.Eventually(t, func() error {
		p, err = pods.Pods("meshed").Create(ctx(t), newPod("while-down", nil), metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("with failurePolicy Ignore and the injector down: %w", err)
		}
		return nil
	})
	if slices.Contains(containerNames(p.Spec.Containers), inject.ProxyContainerName) {
		t.Errorf("a Pod admitted while the injector was down has a sidecar")
	}
}

// checkProbesRewritten creates a Pod with an httpGet (on a named port), a tcpSocket and a grpc
// probe: the API server must accept the injector's patch, which replaces the probes'
// handlers, and store httpGet probes on the status port, with the originals, as the API
// server defaulted them, in istio-proxy's ISTIO_KUBE_APP_PROBERS.
func checkProbesRewritten(t *testing.T, pods typedcorev1.PodInterface) {
	t.Helper()
	pod := newPod("probed", map[string]string{"app": "probed"})
	c := &pod.Spec.Containers[0]
	c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}}
	c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
	c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090}}}
	stored, err := pods.Create(ctx(t), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a Pod with probes: %v", err)
	}
	app := stored.Spec.Containers[0]
	for path, probe := range map[string]*corev1.Probe{
		"/app-health/app/readyz": app.ReadinessProbe, "/app-health/app/livez": app.LivenessProbe, "/app-health/app/startupz": app.StartupProbe,
	} {
		if probe.HTTPGet == nil || probe.TCPSocket != nil || probe.GRPC != nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port.IntValue() != appprobe.StatusPort {
			t.Errorf("stored probe %+v, want only an httpGet of %s on %d", probe.ProbeHandler, path, appprobe.StatusPort)
		}
	}
	value, _, ok := appprobe.FromPod(stored)
	probers, err := appprobe.Parse(value)
	if !ok || err != nil || len(probers) != 3 {
		t.Fatalf("%s = %q (%v): want the three original probes", appprobe.EnvName, value, err)
	}
	if p := probers["/app-health/app/readyz"]; p.HTTPGet == nil || p.HTTPGet.Path != "/ready" || p.Port() != 8080 || p.Timeout() != 1 {
		t.Errorf("original readiness probe %+v: want GET /ready on 8080 (the named port), the default 1 s timeout", p)
	}
	if p := probers["/app-health/app/livez"]; p.TCPSocket == nil || p.Port() != 8080 {
		t.Errorf("original liveness probe %+v", p)
	}
	if p := probers["/app-health/app/startupz"]; p.GRPC == nil || p.Port() != 9090 {
		t.Errorf("original startup probe %+v", p)
	}
}
