package capture

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/pkg/appprobe"
	"github.com/skiffmesh/skiff/pkg/inject"
	"github.com/skiffmesh/skiff/test/framework"
)

const (
	grpcPort       = 9090 // the app's gRPC health service in the pod
	grpcService    = "app"
	probeHeader    = "X-Probe"
	probeHeaderVal = "kubelet 100%" // a literal % survives Envoy's header formatting
)

// probesMesh is the app as Kubernetes declares it, read by pilot from a folder: a Service and
// its EndpointSlice on the pod's address, the injected Pod (appended by the test), and a
// namespace-wide STRICT PeerAuthentication.
var probesMesh = fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: app, namespace: default}
spec:
  clusterIP: %[1]s
  ports:
  - {name: http, port: %[2]d, targetPort: %[2]d}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-x1
  namespace: default
  labels: {kubernetes.io/service-name: app}
addressType: IPv4
endpoints:
- addresses: [%[3]s]
  conditions: {ready: true}
  targetRef: {kind: Pod, name: app-1, namespace: default}
ports:
- {name: http, port: %[2]d}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
`, appVIP, appPort, podAddr.Addr())

// probedAppPod is the app's Pod as its Deployment would create it, with a readiness probe on
// HTTP (named port, a header, a query), a liveness probe on TCP and a startup probe on gRPC.
func probedAppPod() *corev1.Pod {
	service := grpcService
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "app-1", Namespace: "default", Labels: map[string]string{"app": "app"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "app",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: appPort}, {Name: "grpc", ContainerPort: grpcPort}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/healthz?probe=ready", Port: intstr.FromString("http"),
					HTTPHeaders: []corev1.HTTPHeader{{Name: probeHeader, Value: probeHeaderVal}},
				}},
				TimeoutSeconds: 2,
			},
			LivenessProbe: &corev1.Probe{
				ProbeHandler:   corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(appPort)}},
				TimeoutSeconds: 1,
			},
			StartupProbe: &corev1.Probe{
				ProbeHandler:   corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: grpcPort, Service: &service}},
				TimeoutSeconds: 1,
			},
		}}},
	}
}

// TestCaptureAppProbes is the kubelet probing an injected pod under STRICT mTLS: the pod is
// the injector's output for probedAppPod, its capture the istio-init container's command line,
// its sidecar a real Envoy as uid 1337 fed by pilot, which reads the Pod from a folder. From
// the node, as the kubelet, the rewritten probes (GET POD_IP:15020/app-health/app/...) answer
// for the app: 200 while it is up and serving, non-200 when its HTTP check fails, its gRPC
// health says NOT_SERVING, or it is down. The app gets the readiness probe as the kubelet
// would have sent it, in plaintext, while a plaintext call of the node to the app's port is
// refused by the sidecar's STRICT chain.
func TestCaptureAppProbes(t *testing.T) {
	injected, err := inject.Config{}.Inject(probedAppPod(), "default")
	if err != nil {
		t.Fatal(err)
	}
	injected.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: podAddr.Addr().String()}
	if _, _, ok := appprobe.FromPod(injected); !ok {
		t.Fatalf("the injector wrote no %s", appprobe.EnvName)
	}
	podYAML, err := yaml.Marshal(injected)
	if err != nil {
		t.Fatal(err)
	}

	node := framework.NewNetNS(t, "skf-pnode")
	pod := framework.NewNetNS(t, "skf-ppod")
	framework.ConnectVeth(t, node, "veth-pod", nodeAddr, pod, "eth0", podAddr)
	pod.IP(t, "route", "add", "default", "via", nodeAddr.Addr().String())

	configDir := t.TempDir()
	framework.WriteFile(t, configDir, "mesh.yaml", probesMesh+"---\n"+string(podYAML))
	pilot := framework.StartPilot(t, framework.PilotOptions{ConfigDir: configDir})
	xdsOnNode := forwardFromNode(t, node, 15010, pilot.XDSAddress)
	app := startProbedApp(t, pod)

	// istio-init's command, exactly as injected: the status port among the excluded ones.
	initArgs := injected.Spec.InitContainers[len(injected.Spec.InitContainers)-1].Args
	if !strings.Contains(strings.Join(initArgs, " "), fmt.Sprint(appprobe.StatusPort)) {
		t.Fatalf("istio-init's arguments %q do not exempt the status port", initArgs)
	}
	mustExec(t, pod, framework.BuildBinary(t, "./cmd/skiff-capture"), initArgs...)

	envoy := framework.StartEnvoyInNetNS(t, pilot, pod, framework.NetNSEnvoyOptions{
		NodeID:       fmt.Sprintf("sidecar~%s~app-1.default~default.svc.cluster.local", podAddr.Addr()),
		XDSAddress:   xdsOnNode,
		Interception: "redirect",
		UID:          proxyID,
		GID:          proxyID,
	})
	framework.Eventually(t, func() error {
		if dump := string(envoy.ConfigDump(t)); !strings.Contains(dump, `"name": "app-health"`) {
			return fmt.Errorf("Envoy's config_dump has no app-health listener")
		}
		return nil
	})

	kubelet := &kubeletProber{client: node.HTTPClient(), pod: injected}
	kubelet.waitStatus(t, "readiness", http.StatusOK)
	kubelet.waitStatus(t, "liveness", http.StatusOK)
	kubelet.waitStatus(t, "startup", http.StatusOK)

	// The app saw the original readiness probe, as the kubelet would have sent it without
	// the mesh: its path, its header once, the Host of the pod's IP and port; in plaintext from
	// the sidecar's passthrough address.
	seen := app.last()
	wantHost := net.JoinHostPort(podAddr.Addr().String(), fmt.Sprint(appPort))
	if seen.path != "/healthz?probe=ready" || seen.host != wantHost || strings.Join(seen.probeHeader, ",") != probeHeaderVal || seen.from != "127.0.0.6" {
		t.Errorf("the app saw the readiness probe as %+v; want /healthz?probe=ready, Host %s, %s: %s once, from 127.0.0.6",
			seen, wantHost, probeHeader, probeHeaderVal)
	}

	// STRICT: the node's plaintext call to the app's port reaches the sidecar's inbound
	// listener and goes no further. The chain waits for a workload certificate first (pilot
	// grants none here: the pod reaches it through a forwarder, from another address), up to
	// Envoy's initial fetch timeout, so wait for virtualInbound to take connections.
	waitActive(t, envoy, inboundListener)
	inboundCx := "listener." + listenerStat(t, envoy, inboundListener, "0.0.0.0_15006") + ".downstream_cx_total"
	before, requests := envoy.Stat(t, inboundCx), app.requests.Load()
	direct := fmt.Sprintf("http://%s/healthz", wantHost)
	if resp, err := node.HTTPClient().Get(direct); err == nil {
		resp.Body.Close()
		t.Errorf("plaintext GET %s under STRICT answered %d, want the connection refused", direct, resp.StatusCode)
	}
	envoy.WaitStat(t, inboundCx, atLeast(before+1))
	if got := app.requests.Load(); got != requests {
		t.Errorf("the plaintext call reached the app (%d requests, had %d)", got, requests)
	}
	kubelet.waitStatus(t, "readiness", http.StatusOK) // the probe still passes

	// The app's own answer is the probe's: failing, then well again.
	app.status.Store(http.StatusServiceUnavailable)
	kubelet.waitStatus(t, "readiness", http.StatusServiceUnavailable)
	app.status.Store(http.StatusOK)
	kubelet.waitStatus(t, "readiness", http.StatusOK)

	// gRPC health: NOT_SERVING fails the startup probe, SERVING passes it again.
	app.grpcHealth.SetServingStatus(grpcService, healthpb.HealthCheckResponse_NOT_SERVING)
	kubelet.waitStatus(t, "startup", http.StatusServiceUnavailable)
	app.grpcHealth.SetServingStatus(grpcService, healthpb.HealthCheckResponse_SERVING)
	kubelet.waitStatus(t, "startup", http.StatusOK)

	// The app goes down: nothing listens on its ports any more, and every probe fails.
	app.stop()
	kubelet.waitStatus(t, "readiness", http.StatusServiceUnavailable)
	kubelet.waitStatus(t, "liveness", http.StatusServiceUnavailable)
	kubelet.waitStatus(t, "startup", http.StatusServiceUnavailable)
}

// kubeletProber sends a container's probes as the kubelet does: an HTTP GET built from the
// (rewritten) probe in the pod spec, to the pod's IP, with the probe's headers, following no
// redirect.
type kubeletProber struct {
	client *http.Client
	pod    *corev1.Pod
}

func (k *kubeletProber) probe(kind string) (int, error) {
	c := k.pod.Spec.Containers[0]
	p := map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe}[kind]
	if p == nil || p.HTTPGet == nil {
		return 0, fmt.Errorf("the %s probe is not an httpGet: %+v", kind, p)
	}
	url := fmt.Sprintf("http://%s%s", net.JoinHostPort(k.pod.Status.PodIP, p.HTTPGet.Port.String()), p.HTTPGet.Path)
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	for _, h := range p.HTTPGet.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// waitStatus waits until the probe of kind answers want.
func (k *kubeletProber) waitStatus(t *testing.T, kind string, want int) {
	t.Helper()
	framework.Eventually(t, func() error {
		got, err := k.probe(kind)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s probe answered %d, want %d", kind, got, want)
		}
		return nil
	})
}

// probedApp is the pod's application: HTTP on appPort answering /healthz with status, and the
// gRPC health service on grpcPort.
type probedApp struct {
	status     atomic.Int64
	requests   atomic.Int64
	grpcHealth *health.Server

	mu       sync.Mutex
	seen     seenRequest
	httpSrv  *http.Server
	grpcSrv  *grpc.Server
	stopOnce sync.Once
}

// seenRequest is what the app saw of the last request.
type seenRequest struct {
	path, host, from string
	probeHeader      []string
}

func startProbedApp(t *testing.T, pod *framework.NetNS) *probedApp {
	t.Helper()
	a := &probedApp{grpcHealth: health.NewServer()}
	a.status.Store(http.StatusOK)
	a.grpcHealth.SetServingStatus(grpcService, healthpb.HealthCheckResponse_SERVING)

	a.httpSrv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		from, _, _ := net.SplitHostPort(r.RemoteAddr)
		a.mu.Lock()
		a.seen = seenRequest{path: r.URL.RequestURI(), host: r.Host, from: from, probeHeader: r.Header.Values(probeHeader)}
		a.mu.Unlock()
		w.WriteHeader(int(a.status.Load()))
	})}
	httpL := pod.Listen(t, fmt.Sprintf("0.0.0.0:%d", appPort))
	go func() { _ = a.httpSrv.Serve(httpL) }()

	a.grpcSrv = grpc.NewServer()
	healthpb.RegisterHealthServer(a.grpcSrv, a.grpcHealth)
	grpcL := pod.Listen(t, fmt.Sprintf("0.0.0.0:%d", grpcPort))
	go func() { _ = a.grpcSrv.Serve(grpcL) }()
	t.Cleanup(a.stop)
	return a
}

func (a *probedApp) last() seenRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen
}

// stop closes both servers and their listeners: the app is down.
func (a *probedApp) stop() {
	a.stopOnce.Do(func() {
		_ = a.httpSrv.Close()
		a.grpcSrv.Stop()
	})
}

// waitActive waits until Envoy's dynamic listener name is active: warmed, taking connections.
func waitActive(t *testing.T, e *framework.Envoy, name string) {
	t.Helper()
	framework.Eventually(t, func() error {
		var dump struct {
			Configs []struct {
				DynamicListeners []struct {
					Name         string          `json:"name"`
					ActiveState  json.RawMessage `json:"active_state"`
					WarmingState json.RawMessage `json:"warming_state"`
				} `json:"dynamic_listeners"`
			} `json:"configs"`
		}
		if err := json.Unmarshal(e.ConfigDump(t), &dump); err != nil {
			return fmt.Errorf("reading config_dump: %w", err)
		}
		for _, c := range dump.Configs {
			for _, l := range c.DynamicListeners {
				if l.Name != name {
					continue
				}
				if l.ActiveState == nil || l.WarmingState != nil {
					return fmt.Errorf("listener %s is still warming", name)
				}
				return nil
			}
		}
		return fmt.Errorf("Envoy has no listener %s", name)
	})
}
