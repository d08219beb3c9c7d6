package inject

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiffmesh/skiff/pkg/appprobe"
)

// Application probes under mTLS, as Istio's injector rewrites them (pkg/kube/inject/
// app_probe.go): the kubelet's httpGet, tcpSocket and grpc probes of an application container
// become httpGet probes on the sidecar's status port, appprobe.StatusPort (15020), at
// /app-health/CONTAINER/readyz|livez|startupz, and the originals go into the istio-proxy
// container's ISTIO_KUBE_APP_PROBERS, from which pilot builds the Envoy listener that answers
// them (package translate, appprobe.go). exec probes need no network and stay as they are.
//
// Two departures from Istio, both because Skiff's istio-proxy is an ordinary container that
// starts after every init container and after the application's containers:
//
//   - Init containers keep their probes. Only native sidecars (restartPolicy: Always) can have
//     any, and they start, and are probed, before Envoy exists: a rewritten startup probe
//     would never pass and the pod would never start.
//   - Lifecycle hooks are not rewritten (Istio's /app-lifecycle/ paths): a postStart hook
//     runs before the next container, Envoy's, is even started.
//
// And one where Istio's behaviour only changes the error: a probe on a named port that its
// container does not declare stays as it is, so the kubelet reports the missing port (Istio
// rewrites it to a path its agent then cannot answer).

// shouldRewriteProbes is Istio's ShouldRewriteAppHTTPProbers with the default on: only an
// annotation that parses as false turns the rewrite off.
func shouldRewriteProbes(pod *corev1.Pod) bool {
	if v, ok := pod.Annotations[appprobe.RewriteAnnotation]; ok {
		if on, err := strconv.ParseBool(v); err == nil {
			return on
		}
	}
	return true
}

// rewriteAppProbes rewrites, in place, the probes of pod's application containers, and returns
// the originals by their new paths.
func rewriteAppProbes(pod *corev1.Pod) appprobe.Probers {
	if !shouldRewriteProbes(pod) {
		return nil
	}
	probers := appprobe.Probers{}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if c.Name == ProxyContainerName {
			continue
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			if p.Name != "" {
				ports[p.Name] = p.ContainerPort
			}
		}
		for kind, probe := range map[appprobe.Kind]*corev1.Probe{
			appprobe.Readiness: c.ReadinessProbe,
			appprobe.Liveness:  c.LivenessProbe,
			appprobe.Startup:   c.StartupProbe,
		} {
			original := originalProber(probe, ports)
			if original == nil {
				continue
			}
			path := appprobe.Path(c.Name, kind)
			probers[path] = original
			rewriteToStatusPort(probe, path)
		}
	}
	return probers
}

// originalProber is what the sidecar needs to run probe itself: its action, with a named port
// resolved from ports, and its timeout. It is nil for what is not rewritten: no probe, an exec
// probe, one already on the status port, one whose named port the container lacks.
func originalProber(probe *corev1.Probe, ports map[string]int32) *appprobe.Prober {
	if probe == nil {
		return nil
	}
	resolve := func(port intstr.IntOrString) (intstr.IntOrString, bool) {
		if port.Type == intstr.String {
			n, ok := ports[port.StrVal]
			return intstr.FromInt32(n), ok
		}
		return port, port.IntVal != appprobe.StatusPort
	}
	p := &appprobe.Prober{TimeoutSeconds: probe.TimeoutSeconds}
	var ok bool
	switch {
	case probe.HTTPGet != nil:
		p.HTTPGet = probe.HTTPGet.DeepCopy()
		p.HTTPGet.Port, ok = resolve(p.HTTPGet.Port)
	case probe.TCPSocket != nil:
		p.TCPSocket = probe.TCPSocket.DeepCopy()
		p.TCPSocket.Port, ok = resolve(p.TCPSocket.Port)
	case probe.GRPC != nil:
		p.GRPC = probe.GRPC.DeepCopy()
		ok = true // a gRPC probe's port is always a number
	}
	if !ok {
		return nil
	}
	return p
}

// rewriteToStatusPort makes probe an httpGet of path on the status port. An httpGet keeps its
// headers and host, and HTTPS becomes HTTP: the kubelet talks plain HTTP to the sidecar, which
// speaks the original scheme to the application.
func rewriteToStatusPort(probe *corev1.Probe, path string) {
	if probe.HTTPGet == nil {
		probe.HTTPGet = &corev1.HTTPGetAction{}
		probe.TCPSocket, probe.GRPC = nil, nil
	}
	probe.HTTPGet.Path = path
	probe.HTTPGet.Port = intstr.FromInt32(appprobe.StatusPort)
	if probe.HTTPGet.Scheme == corev1.URISchemeHTTPS {
		probe.HTTPGet.Scheme = corev1.URISchemeHTTP
	}
}
