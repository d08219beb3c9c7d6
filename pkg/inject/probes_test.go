package inject

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffmesh/skiff/pkg/appprobe"
)

// probedPod has every kind of probe: httpGet on a named port with headers, HTTPS, tcpSocket,
// grpc, exec, and a native sidecar init container with a probe of its own.
func probedPod() *corev1.Pod {
	service := "health"
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{
				Name: "logshipper", Image: "shipper", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways),
				StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(5140)}}},
			}},
			Containers: []corev1.Container{{
				Name: "web", Image: "web",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "admin", ContainerPort: 8443}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: "/ready", Port: intstr.FromString("http"),
						HTTPHeaders: []corev1.HTTPHeader{{Name: "X-Probe", Value: "kubelet"}},
					}},
					TimeoutSeconds: 3, PeriodSeconds: 5, FailureThreshold: 2,
				},
				LivenessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: "/live", Port: intstr.FromString("admin"), Scheme: corev1.URISchemeHTTPS,
					}},
					TimeoutSeconds: 1,
				},
				StartupProbe: &corev1.Probe{
					ProbeHandler:   corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
					TimeoutSeconds: 2,
				},
			}, {
				Name: "grpc", Image: "grpc",
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:   corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090, Service: &service}},
					TimeoutSeconds: 1,
				},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
			}},
		},
	}
}

func TestInjectRewritesProbes(t *testing.T) {
	orig := probedPod()
	got, err := Config{}.Inject(orig, "default")
	if err != nil {
		t.Fatal(err)
	}
	statusPort := intstr.FromInt32(appprobe.StatusPort)
	web, grpc := got.Spec.Containers[0], got.Spec.Containers[1]

	// httpGet: path and port replaced, headers, timeout and thresholds kept.
	wantReady := orig.Spec.Containers[0].ReadinessProbe.DeepCopy()
	wantReady.HTTPGet.Path, wantReady.HTTPGet.Port = "/app-health/web/readyz", statusPort
	if !reflect.DeepEqual(web.ReadinessProbe, wantReady) {
		t.Errorf("web readiness probe %+v, want %+v", web.ReadinessProbe, wantReady)
	}
	// HTTPS: the kubelet speaks HTTP to the sidecar.
	if p := web.LivenessProbe.HTTPGet; p.Path != "/app-health/web/livez" || p.Port != statusPort || p.Scheme != corev1.URISchemeHTTP {
		t.Errorf("web liveness probe %+v: want HTTP GET /app-health/web/livez on 15020", p)
	}
	// tcpSocket and grpc become httpGet, with nothing else of theirs left.
	for name, probe := range map[string]*corev1.Probe{"/app-health/web/startupz": web.StartupProbe, "/app-health/grpc/readyz": grpc.ReadinessProbe} {
		want := corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: name, Port: statusPort}}
		if !reflect.DeepEqual(probe.ProbeHandler, want) {
			t.Errorf("%s: probe handler %+v, want %+v", name, probe.ProbeHandler, want)
		}
	}
	if web.StartupProbe.TimeoutSeconds != 2 {
		t.Errorf("the tcpSocket probe lost its timeout: %+v", web.StartupProbe)
	}
	// exec, the native sidecar's probe and the proxy's own readiness stay.
	if !reflect.DeepEqual(grpc.LivenessProbe, orig.Spec.Containers[1].LivenessProbe) {
		t.Errorf("exec probe changed: %+v", grpc.LivenessProbe)
	}
	if !reflect.DeepEqual(got.Spec.InitContainers[0].StartupProbe, orig.Spec.InitContainers[0].StartupProbe) {
		t.Errorf("native sidecar's probe changed: %+v", got.Spec.InitContainers[0].StartupProbe)
	}
	proxy := got.Spec.Containers[2]
	if proxy.ReadinessProbe.HTTPGet.Port.IntValue() != ReadinessPort {
		t.Errorf("istio-proxy's own probe changed: %+v", proxy.ReadinessProbe)
	}

	// The originals, in Istio's JSON, named ports resolved, in the proxy's environment.
	const wantEnv = `{"/app-health/grpc/readyz":{"grpc":{"port":9090,"service":"health"},"timeoutSeconds":1},` +
		`"/app-health/web/livez":{"httpGet":{"path":"/live","port":8443,"scheme":"HTTPS"},"timeoutSeconds":1},` +
		`"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":8080,"httpHeaders":[{"name":"X-Probe","value":"kubelet"}]},"timeoutSeconds":3},` +
		`"/app-health/web/startupz":{"tcpSocket":{"port":8080},"timeoutSeconds":2}}`
	value, field, ok := appprobe.FromPod(got)
	if !ok || value != wantEnv {
		t.Errorf("%s = %s, want\n%s", appprobe.EnvName, value, wantEnv)
	}
	if field != "spec.containers[2].env[4] (ISTIO_KUBE_APP_PROBERS)" {
		t.Errorf("field %q", field)
	}
	// What pilot reads back is what was there before the rewrite.
	probers, err := appprobe.Parse(value)
	if err != nil || len(probers) != 4 {
		t.Fatalf("pilot's reading of %s: %v, %v", appprobe.EnvName, probers, err)
	}
	if p := probers["/app-health/web/readyz"]; p.Port() != 8080 || p.HTTPGet.Path != "/ready" || p.Timeout() != 3 {
		t.Errorf("readyz prober %+v", p)
	}
}

// The rewritten probes are exactly what Istio's injector writes for its own test pod
// (pkg/kube/inject/testdata/inject/hello-probes.yaml.injected), lifecycle hooks aside.
func TestProbesAsIstio(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "hello", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}},
		LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("http")}}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(3333)}}},
	}, {
		Name: "world", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 90}},
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("http")}}},
	}}}}
	got, err := rewriteAppProbes(pod).Encode()
	if err != nil {
		t.Fatal(err)
	}
	// Istio's, without its /app-lifecycle/ entries.
	want := `{"/app-health/hello/livez":{"httpGet":{"port":80}},"/app-health/hello/readyz":{"httpGet":{"port":3333}},"/app-health/world/livez":{"httpGet":{"port":90}}}`
	if got != want {
		t.Errorf("ISTIO_KUBE_APP_PROBERS\n%s\nwant Istio's\n%s", got, want)
	}
	if p := pod.Spec.Containers[1].LivenessProbe.HTTPGet; p.Path != "/app-health/world/livez" || p.Port.IntValue() != 15020 {
		t.Errorf("world's liveness probe %+v", p)
	}
}

func TestProbesLeftAlone(t *testing.T) {
	t.Run("opt-out annotation", func(t *testing.T) {
		pod := probedPod()
		pod.Annotations = map[string]string{appprobe.RewriteAnnotation: "false"}
		got, err := Config{}.Inject(pod, "default")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Spec.Containers[:2], pod.Spec.Containers) {
			t.Errorf("probes rewritten despite %s=false", appprobe.RewriteAnnotation)
		}
		if v, _, ok := appprobe.FromPod(got); ok {
			t.Errorf("%s set despite the opt-out: %s", appprobe.EnvName, v)
		}
	})
	t.Run("annotation that is not a boolean", func(t *testing.T) {
		pod := probedPod()
		pod.Annotations = map[string]string{appprobe.RewriteAnnotation: "maybe"}
		if len(rewriteAppProbes(pod)) != 4 {
			t.Error("an unparsable annotation turned the rewrite off; Istio then keeps its default, on")
		}
	})
	t.Run("no probes", func(t *testing.T) {
		pod := deploymentPod()
		got, err := Config{}.Inject(pod, "default")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Spec.Containers[0], pod.Spec.Containers[0]) {
			t.Errorf("a container without probes changed: %+v", got.Spec.Containers[0])
		}
		if v, _, ok := appprobe.FromPod(got); ok {
			t.Errorf("%s set for a pod without probes: %q", appprobe.EnvName, v)
		}
	})
	t.Run("unknown named port", func(t *testing.T) {
		pod := probedPod()
		pod.Spec.Containers[0].Ports = nil
		probers := rewriteAppProbes(pod)
		if _, ok := probers["/app-health/web/readyz"]; ok || pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Port.StrVal != "http" {
			t.Errorf("a probe on a port the container does not name was rewritten: %+v", pod.Spec.Containers[0].ReadinessProbe)
		}
	})
}

// Rewriting rewritten probes changes nothing and records nothing: a pod spec copied from an
// injected pod (its sidecar and status annotation removed) is injected again as it was.
func TestProbeRewriteIdempotent(t *testing.T) {
	once, err := Config{}.Inject(probedPod(), "default")
	if err != nil {
		t.Fatal(err)
	}
	copied := once.DeepCopy()
	copied.Spec.Containers = copied.Spec.Containers[:2]
	before := copied.DeepCopy()
	if probers := rewriteAppProbes(copied); len(probers) != 0 {
		t.Errorf("rewritten probes recorded again as originals: %v", probers)
	}
	if !reflect.DeepEqual(copied, before) {
		t.Errorf("rewriting rewritten probes changed them:\n%+v\nwant\n%+v", copied.Spec.Containers, before.Spec.Containers)
	}
}
